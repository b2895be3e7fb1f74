"""A tiny random Phi-3 through `longrope export --format gguf` with llama.cpp's REAL converter (from
the llama-cpp-python sdist) and loaded by llama-cpp-python: its logits match stock transformers
inside (short factors) and beyond (long factors) the window. llama.cpp's Phi-3 converter reads a
sentencepiece `tokenizer.model`, so the test trains a tiny one (the `sentencepiece` package, which
the converter imports anyway). Skipped with the reason when llama-cpp-python, sentencepiece or the
converter is absent."""
from __future__ import annotations

import io

import numpy as np
import pytest

from longrope.cli import main

from tests import gguf_helpers, runtime_helpers

pytestmark = pytest.mark.slow
LONG = [1.0 + 0.5 * i for i in range(8)]
SHORT = [1.0 + 0.02 * i for i in range(8)]


def _requirements() -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("sentencepiece")
    from longrope.errors import LongRopeError
    from longrope.runtimes.converter import find_converter
    try:
        find_converter()
    except LongRopeError as e:
        pytest.skip(str(e))


def _tiny_phi3(folder, vocab: int = 4160):
    """A tiny random Phi-3 (window 256: llama.cpp rounds contexts to multiples of 256) with a
    sentencepiece tokenizer.model trained here on a few fixed sentences."""
    import sentencepiece as spm

    from tests.helpers import make_tiny
    make_tiny("phi3", seed=4, vocab=vocab, initializer_range=0.2, window=256).save_pretrained(folder)
    words = [f"w{i} x{i % 7} y{i % 13}" for i in range(400)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(words), model_writer=buf, vocab_size=120,
                                   model_type="bpe", num_threads=1, minloglevel=2)  # BPE: deterministic
    (folder / "tokenizer.model").write_bytes(buf.getvalue())
    return folder


def test_real_converter_and_llama_cpp_run_a_phi3_longrope_export_like_transformers(tmp_path):
    _requirements()
    from longrope import export
    from longrope.rope.scaling import Scaling

    src = _tiny_phi3(tmp_path / "src")
    factors = tmp_path / "factors.json"
    Scaling("longrope", long_factor=LONG, short_factor=SHORT, factor=4.0).save(factors)
    spec = f"longrope:{factors}"
    hf = export(src, spec, tmp_path / "hf")
    assert (hf / "tokenizer.model").is_file()  # kept for the converter
    assert main(["export", "--model", str(src), "--format", "gguf", "--scaling", spec, "--outtype", "f32",
                 "--out", str(tmp_path / "m.gguf")]) == 0
    keys, tensors = gguf_helpers.read_back(tmp_path / "m.gguf")
    assert keys["general.architecture"] == "phi3" and keys["phi3.rope.scaling.original_context_length"] == 256
    np.testing.assert_allclose(tensors["rope_factors_long.weight"], LONG, rtol=1e-6)
    np.testing.assert_allclose(tensors["rope_factors_short.weight"], SHORT, rtol=1e-6)
    ids = np.random.default_rng(0).integers(3, 4096, 512).tolist()
    for n in (200, 512):  # short factors inside the window of 256, long beyond it
        ref = runtime_helpers.transformers_logits(hf, ids[:n])
        logits, used = runtime_helpers.llama_cpp_logits(tmp_path / "m.gguf", ids[:n], n, threads=1)
        row = runtime_helpers.compare_logits("llama.cpp", logits, ref, ids[:n], used)
        assert used == (256 if n == 200 else 512)
        assert row.rel_error < 1e-4 and row.top1_agreement == 1, (n, row)
        # a random model's perplexity is ~1e4, so "3 decimals" would mean 1e-7 relative: compare relatively
        assert row.ppl_runtime == pytest.approx(row.ppl_transformers, rel=1e-5)
