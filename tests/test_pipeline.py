"""`longrope extend`: recipes, dry runs, a tiny end-to-end run, and resume after a kill."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from longrope.cli import main
from longrope.errors import LongRopeError
from longrope.pipeline import list_recipes, load_recipe, run

from tests.helpers import cli_env, run_group, save_tiny, spawn, write_texts

SHIPPED = ("builtin-8x", "builtin-progressive", "llama2-7b-2m", "mistral-7b-128k")


def test_shipped_recipes_are_listed_and_valid():
    assert set(SHIPPED) <= set(list_recipes())
    for name in SHIPPED:
        recipe = load_recipe(name)
        assert recipe.stages and recipe.stages[0].kind == "search"


@pytest.mark.parametrize("name", ["llama2-7b-2m", "mistral-7b-128k"])
def test_gpu_recipes_pass_dry_run(name, capsys):
    assert main(["extend", "--recipe", name, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "FLOPs" in out and "GPUs" in out
    assert out.count("search") >= 3 and "fine-tune" in out


def test_dry_run_on_a_local_model_reads_its_config(tmp_path, capsys):
    model = save_tiny(tmp_path / "m")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: t\nstages:\n  - search: {target_length: 128}\n  - finetune: {length: 128, steps: 3}\n")
    assert main(["extend", "--recipe", str(recipe), "--model", str(model), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "window 32" in out and "s = 4" in out and "fine-tune 3 steps" in out


@pytest.mark.parametrize("text,msg", [
    ("stages: []\n", "non-empty 'stages'"),
    ("stages:\n  - warp: {}\n", "unknown kind"),
    ("stages:\n  - search: {}\n", "needs target_length"),
    ("stages:\n  - search: {target_length: 64, colour: red}\n", "unknown option"),
    ("stages:\n  - short: {}\n", "needs an earlier search"),
    ("stages:\n  - search: {target_length: 64}\n  - finetune: {length: 64}\n", "needs length and steps"),
    ("stages: [\n", "bad YAML"),
    ("flavour: x\nstages:\n  - search: {target_length: 64}\n", "unknown recipe key"),
])
def test_bad_recipes_are_one_line_errors(tmp_path, capsys, text, msg):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    assert main(["extend", "--recipe", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1


def test_unknown_recipe_and_missing_out(capsys):
    assert main(["extend", "--recipe", "no-such-recipe", "--dry-run"]) == 2
    assert "unknown recipe" in capsys.readouterr().err
    assert main(["extend", "--recipe", "builtin-8x"]) == 2
    assert "--out is required" in capsys.readouterr().err


TINY = """name: tiny
seed: 0
stages:
  - search: {target_length: 96, docs: 2, population: 6, iterations: 2, parents: 3, mutations: 2, crossovers: 2, screen_docs: 0, patience: 0}
  - export: {drop_n_hat: true}
  - compare: {lengths: [32, 96], methods: [none, pi, yarn], docs: 2, passkey_trials: 0, plots: false}
"""


def test_tiny_recipe_end_to_end(tmp_path):
    model = save_tiny(tmp_path / "m")
    data = write_texts(tmp_path / "docs", n=6, words=300)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)
    ctx = run(load_recipe(str(recipe)), tmp_path / "out", model=str(model), data=str(data), log=lambda m: None)
    out = tmp_path / "out"
    for name in ("01-search", "02-export", "03-compare"):
        assert (out / name / "done.json").is_file()
    results = json.loads((out / "03-compare" / "results.json").read_text())
    assert set(results["ppl"]) == {"none", "pi", "yarn", "longrope"}
    assert results["meta"]["longrope_factors"] == str(out / "01-search" / "factors.json")
    assert (Path(ctx["exported"]) / "config.json").is_file()
    with pytest.raises(LongRopeError, match="not empty"):
        run(load_recipe(str(recipe)), out, model=str(model), data=str(data), log=lambda m: None)
    # resume on a finished run skips everything
    logs = []
    run(load_recipe(str(recipe)), out, resume=True, model=str(model), data=str(data), log=logs.append)
    assert sum("skipped" in m for m in logs) == 3


def test_killed_extend_resumes_and_finishes(tmp_path):
    model = save_tiny(tmp_path / "m")
    data = write_texts(tmp_path / "docs", n=6, words=300)
    recipe = tmp_path / "slow.yaml"
    recipe.write_text(TINY.replace("iterations: 2", "iterations: 40").replace("patience: 0", "patience: 0"))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "longrope", "extend", "--recipe", str(recipe), "--model", str(model),
           "--data", str(data), "--out", str(out)]
    state = out / "01-search" / "state.json"
    with spawn(cmd, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        deadline = time.time() + 120
        while not state.is_file() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert state.is_file() and not (out / "01-search" / "done.json").exists()
    r = run_group(cmd + ["--resume"], env=cli_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming" in r.stderr and (out / "03-compare" / "done.json").is_file()


PROGRESSIVE = """name: tiny-progressive
stages:
  - search: {target_length: 64, docs: 2, population: 4, iterations: 1, parents: 2, mutations: 1, crossovers: 1, screen_docs: 0, patience: 0}
  - finetune: {length: 64, steps: 2, batch_size: 2, lr: 1.0e-3, checkpoint_every: 1}
  - search: {target_length: 96, docs: 2, population: 4, iterations: 1, parents: 2, mutations: 1, crossovers: 1, screen_docs: 0, patience: 0}
  - compare: {lengths: [96], methods: [none, yarn], docs: 2, passkey_trials: 0, plots: false, baselines_on: initial}
"""


def test_progressive_recipe_scores_baselines_on_the_initial_model(tmp_path):
    model = save_tiny(tmp_path / "m")
    data = write_texts(tmp_path / "docs", n=8, words=400)
    recipe = tmp_path / "p.yaml"
    recipe.write_text(PROGRESSIVE)
    ctx = run(load_recipe(str(recipe)), tmp_path / "out", model=str(model), data=str(data), log=lambda m: None)
    finetuned = str(tmp_path / "out" / "02-finetune" / "model")
    assert ctx["model"] == finetuned
    results = json.loads((tmp_path / "out" / "04-compare" / "results.json").read_text())
    models = results["meta"]["models"]
    assert models["yarn"] == str(model) and models["none (final model)"] == finetuned
    assert models["longrope"] == finetuned
    assert set(results["ppl"]) == {"none", "yarn", "none (final model)", "longrope"}
