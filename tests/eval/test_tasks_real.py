"""The real lm-evaluation-harness (RULER niah_single_1, generated offline) on the built-in model, checked
against a direct computation: our own greedy generation of the same prompts and our own string match."""
from __future__ import annotations

import re

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("wonderwords")

pytestmark = pytest.mark.slow


def _score(pred: str, refs: list[str]) -> float:
    """RULER's string_match_all, written from its definition: share of the references found in the
    prediction (case-insensitive), after stripping and mapping control characters to newlines."""
    pred = re.sub(r"[\x00-\x1f]", "\n", pred.strip()).strip().lower()
    return sum(r.lower() in pred for r in refs) / len(refs)


def test_real_harness_matches_direct_greedy(one_thread):
    from longrope import patch
    from longrope.eval.passkey import generate_answer
    from longrope.eval.tasks import run_tasks_at_lengths
    from longrope.models import load_model, load_tokenizer

    model = patch.apply(load_model("builtin"), "yarn:2")
    tok = load_tokenizer("builtin")
    samples = {}
    res = run_tasks_at_lengths(model, tok, ["niah_single_1"], [256, 512], limit=3, seed=5, samples=samples,
                               log=None)
    assert set(res["niah_single_1"]) == {256, 512}
    for n in (256, 512):
        records = samples["niah_single_1"][n]
        assert len(records) == 3
        scores = []
        for rec in records:
            doc = rec["doc"]
            assert doc["max_length"] == n and doc["outputs"][0] in doc["input"]  # the needle is in the haystack
            context = doc["input"] + " " + doc["gen_prefix"]  # the prompt as RULER defines it
            assert rec["arguments"][0][0] == context
            ids = tok(context, return_tensors="pt").input_ids
            assert ids.shape[1] + 128 <= n + 32  # RULER sized prompt + 128 generated tokens to ~n
            ours = generate_answer(model, tok, ids, max_new_tokens=128)
            assert ours == rec["resps"][0][0]  # the harness generated exactly what our greedy decoding does
            scores.append(_score(ours, doc["outputs"]))
            assert rec[str(n)] == pytest.approx(scores[-1])
        assert res["niah_single_1"][n] == pytest.approx(sum(scores) / len(scores))
    # the samples differ between lengths and the haystack grows with the length
    assert samples["niah_single_1"][256][0]["doc"]["length"] < samples["niah_single_1"][512][0]["doc"]["length"]
