"""`eval` and `compare` measure a model as it is: a config that carries a RoPE scaling (our own
export, Llama 3.1 llama3, Qwen yarn, ...) is used as is by default; `none` is the unscaled rotation."""
from __future__ import annotations

import json
import math

import pytest
import torch

from longrope.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def yarn_model(tmp_path):
    """A tiny Llama with large weights (sharp, position-sensitive attention), exported with yarn:4."""
    import longrope
    from tests.helpers import char_tokenizer, make_tiny
    path = tmp_path / "sharp"
    make_tiny("llama", initializer_range=0.5).save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return longrope.export(str(path), "yarn:4", tmp_path / "yarn-model")


def stock_ppl(model_dir, text_dir, length: int, docs: int) -> float:
    """Perplexity from stock transformers' logits (no longrope patch), on eval ppl's samples."""
    from transformers import AutoModelForCausalLM

    from longrope.data import load_tokenized
    from longrope.eval.compare import make_samples
    from longrope.models import load_tokenizer
    tok = load_tokenizer(str(model_dir))
    samples = make_samples(load_tokenized(tok, str(text_dir), "test").ids, tok, length, docs, seed=0).tensors
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    nll, count = 0.0, 0
    with torch.no_grad():
        for s in samples:
            ids = torch.as_tensor(s).view(1, -1)
            logits = model(ids).logits[0, :-1].float()
            nll += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            count += ids.shape[1] - 1
    return math.exp(nll / count)


def _eval_ppl(model_dir, text_dir, out, *extra) -> dict:
    assert main(["eval", "ppl", "--model", str(model_dir), "--data", str(text_dir), "--lengths", "96",
                 "--docs", "2", "--out", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_eval_ppl_default_is_the_models_own_scaling(yarn_model, text_dir, tmp_path, capsys):
    assert json.loads((yarn_model / "config.json").read_text())["rope_parameters"]["rope_type"] == "yarn"
    own = _eval_ppl(yarn_model, text_dir, tmp_path / "own.json")
    assert own["ppl"]["96"]["ppl"] == pytest.approx(stock_ppl(yarn_model, text_dir, 96, 2), rel=1e-5)
    assert own["meta"]["scaling"] == "model's own (yarn, factor 4)"
    assert "scaling: model's own (yarn, factor 4)" in capsys.readouterr().out
    unscaled = _eval_ppl(yarn_model, text_dir, tmp_path / "none.json", "--scaling", "none")
    assert unscaled["meta"]["scaling"] == "none"
    assert unscaled["ppl"]["96"]["ppl"] != pytest.approx(own["ppl"]["96"]["ppl"], rel=1e-3)


def test_compare_adds_the_model_entry_when_the_config_has_a_scaling(yarn_model, tiny_model_dir, text_dir, tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", "--model", str(yarn_model), "--data", str(text_dir), "--lengths", "32,96",
                 "--docs", "2", "--passkey-trials", "0", "--methods", "none,yarn", "--no-plots",
                 "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert list(res["ppl"]) == ["model", "none", "yarn"]
    assert res["meta"]["methods"]["model"] == res["meta"]["scaling"] == "model's own (yarn, factor 4)"
    assert res["ppl"]["model"]["96"] == pytest.approx(stock_ppl(yarn_model, text_dir, 96, 2), rel=1e-5)
    assert res["ppl"]["none"]["96"] != pytest.approx(res["ppl"]["model"]["96"], rel=1e-3)
    # the short-window reference is the unscaled rotation, so `none` costs nothing there
    assert res["short"]["relative_cost"]["none"] == pytest.approx(0.0, abs=1e-9)
    assert "scaling: model's own (yarn, factor 4)" in (out / "report.md").read_text()
    # a plain-RoPE model gets no extra entry
    plain = tmp_path / "plain"
    assert main(["compare", "--model", str(tiny_model_dir), "--data", str(text_dir), "--lengths", "32",
                 "--docs", "2", "--passkey-trials", "0", "--methods", "none", "--no-plots",
                 "--out", str(plain)]) == 0
    assert list(json.loads((plain / "results.json").read_text())["ppl"]) == ["none"]
