"""GGUF export without a llama.cpp build: a stand-in converter writes the GGUF the real one would
(with the `gguf` package), then we check what longrope adds, reading the file back with GGUFReader."""
import json
import math
import textwrap

import numpy as np
import pytest

from longrope.cli import main
from longrope.rope.scaling import Scaling
from longrope.runtimes import converter, gguf_export

from tests import gguf_helpers, runtime_helpers
from tests.helpers import make_tiny

gguf = pytest.importorskip("gguf")

LONG = [1.0 + 0.5 * i for i in range(8)]
SHORT = [1.0 + 0.02 * i for i in range(8)]

# Writes what llama.cpp's converter writes for a Llama-architecture longrope config: the type, a
# stale factor key (to check it is removed), a token list and the embedding tensor; asks the
# `conversion` package for the pre-tokenizer as the real converter does.
FAKE_CONVERTER = '''
import json, sys
from pathlib import Path
import numpy as np, gguf
from safetensors.numpy import load_file
from conversion.base import TextModel
hf, out = Path(sys.argv[1]), Path(sys.argv[sys.argv.index("--outfile") + 1])
cfg = json.loads((hf / "config.json").read_text())
w = gguf.GGUFWriter(out, "llama")
w.add_context_length(cfg["max_position_embeddings"])
w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
rope = cfg["rope_parameters"]
if rope["rope_type"] == "longrope":
    w.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
    w.add_rope_scaling_factor(99.0)
w.add_token_list(["<pad>", "a", "b"])
w.add_tokenizer_pre(TextModel().get_vocab_base_pre(None))
emb = load_file(hf / "model.safetensors")["model.embed_tokens.weight"].astype(np.float32)
w.add_tensor("token_embd.weight", emb)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
'''
FAKE_BASE = '''
class TextModel:
    def get_vocab_base_pre(self, tokenizer):
        raise NotImplementedError("BPE pre-tokenizer was not recognized")
'''


@pytest.fixture
def fake_converter(tmp_path, monkeypatch):
    root = tmp_path / "llama.cpp"
    (root / "conversion").mkdir(parents=True)
    (root / "conversion" / "__init__.py").write_text("")
    (root / "conversion" / "base.py").write_text(textwrap.dedent(FAKE_BASE))
    (root / "convert_hf_to_gguf.py").write_text(textwrap.dedent(FAKE_CONVERTER))
    monkeypatch.setenv("LLAMA_CPP_CONVERTER", str(root))
    monkeypatch.setenv("LONGROPE_CACHE", str(tmp_path / "cache"))
    return root / "convert_hf_to_gguf.py"


def tiny_folder(tmp_path, family="llama"):
    src = tmp_path / f"src-{family}"
    make_tiny(family, seed=3).save_pretrained(src)
    return src


def test_longrope_gguf_holds_factors_attention_and_window(tmp_path, fake_converter):
    src = tiny_folder(tmp_path)
    scaling = Scaling("longrope", long_factor=LONG, short_factor=SHORT, factor=4.0, attention=1.25)
    out = gguf_export.export_gguf(src, scaling, tmp_path / "m.gguf", pre_tokenizer="starcoder")
    keys, tensors = gguf_helpers.read_back(out)
    assert keys["general.architecture"] == "llama"
    assert keys["llama.rope.scaling.attn_factor"] == pytest.approx(1.25)
    assert keys["llama.rope.scaling.original_context_length"] == 32
    assert "llama.rope.scaling.factor" not in keys  # it would add linear scaling on top
    assert keys["llama.rope.scaling.type"] == "longrope" and keys["tokenizer.ggml.pre"] == "starcoder"
    assert keys["tokenizer.ggml.tokens"] == ["<pad>", "a", "b"]  # arrays survive the copy
    assert tensors["rope_factors_long.weight"].dtype == np.float32
    np.testing.assert_allclose(tensors["rope_factors_long.weight"], LONG)
    np.testing.assert_allclose(tensors["rope_factors_short.weight"], SHORT, rtol=1e-7)
    assert tensors["rope_factors_short.weight"].shape == (8,)  # head_dim 16 -> 8 pairs
    emb = make_tiny("llama", seed=3).model.embed_tokens.weight.detach().numpy()
    np.testing.assert_array_equal(tensors["token_embd.weight"], emb)


