"""check-runtime: the metrics on known arrays, skipped runtimes, and (slow) llama.cpp for real."""
import json
import math

import numpy as np
import pytest

from longrope.cli import main
from longrope.runtimes import parity

from tests import runtime_helpers


def test_metrics_on_known_logits():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(6, 10)).astype(np.float32)
    ids = [1, 2, 3, 4, 5, 6]
    same = runtime_helpers.compare_logits("x", ref.copy(), ref, ids, 6)
    assert same.max_abs_delta == 0 and same.top1_agreement == 1 and same.ppl_runtime == same.ppl_transformers
    lp = runtime_helpers.log_softmax(ref[:-1])
    assert same.ppl_transformers == pytest.approx(math.exp(-np.mean([lp[i, ids[i + 1]] for i in range(5)])))
    off = ref.copy()
    off[2, 7] += 0.5
    row = runtime_helpers.compare_logits("x", off, ref, ids, 6)
    assert row.max_abs_delta == pytest.approx(0.5) and row.rel_error == pytest.approx(0.5 / np.abs(ref).max())
    assert not row.passes(1e-4, 3) and same.passes(1e-4, 3)


def test_perplexity_agreement_is_a_distance_not_a_rounding():
    row = parity.Row("x", 10, 10, 0.0, 0.0, 1.0, 7.111471770894887, 7.11152588688548)  # measured, 5e-5 apart
    assert row.passes(1e-4, 3)  # round() would give 7.111 vs 7.112
    row.ppl_runtime = row.ppl_transformers + 0.0006
    assert not row.passes(1e-4, 3) and row.passes(1e-4, 2)


def test_logprob_rows_compare_actual_and_top_tokens():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(4, 8))
    ids = [0, 3, 5, 1]
    lp = runtime_helpers.log_softmax(ref[:-1])
    theirs = [{ids[i + 1]: lp[i, ids[i + 1]], int(lp[i].argmax()): lp[i].max()} for i in range(3)]
    row = runtime_helpers.compare_logprobs("vllm", theirs, ref, ids, 4)
    assert row.max_abs_delta < 1e-12 and row.top1_agreement == 1 and row.ppl_runtime == pytest.approx(row.ppl_transformers)
    theirs[1][ids[2]] += 0.01
    assert runtime_helpers.compare_logprobs("vllm", theirs, ref, ids, 4).max_abs_delta == pytest.approx(0.01)


def _unchunked(ours, ref, ids):
    """The figures computed on whole arrays, independently of parity.Tally."""
    lo, lr = runtime_helpers.log_softmax(ours[:-1]), runtime_helpers.log_softmax(ref[:-1])
    nxt, rows = np.array(ids[1:]), np.arange(len(ids) - 1)
    delta = np.abs(ours.astype(np.float64) - ref)
    return (delta.max(), delta.max() / np.abs(ref).max(), (ours.argmax(-1) == ref.argmax(-1)).mean(),
            math.exp(-lo[rows, nxt].mean()), math.exp(-lr[rows, nxt].mean()))


