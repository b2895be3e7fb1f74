"""Passkey evaluation: answer parsing, accuracy bookkeeping, seeded keys, and an end-to-end pass."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

from tests.helpers import make_tiny
from longrope.errors import LongRopeError
from longrope.eval.passkey import parse_answer, passkey_eval, summarize, trial_key, wilson

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("text,expected", [
    (" 12345. Remember it.", 12345), ("12345", 12345), ("is 007 and 42", 7),
    ("The pass key is 3 4", 3), ("no digits here", None), ("", None), ("-17", 17), ("x9y", 9),
])
def test_parse_answer(text, expected):
    assert parse_answer(text) == expected


def test_summarize_per_length_depth_and_cell():
    recs = [dict(length=64, depth=0.0, correct=True), dict(length=64, depth=0.0, correct=False),
            dict(length=64, depth=1.0, correct=True), dict(length=128, depth=0.0, correct=False),
            dict(length=128, depth=1.0, correct=False), dict(length=128, depth=1.0, correct=True)]
    res = summarize(recs)
    assert res.accuracy == pytest.approx(3 / 6)
    assert res.by_length == {"64": pytest.approx(2 / 3), "128": pytest.approx(1 / 3)}
    assert res.by_depth == {"0": pytest.approx(1 / 3), "1": pytest.approx(2 / 3)}
    assert res.grid == {"64": {"0": 0.5, "1": 1.0}, "128": {"0": 0.0, "1": 0.5}}
    assert res.count_by_length == {"64": [2, 3], "128": [1, 3]}
    assert res.interval_by_length["64"] == pytest.approx(list(wilson(2, 3)))


def test_wilson_interval_matches_the_textbook_values():
    # Wilson 95%: 10 of 20 -> 0.299-0.701; 50 of 100 -> 0.404-0.596; the ends stay inside [0, 1]
    assert wilson(10, 20) == pytest.approx((0.2993, 0.7007), abs=1e-4)
    assert wilson(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    assert wilson(20, 20)[1] == 1.0 and wilson(20, 20)[0] == pytest.approx(1 - 0.1611, abs=1e-4)
    # 25% vs 75% of 20 prompts: the intervals overlap hardly; 25% vs 35% do
    assert wilson(5, 20)[1] < wilson(15, 20)[0] + 0.1 and wilson(5, 20)[1] > wilson(7, 20)[0]
    with pytest.raises(LongRopeError):
        wilson(3, 2)


def test_keys_are_seeded_uniform_and_order_independent():
    keys = [trial_key(0, 256, 0.5, t) for t in range(2000)]
    assert keys == [trial_key(0, 256, 0.5, t) for t in range(2000)]
    assert all(1 <= k <= 50000 for k in keys)
    assert len(set(keys)) > 1900 and 20000 < sum(keys) / len(keys) < 30000
    assert trial_key(1, 256, 0.5, 0) != trial_key(0, 256, 0.5, 0) or trial_key(1, 256, 0.5, 1) != keys[1]


def _fake_builder(tokenizer, length, depth, key, seed=0):
    text = "filler " * 3 + f"The pass key is {key}. Remember it." + " filler" * 3 + " The pass key is"
    ids = torch.tensor(tokenizer(text)["input_ids"][:length])
    return SimpleNamespace(input_ids=ids, key=key, key_position=0, depth=depth)


class _Oracle(torch.nn.Module):
    """Answers with the key it reads in the prompt; wrong (key + 1) when `liar` says so."""

    def __init__(self, tokenizer, liar=lambda n: False):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.tok, self.liar = tokenizer, liar

    def generate(self, ids, **kw):
        assert kw["do_sample"] is False and kw["use_cache"] is True
        key = int(re.search(r"pass key is (\d+)", self.tok.decode(ids[0].tolist())).group(1))
        key += int(self.liar(ids.shape[1]))
        new = self.tok(f" {key}. It", add_special_tokens=False)["input_ids"][: kw["max_new_tokens"]]
        return torch.cat([ids, torch.tensor([new])], dim=1)


def test_accuracy_from_generated_answers(char_tok):
    oracle = _Oracle(char_tok)
    res = passkey_eval(oracle, char_tok, [500, 600], trials=3, depths=[0, 1], builder=_fake_builder)
    assert res.accuracy == 1.0 and len(res.trials) == 12
    assert all(t["answer"] == t["key"] for t in res.trials)
    liar = _Oracle(char_tok, liar=lambda n: True)
    assert passkey_eval(liar, char_tok, [500], trials=2, builder=_fake_builder).accuracy == 0.0


def test_real_prompt_builder_and_tiny_model(char_tok):
    model = make_tiny("llama")
    res = passkey_eval(model, char_tok, [300], trials=1, depths=[0.0, 1.0], max_new_tokens=4)
    assert set(res.grid["300"]) == {"0", "1"}
    for t in res.trials:
        assert t["prompt_tokens"] <= 300 and 1 <= t["key"] <= 50000
        assert t["correct"] == (parse_answer(t["output"]) == t["key"])


def test_bad_input(char_tok):
    with pytest.raises(LongRopeError):
        passkey_eval(None, char_tok, [], builder=_fake_builder)
    with pytest.raises(LongRopeError):
        passkey_eval(None, char_tok, [100], depths=[1.5], builder=_fake_builder)
    with pytest.raises(LongRopeError):
        passkey_eval(None, char_tok, [100], trials=0, builder=_fake_builder)
