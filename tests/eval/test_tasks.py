"""lm-evaluation-harness glue: the harness receives the patched model object itself, in-process."""
from __future__ import annotations

import sys
import types

import pytest

from tests.helpers import make_tiny
from longrope.errors import LongRopeError
from longrope.eval import tasks as tasks_mod


@pytest.fixture
def fake_harness(monkeypatch):
    seen = {}

    class HFLM:
        def __init__(self, pretrained, tokenizer, batch_size, device):
            seen.update(pretrained=pretrained, tokenizer=tokenizer, batch_size=batch_size, device=device)
            from longrope import patch
            seen["scaling_at_wrap"] = patch.current(pretrained)

    def simple_evaluate(model, tasks, num_fewshot, limit, **seeds):
        seen.update(lm=model, tasks=tasks, num_fewshot=num_fewshot, limit=limit, seeds=seeds)
        if "nope" in tasks:
            raise KeyError("task nope not found")
        return {"results": {t: {"alias": t, "acc,none": 0.5, "acc_stderr,none": 0.1} for t in tasks}}

    lm_eval = types.ModuleType("lm_eval")
    lm_eval.simple_evaluate = simple_evaluate
    models = types.ModuleType("lm_eval.models")
    hf = types.ModuleType("lm_eval.models.huggingface")
    hf.HFLM = HFLM
    for name, mod in (("lm_eval", lm_eval), ("lm_eval.models", models), ("lm_eval.models.huggingface", hf)):
        monkeypatch.setitem(sys.modules, name, mod)
    return seen


def test_harness_gets_the_patched_model(fake_harness, char_tok):
    from longrope import patch

    model = patch.apply(make_tiny("llama"), "yarn:4")
    res = tasks_mod.run_tasks(model, char_tok, ["arc_easy", "hellaswag"], num_fewshot=0, limit=5.0, seed=3)
    assert fake_harness["pretrained"] is model and fake_harness["tokenizer"] is char_tok
    assert fake_harness["scaling_at_wrap"].describe() == "yarn:4"
    assert fake_harness["limit"] == 5 and isinstance(fake_harness["limit"], int)
    assert fake_harness["seeds"]["random_seed"] == 3 and fake_harness["device"] == "cpu"
    assert res == {"arc_easy": {"acc,none": 0.5, "acc_stderr,none": 0.1},
                   "hellaswag": {"acc,none": 0.5, "acc_stderr,none": 0.1}}


def test_harness_errors_are_one_line(fake_harness, char_tok):
    with pytest.raises(LongRopeError, match="task nope not found"):
        tasks_mod.run_tasks(make_tiny("llama"), char_tok, ["nope"])
    with pytest.raises(LongRopeError, match="empty"):
        tasks_mod.run_tasks(make_tiny("llama"), char_tok, [])


def test_missing_harness_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import raises ImportError
    with pytest.raises(LongRopeError) as e:
        tasks_mod.require_harness()
    assert str(e.value) == tasks_mod.INSTALL_HINT and "pip install 'longrope[eval]'" in str(e.value)