def test_chunked_figures_equal_the_unchunked_ones_on_a_tiny_model(tmp_path, monkeypatch):
    """transformers' logits come from the hidden states chunk by chunk (`Reference`) and the figures
    from running sums (`Tally`) over uneven chunks: they equal the whole-array computation."""
    from tests.helpers import save_tiny
    folder = save_tiny(tmp_path / "m", window=64)
    ids = np.random.default_rng(0).integers(4, 104, size=50).tolist()
    model = parity.load_transformers(folder)
    whole = runtime_helpers.transformers_logits(folder, ids)
    reference = parity.Reference(model, ids)
    chunks = [(0, 7), (7, 23), (23, 24), (24, 50)]
    ref = np.concatenate([reference.logits(a, b) for a, b in chunks])
    np.testing.assert_allclose(ref, whole, atol=1e-5, rtol=0)
    ours = ref + np.random.default_rng(1).normal(scale=0.3, size=ref.shape).astype(np.float32)
    monkeypatch.setattr(parity, "STEP", 5)  # sub-chunks inside each chunk too
    tally = parity.Tally(ids)
    for a, b in reversed(chunks):  # any order
        tally.add_logits(a, ours[a:b], reference.logits(a, b))
    row = tally.row("x", 64)
    expected = _unchunked(ours, ref.astype(np.float64), ids)
    assert row.top1_agreement < 1 and row.ppl_runtime != pytest.approx(row.ppl_transformers, rel=1e-3)
    got = (row.max_abs_delta, row.rel_error, row.top1_agreement, row.ppl_runtime, row.ppl_transformers)
    assert got == pytest.approx(expected, rel=1e-12)
    # log-prob rows (vLLM): chunked equals one chunk
    lp = runtime_helpers.log_softmax(ours[:-1])
    theirs = [{ids[i + 1]: lp[i, ids[i + 1]], int(lp[i].argmax()): lp[i].max()} for i in range(len(ids) - 1)]
    one = runtime_helpers.compare_logprobs("vllm", theirs, ref, ids, 64)
    split = parity.Tally(ids)
    for a, b in chunks:
        split.add_logprobs(a, theirs[a:b], reference.logits(a, min(b, len(theirs))))
    fields = ("max_abs_delta", "rel_error", "top1_agreement", "ppl_runtime", "ppl_transformers")
    assert [getattr(split.row("vllm", 64), f) for f in fields] == pytest.approx([getattr(one, f) for f in fields], rel=1e-12)
    assert one.ppl_runtime == pytest.approx(expected[3], rel=1e-9) and one.top1_agreement < 1


def test_not_installed_runtimes_are_skipped_with_the_hint(tmp_path, capsys, monkeypatch):
    from longrope import export
    monkeypatch.setattr(parity, "installed", lambda rt: False)
    monkeypatch.delenv("LONGROPE_VLLM_PYTHON", raising=False)
    out = export("builtin", "pi:2", tmp_path / "e")
    rc = main(["check-runtime", str(out), "--out", str(tmp_path / "r.json")])
    text = capsys.readouterr().out
    assert rc == 0 and "llama.cpp | skipped: not installed" in text and "vllm | skipped" in text
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["rows"] == [] and result["original"] == 256 and result["target"] == 512


def test_check_runtime_refuses_a_folder_that_is_not_an_export(tmp_path, capsys):
    assert main(["check-runtime", str(tmp_path)]) == 2
    assert "not a longrope export" in capsys.readouterr().err


@pytest.mark.slow
def test_llama_cpp_matches_transformers_on_the_builtin_8x_export(tmp_path):
    pytest.importorskip("llama_cpp")
    from longrope.errors import LongRopeError
    from longrope.runtimes.converter import find_converter
    try:
        find_converter()
    except LongRopeError as e:
        pytest.skip(str(e))
    from longrope import export
    out = export("builtin", "longrope:docs/results/builtin-8x-before-filter/factors-short-long.json", tmp_path / "e",
                 drop_n_hat=True, drop_short_attention=True)
    assert main(["check-runtime", str(out), "--runtime", "llama.cpp"]) == 0


def test_a_vllm_run_over_its_time_is_ended_with_its_children(tmp_path, monkeypatch):
    import time
    from pathlib import Path

    from longrope.errors import LongRopeError
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {tmp_path / 'child'}\nsleep 60\n")
    fake.chmod(0o755)
    monkeypatch.setenv("LONGROPE_VLLM_PYTHON", str(fake))
    with pytest.raises(LongRopeError, match="vLLM ran over 1 s"):
        parity.vllm_logprobs(tmp_path, [[1, 2, 3]], 8, timeout=1)
    child = int((tmp_path / "child").read_text())
    time.sleep(0.2)
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().split(")")[-1].split()[0] == "Z"  # gone, or dead awaiting reaping
