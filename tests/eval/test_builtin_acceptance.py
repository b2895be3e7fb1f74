"""Acceptance on the built-in model (skipped until it is installed; slow): passkey at its own window
and at 8x without scaling, and `compare` across 256..2048 with the five baseline methods."""
from __future__ import annotations

import json

import pytest

from longrope.models import BUILTIN_DIR

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (BUILTIN_DIR / "config.json").is_file(), reason="built-in model not installed")]


@pytest.fixture(scope="module")
def builtin():
    from longrope.models import load_model, load_tokenizer

    return load_model("builtin"), load_tokenizer("builtin")


def test_passkey_at_window_and_failure_at_8x(builtin):
    from longrope.eval.compare import original_window
    from longrope.eval.passkey import passkey_eval

    model, tok = builtin
    w = original_window(model)
    at_window = passkey_eval(model, tok, [w], trials=4, seed=0)
    assert at_window.accuracy >= 0.95, at_window.by_depth
    at_8x = passkey_eval(model, tok, [8 * w], trials=2, seed=0)
    assert at_8x.accuracy <= 0.5, at_8x.by_depth


def test_compare_builtin_writes_everything(tmp_path, capsys):
    from longrope.cli import main

    out = tmp_path / "cmp"
    assert main(["compare", "--methods", "none,pi,ntk,dynamic,yarn", "--lengths", "256,512,1024,2048",
                 "--docs", "2", "--passkey-trials", "1", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["ppl"]) == {"none", "pi", "ntk", "dynamic", "yarn"}
    assert all(set(v) == {"256", "512", "1024", "2048"} for v in res["ppl"].values())
    for f in ["report.md", "ppl.png"] + [f"passkey_{m}.png" for m in res["ppl"]]:
        assert (out / f).stat().st_size > 0
    # the unscaled model degrades beyond its window (same documents at every length); the best
    # scaled method does better at 8x (PI does not on this small model: 48.8 vs 34.0 on 4 docs)
    assert res["ppl"]["none"]["2048"] > res["ppl"]["none"]["256"]
    assert min(res["ppl"][m]["2048"] for m in ("ntk", "dynamic", "yarn")) < res["ppl"]["none"]["2048"]
