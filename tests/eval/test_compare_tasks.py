"""`compare --tasks`: harness task accuracy per method x length in the typed result, the report
and a plot (issue 14), through the fake harness the other task tests use."""
from __future__ import annotations

import pytest

from longrope.errors import LongRopeError
from longrope.eval import tasks as harness
from longrope.eval.compare import CompareConfig, compare
from longrope.eval.outputs import write_outputs
from longrope.eval.results import CompareResult


def test_compare_runs_tasks_per_method_and_length(tmp_path, monkeypatch, tiny_model_dir, char_tok):
    from longrope.models import load_model

    calls = []

    def fake(model, tokenizer, tasks, lengths, **kw):
        from longrope import patch
        scaling = patch.current(model)
        calls.append((scaling.describe() if scaling else "none", list(lengths), kw["limit"]))
        # a made-up accuracy that differs by method and length, so the table is checked cell by cell
        bonus = 0.5 if scaling and scaling.method == "yarn" else 0.0
        return {t: {n: min(1.0, bonus + n / 1000) for n in lengths} for t in tasks}

    monkeypatch.setattr(harness, "require_harness", lambda: None)
    monkeypatch.setattr(harness, "run_tasks_at_lengths", fake)
    model = load_model(tiny_model_dir)
    cfg = CompareConfig(methods=["none", "yarn:2"], lengths=[32, 64], docs=1, passkey_trials=0,
                        data=str(tmp_path / "none"), tasks=["niah_single_1"], task_limit=3)
    text = "alpha beta gamma delta " * 200
    ids = [char_tok(text, add_special_tokens=False)["input_ids"]] * 2
    from longrope.data import Tokenized
    result = compare(model, char_tok, cfg.validated(), documents=Tokenized(["a", "b"], ids), progress=False)
    assert [c[2] for c in calls] == [3, 3] and all(c[1] == [32, 64] for c in calls)
    assert result.methods["none"].tasks == {"niah_single_1": {"32": 0.032, "64": 0.064}}
    assert result.methods["yarn:2"].tasks["niah_single_1"]["64"] == pytest.approx(0.564)
    images = write_outputs(result, tmp_path / "out", plots=True)
    assert (tmp_path / "out" / images["tasks"]).is_file()
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Tasks" in report and "niah_single_1 / yarn:2" in report and "56.4%" in report
    back = CompareResult.from_json(__import__("json").loads((tmp_path / "out" / "results.json").read_text()))
    assert back.methods["yarn:2"].tasks == result.methods["yarn:2"].tasks


def test_compare_task_config_checked_before_work(monkeypatch):
    monkeypatch.setattr(harness, "require_harness", lambda: None)
    with pytest.raises(LongRopeError, match="network|download"):
        CompareConfig(lengths=[256], tasks=["ruler_qa_squad"]).validated()
    with pytest.raises(LongRopeError):
        CompareConfig(lengths=[256], tasks=["no_such_task"]).validated()
    with pytest.raises(LongRopeError):
        CompareConfig(lengths=[256], tasks=["niah_single_1"], task_limit=0).validated()