def test_default_attention_is_the_su_scale_and_portable_repeats_long(tmp_path, fake_converter):
    src = tiny_folder(tmp_path)
    scaling = Scaling("longrope", long_factor=LONG, short_factor=SHORT, factor=4.0)
    with pytest.raises(Exception, match="pass --pre-tokenizer NAME"):
        gguf_export.export_gguf(src, scaling, tmp_path / "p.gguf")
    assert not (tmp_path / "p.gguf").exists()
    out = gguf_export.export_gguf(src, scaling, tmp_path / "p.gguf", portable=True, pre_tokenizer="gpt2")
    keys, tensors = gguf_helpers.read_back(out)
    assert keys["llama.rope.scaling.attn_factor"] == pytest.approx(math.sqrt(1 + math.log(4) / math.log(32)))
    np.testing.assert_allclose(tensors["rope_factors_short.weight"], LONG)


def test_baselines_use_llama_cpp_own_spelling(tmp_path, fake_converter):
    src = tiny_folder(tmp_path)

    def export(spec, name):
        return gguf_helpers.read_back(gguf_export.export_gguf(src, spec, tmp_path / name, pre_tokenizer="gpt2"))
    keys, _ = export("pi:4", "pi.gguf")
    assert keys["llama.rope.scaling.type"] == "linear" and keys["llama.rope.scaling.factor"] == 4.0
    keys, _ = export("yarn:4", "y.gguf")
    assert keys["llama.rope.scaling.type"] == "yarn" and keys["llama.rope.scaling.original_context_length"] == 32
    keys, tensors = export("llama3:4", "l3.gguf")
    assert tensors["rope_freqs.weight"].shape == (8,) and tensors["rope_freqs.weight"].max() == pytest.approx(4)


