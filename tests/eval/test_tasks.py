"""lm-evaluation-harness glue against a fake `lm_eval` (fast; the real harness run is in test_tasks_real.py)."""
from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest

from tests.helpers import make_tiny
from longrope.cli import main
from longrope.errors import LongRopeError
from longrope.eval import tasks as tasks_mod


@pytest.fixture
def fake_harness(monkeypatch):
    seen = {"runs": []}

    class HFLM:
        def __init__(self, pretrained, tokenizer, batch_size, device, max_length=None):
            seen.update(pretrained=pretrained, tokenizer=tokenizer, batch_size=batch_size, device=device)
            self.max_length = max_length
            from longrope import patch
            seen["scaling_at_wrap"] = patch.current(pretrained)

    class TaskManager:
        def __init__(self, include_defaults=True, include_path=None, metadata=None):
            self.metadata, self.include_path = metadata, include_path
            self.all_tasks = ["arc_easy", "hellaswag", *tasks_mod.LENGTH_TASKS]

    def simple_evaluate(model, tasks, limit, task_manager, num_fewshot=None, log_samples=False, **seeds):
        meta = task_manager.metadata or {}
        run = dict(lm=model, tasks=tasks, num_fewshot=num_fewshot, limit=limit, seeds=seeds, meta=meta,
                   max_length=model.max_length, offline=os.environ.get("HF_DATASETS_OFFLINE"),
                   tok_saved=bool(meta) and (Path(meta["tokenizer"]) / "tokenizer_config.json").is_file())
        seen["runs"].append(run)
        if "nope" in tasks:
            raise KeyError("task nope not found")
        if not meta:
            return {"results": {t: {"alias": t, "acc,none": 0.5, "acc_stderr,none": 0.1} for t in tasks}}
        n = meta["max_seq_lengths"][0]  # a score that depends on the task and the length
        return {"results": {t: {"alias": t, "4096,none": -1, f"{n},none": (len(t) % 5) / 4 * 64 / n,
                                "sample_len": 3} for t in tasks},
                "samples": {t: [{"doc": {"max_length": n}}] for t in tasks}}

    lm_eval = types.ModuleType("lm_eval")
    lm_eval.simple_evaluate = simple_evaluate
    tasks_pkg = types.ModuleType("lm_eval.tasks")
    tasks_pkg.TaskManager = TaskManager
    lm_eval.tasks = tasks_pkg
    tasks_pkg.__file__ = "/nonexistent/lm_eval/tasks/__init__.py"
    models = types.ModuleType("lm_eval.models")
    hf = types.ModuleType("lm_eval.models.huggingface")
    hf.HFLM = HFLM
    for name, mod in (("lm_eval", lm_eval), ("lm_eval.tasks", tasks_pkg), ("lm_eval.models", models),
                      ("lm_eval.models.huggingface", hf)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    return seen


def test_harness_gets_the_patched_model(fake_harness, char_tok):
    from longrope import patch

    model = patch.apply(make_tiny("llama"), "yarn:4")
    res = tasks_mod.run_tasks(model, char_tok, ["arc_easy", "hellaswag"], num_fewshot=0, limit=5.0, seed=3)
    run = fake_harness["runs"][0]
    assert fake_harness["pretrained"] is model and fake_harness["tokenizer"] is char_tok
    assert fake_harness["scaling_at_wrap"].describe() == "yarn:4"
    assert run["limit"] == 5 and isinstance(run["limit"], int)
    assert run["seeds"]["random_seed"] == 3 and fake_harness["device"] == "cpu"
    assert run["offline"] == "1" and "HF_DATASETS_OFFLINE" not in os.environ  # offline only during the run
    assert res == {"arc_easy": {"acc,none": 0.5, "acc_stderr,none": 0.1},
                   "hellaswag": {"acc,none": 0.5, "acc_stderr,none": 0.1}}


def test_lengths_one_run_each_with_our_tokenizer(fake_harness, char_tok):
    from longrope import patch

    model = patch.apply(make_tiny("llama"), "pi:2")
    samples = {}
    res = tasks_mod.run_tasks_at_lengths(model, char_tok, ["niah_single_1", "niah_multikey_2"], [256, 512], limit=4,
                                         batch_size=2, seed=1, samples=samples, log=None)
    runs = fake_harness["runs"]
    assert [r["meta"]["max_seq_lengths"] for r in runs] == [[256], [512]]
    assert [r["max_length"] for r in runs] == [256 + tasks_mod.PREFIX_ROOM, 512 + tasks_mod.PREFIX_ROOM]
    assert all(r["tok_saved"] and r["offline"] == "1" and r["limit"] == 4 for r in runs)
    assert not Path(runs[0]["meta"]["tokenizer"]).exists()  # the temporary tokenizer folder is removed
    assert fake_harness["scaling_at_wrap"].describe() == "linear:2" and fake_harness["batch_size"] == 2
    assert res == {"niah_single_1": {256: 0.1875, 512: 0.09375}, "niah_multikey_2": {256: 0.0, 512: 0.0}}
    assert samples["niah_multikey_2"][512] == [{"doc": {"max_length": 512}}]


@pytest.mark.parametrize("tasks,lengths,msg", [
    (["niah_single_2"], [256], "niah_single_2 downloads Paul Graham essays"),
    (["ruler_qa_squad"], [256], "ruler_qa_squad downloads SQuAD"),
    (["ruler"], [256], "task ruler downloads"),
    (["hellaswag"], [256], "task 'hellaswag' is not a RULER task"),
    (["niah_nope"], [256], "task 'niah_nope' is not a RULER task"),
    ([], [256], "the list of tasks is empty"),
    (["niah_single_1"], [0], "lengths must be >= 1, got 0"),
    (["niah_single_1"], [], "the list of lengths is empty"),
    (["niah_single_1", "ruler_vt"], [512, 1024], "ruler_vt needs lengths >= 1024"),
])
def test_length_run_refuses_bad_input(fake_harness, char_tok, tasks, lengths, msg):
    with pytest.raises(LongRopeError, match=msg):
        tasks_mod.run_tasks_at_lengths(make_tiny("llama"), char_tok, tasks, lengths, log=None)
    assert fake_harness["runs"] == []  # refused before anything ran


def test_harness_errors_are_one_line(fake_harness, char_tok):
    with pytest.raises(LongRopeError, match="unknown lm-evaluation-harness task: 'nope'"):
        tasks_mod.run_tasks(make_tiny("llama"), char_tok, ["nope"])
    with pytest.raises(LongRopeError, match="empty"):
        tasks_mod.run_tasks(make_tiny("llama"), char_tok, [])
    with pytest.raises(LongRopeError, match="RULER task niah_single_1 is sized per length: give --lengths"):
        tasks_mod.run_tasks(make_tiny("llama"), char_tok, ["niah_single_1"])


def test_missing_harness_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import raises ImportError
    with pytest.raises(LongRopeError) as e:
        tasks_mod.require_harness()
    assert str(e.value) == tasks_mod.INSTALL_HINT and "pip install 'longrope[eval]'" in str(e.value)


def test_cli_tasks_at_lengths(fake_harness, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "t.json"
    rc = main(["eval", "tasks", "--model", str(tiny_model_dir), "--scaling", "yarn", "--tasks", "niah_single_1",
               "--lengths", "64,128", "--limit", "2", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| niah_single_1" in printed and "75.0%" in printed and "37.5%" in printed
    res = json.loads(out.read_text())
    assert res["tasks"] == {"niah_single_1": {"64": 0.75, "128": 0.375}}
    assert res["meta"]["scaling"].startswith("yarn:4")  # bare name: factor 128 / window 32
    assert fake_harness["scaling_at_wrap"].describe().startswith("yarn:4")


@pytest.mark.parametrize("argv,msg", [
    (["--tasks", "niah_nope", "--lengths", "256"], "'niah_nope' is not a RULER task"),
    (["--tasks", "niah_single_3", "--lengths", "256"], "niah_single_3 downloads"),
    (["--tasks", "niah_single_1", "--lengths", "0"], "lengths must be positive"),
    (["--tasks", "niah_single_1", "--lengths", "-3"], "lengths must be positive"),
    (["--tasks", "niah_single_1", "--lengths", "256", "--limit", "0"], "--limit must be > 0"),
    (["--tasks", " , ", "--lengths", "256"], "the list of tasks is empty"),
    (["--tasks", "ruler_vt"], "RULER task ruler_vt is sized per length"),
    (["--tasks", "ruler_vt", "--lengths", "512"], "ruler_vt needs lengths >= 1024"),
])
def test_cli_tasks_bad_input_one_line_exit_2(fake_harness, tiny_model_dir, capsys, argv, msg):
    rc = main(["eval", "tasks", "--model", str(tiny_model_dir)] + argv)
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_tables_and_plot(tmp_path):
    res = {"niah_single_1": {256: 1.0, 512: 0.25}, "ruler_vt": {512: 0.0}}
    from longrope.eval.report import tasks_method_table, tasks_table
    table = tasks_table(res)
    assert table.splitlines()[0].split("|")[2].strip() == "256"
    assert "| niah_single_1" in table and "100.0%" in table and "25.0%" in table
    assert table.splitlines()[-1].split("|")[2].strip() == "-"  # ruler_vt has no 256 entry
    both = tasks_method_table({"none": res, "yarn:2": {"niah_single_1": {"256": 0.5}}})
    assert [r.split("|")[1].strip() for r in both.splitlines()[2:]] == [
        "niah_single_1 / none", "niah_single_1 / yarn:2", "ruler_vt / none"]
    pytest.importorskip("matplotlib")
    png = tasks_mod.plot_tasks({"none": res}, tmp_path / "tasks.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