@pytest.mark.parametrize("spec,family,msg", [
    ("n_hat", "llama", "n_hat=4"),
    ("dynamic:4", "llama", "--drop-dynamic"),
    ("short_attention", "llama", "short_attention=1.0"),
    ("long", "qwen2", "reads no per-pair rope factors"),
    ("pi:4", "gemma", "does not support GemmaForCausalLM"),
    ("pi:4", "gpt2", "no rotary position embeddings"),
])
def test_gguf_refusals_are_one_line_and_write_nothing(tmp_path, capsys, fake_converter, spec, family, msg):
    src = tmp_path / "src"
    if family == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel
        GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64)).save_pretrained(src)
    else:
        make_tiny(family).save_pretrained(src)
    factors = tmp_path / "f.json"
    kw = {"n_hat": dict(n_hat=4), "short_attention": dict(short_factor=SHORT, short_attention=1.0)}.get(spec, {})
    Scaling("longrope", long_factor=LONG, factor=4.0, **kw).save(factors)
    spec_arg = f"longrope:{factors}" if spec in ("n_hat", "short_attention", "long") else spec
    out = tmp_path / "o.gguf"
    capsys.readouterr()
    rc = main(["export", "--format", "gguf", "--model", str(src), "--scaling", spec_arg, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and msg in err and len(err.splitlines()) == 1, err
    assert not out.exists() and not list(tmp_path.glob("o.gguf*"))


def test_dropping_dynamic_exports_plain_rope(tmp_path, fake_converter):
    src = tiny_folder(tmp_path)
    rc = main(["export", "--format", "gguf", "--model", str(src), "--scaling", "dynamic:4", "--drop-dynamic",
               "--pre-tokenizer", "gpt2", "--out", str(tmp_path / "d.gguf")])
    keys, _ = gguf_helpers.read_back(tmp_path / "d.gguf")
    assert rc == 0 and "llama.rope.scaling.type" not in keys and keys["llama.rope.freq_base"] == 10000.0


def test_gguf_out_never_replaces_a_file_unless_told_nor_a_folder(tmp_path, capsys, fake_converter):
    src = tiny_folder(tmp_path)
    out = tmp_path / "mine.gguf"
    out.write_bytes(b"user data")
    (tmp_path / "folder").mkdir()
    argv = ["export", "--format", "gguf", "--model", str(src), "--scaling", "pi:4", "--pre-tokenizer", "gpt2"]
    for target, extra, msg in ((out, [], "--overwrite"), (tmp_path / "folder", ["--overwrite"], "a folder")):
        capsys.readouterr()
        rc = main([*argv, "--out", str(target), *extra])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and msg in err and len(err.splitlines()) == 1, err
    assert out.read_bytes() == b"user data" and not any((tmp_path / "folder").iterdir())
    assert main([*argv, "--out", str(out), "--overwrite"]) == 0
    keys, _ = gguf_helpers.read_back(out)
    assert keys["llama.rope.scaling.type"] == "linear"


def test_converter_is_found_in_an_sdist_and_cached(tmp_path, monkeypatch):
    import tarfile
    monkeypatch.delenv("LLAMA_CPP_CONVERTER", raising=False)
    monkeypatch.setenv("LONGROPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception, match="pip download --no-deps --no-binary :all: llama-cpp-python"):
        converter.find_converter()
    tree = tmp_path / "llama_cpp_python-9.9" / "vendor" / "llama.cpp"
    (tree / "gguf-py").mkdir(parents=True)
    (tree / "convert_hf_to_gguf.py").write_text("print('hi')\n")
    (tree / "ggml.c").write_text("/* not needed */\n")
    with tarfile.open(tmp_path / "llama_cpp_python-9.9.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "llama_cpp_python-9.9", arcname="llama_cpp_python-9.9")
    found = converter.find_converter()
    assert found == tmp_path / "cache" / "llama_cpp_python-9.9" / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"
    assert found.read_text() == "print('hi')\n" and not (found.parent / "ggml.c").exists()
    (tmp_path / "llama_cpp_python-9.9.tar.gz").unlink()
    assert converter.find_converter() == found  # from the cache from now on


@pytest.mark.slow
def test_real_converter_on_the_builtin_model(tmp_path):
    """With llama.cpp's own converter (found via LLAMA_CPP_CONVERTER, an sdist or the cache)."""
    from longrope.errors import LongRopeError
    try:
        converter.find_converter()
    except LongRopeError as e:
        pytest.skip(str(e))
    factors = "docs/results/builtin-8x-before-filter/factors-short-long.json"
    rc = main(["export", "--format", "gguf", "--scaling", f"longrope:{factors}", "--drop-n-hat",
               "--drop-short-attention", "--out", str(tmp_path / "b.gguf")])
    keys, tensors = gguf_helpers.read_back(tmp_path / "b.gguf")
    record = json.load(open(factors))
    assert rc == 0 and keys["tokenizer.ggml.pre"] == "starcoder"
    np.testing.assert_allclose(tensors["rope_factors_long.weight"], record["long_factor"], rtol=1e-6)
    assert keys["llama.rope.scaling.original_context_length"] == 256 and "llama.rope.scaling.factor" not in keys


@pytest.mark.slow
@pytest.mark.parametrize("family,spec", [("llama", "longrope"), ("mistral", "longrope"), ("phi3", "longrope"),
                                         ("qwen2", "yarn:4"), ("qwen3", "yarn:4"), ("llama", "pi:4")])
def test_real_llama_cpp_runs_each_family_like_transformers(tmp_path, family, spec):
    """Real converter + llama.cpp on a tiny random model of each family (built-in tokenizer)."""
    pytest.importorskip("llama_cpp")
    from transformers import AutoTokenizer
    from longrope import export
    from longrope.errors import LongRopeError
    from longrope.models import BUILTIN_DIR
    try:
        converter.find_converter()
    except LongRopeError as e:
        pytest.skip(str(e))
    if family == "phi3":
        pytest.skip("llama.cpp's Phi-3 converter reads a sentencepiece tokenizer.model only: tests/test_gguf_phi3.py")
    # window 256: llama.cpp rounds its context up to a multiple of 256; vocab above the tokenizer's
    # (the Qwen converter asserts it), as released checkpoints pad it
    src = tmp_path / "src"
    make_tiny(family, seed=4, vocab=4160, initializer_range=0.2, window=256).save_pretrained(src)
    AutoTokenizer.from_pretrained(BUILTIN_DIR).save_pretrained(src)
    scaling = Scaling("longrope", long_factor=LONG, short_factor=SHORT, factor=4.0) if spec == "longrope" else spec
    hf = export(src, scaling, tmp_path / "hf")
    gg = gguf_export.export_gguf(src, scaling, tmp_path / "m.gguf", pre_tokenizer="starcoder", outtype="f32")
    ids = np.random.default_rng(0).integers(3, 4096, 400).tolist()
    for n in (200, 400):  # inside (short factors) and beyond (long) the window of 256
        ref = runtime_helpers.transformers_logits(hf, ids[:n])
        logits, used = runtime_helpers.llama_cpp_logits(gg, ids[:n], n)
        row = runtime_helpers.compare_logits("llama.cpp", logits, ref, ids[:n], used)
        assert row.rel_error < 1e-4, (family, spec, n, row)
