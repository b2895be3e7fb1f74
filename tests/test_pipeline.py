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
from longrope.pipeline import run
from longrope.recipe import list_recipes, load_recipe

from tests.helpers import cli_env, run_group, save_tiny, spawn, write_texts

SHIPPED = ("builtin-8x", "builtin-progressive", "llama2-7b-2m", "mistral-7b-128k")


def test_shipped_recipes_are_listed_and_valid():
    assert set(SHIPPED) <= set(list_recipes())
    for name in SHIPPED:
        recipe = load_recipe(name)
        assert recipe.stages and recipe.stages[0].kind == "search"


def _dry_run_refuses(tmp_path, capsys, text, msg):
    """The recipe `text` fails `extend --dry-run` with one line holding `msg`; returns its path."""
    path = tmp_path / "r.yaml"
    path.write_text(text)
    assert main(["extend", "--recipe", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1
    return path


@pytest.mark.parametrize("name", ["llama2-7b-2m", "mistral-7b-128k"])
def test_gpu_recipes_pass_dry_run(name, capsys):
    assert main(["extend", "--recipe", name, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "FLOPs" in out and "GPUs" in out
    assert out.count("search") >= 3 and "fine-tune" in out


def _dry_run_plan(tmp_path, capsys, stages: str) -> str:
    """`extend --dry-run` of a recipe with `stages` (YAML lines) on a tiny local model: its output."""
    model = save_tiny(tmp_path / "m")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: t\nstages:\n" + stages)
    assert main(["extend", "--recipe", str(recipe), "--model", str(model), "--dry-run"]) == 0
    return capsys.readouterr().out


def test_dry_run_on_a_local_model_reads_its_config(tmp_path, capsys):
    out = _dry_run_plan(tmp_path, capsys, "  - search: {target_length: 128}\n  - finetune: {length: 128, steps: 3}\n")
    assert "window 32" in out and "s = 4" in out and "fine-tune 3 steps" in out


def test_dry_run_states_the_search_cost_the_search_log_will(tmp_path, capsys):
    from longrope.search.cost import search_cost
    from longrope.search.config import SearchConfig
    out = _dry_run_plan(tmp_path, capsys, "  - search: {target_length: 128, docs: 3, preset: paper, iterations: 2}\n")
    cfg = SearchConfig(target_length=128, docs=3, preset="paper", iterations=2).resolved()
    cost = search_cost(cfg)
    assert f"<= {cost['evaluations']:,} full evaluations, {cost['forward_passes']:,} forward-pass equivalents" in out
    assert f"{cost['tokens']:,} tokens" in out and "GPU-h at the paper's scale" in out
    assert cost["forward_passes"] == (cfg.population + 2 * (cfg.mutations + cfg.crossovers) + 3) * 3
    # a descent phase: its forward + backward passes count 3 forward passes each
    (tmp_path / "d").mkdir()
    out = _dry_run_plan(tmp_path / "d", capsys, "  - search: {target_length: 128, docs: 3, preset: paper, iterations: 2,"
                                          " descent_steps: 5}\n")
    cost = search_cost(SearchConfig(target_length=128, docs=3, preset="paper", iterations=2, descent_steps=5))
    assert cost["descent_passes"] == 15 and cost["pass_equivalents"] == cost["forward_passes"] + 45
    assert f"after 5 descent steps (15 forward + backward passes), {cost['pass_equivalents']:,.0f} forward-pass" in out


@pytest.mark.parametrize("text,msg", [
    ("stages: []\n", "non-empty 'stages'"),
    ("stages:\n  - warp: {}\n", "unknown kind"),
    ("stages:\n  - search: {}\n", "needs target_length"),
    ("stages:\n  - search: {target_length: 64, colour: red}\n", "unknown option"),
    ("stages:\n  - short: {}\n", "needs an earlier search"),
    ("stages:\n  - search: {target_length: 64, seed_from: previous}\n", "seed_from: previous needs an earlier search"),
    ("stages:\n  - search: {target_length: 64}\n  - finetune: {length: 64}\n", "needs length and steps"),
    ("stages: [\n", "bad YAML"),
    ("flavour: x\nstages:\n  - search: {target_length: 64}\n", "unknown recipe key"),
])
def test_bad_recipes_are_one_line_errors(tmp_path, capsys, text, msg):
    _dry_run_refuses(tmp_path, capsys, text, msg)


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


def _run_tiny(tmp_path, text, name="tiny.yaml", n=6, words=300):
    """Run the recipe `text` on a tiny saved model and seeded documents; (ctx, recipe, model, data, out)."""
    model = save_tiny(tmp_path / "m")
    data = write_texts(tmp_path / "docs", n=n, words=words)
    recipe = tmp_path / name
    recipe.write_text(text)
    out = tmp_path / "out"
    ctx = run(load_recipe(str(recipe)), out, model=str(model), data=str(data), log=lambda m: None)
    return ctx, recipe, model, data, out


def test_an_export_that_drops_nothing_is_the_longrope_row(tmp_path):
    """Without n_hat and a short attention scale the export holds the factors whole: the shipped
    model is the `longrope` row (not scored twice), and the report says so."""
    text = TINY.replace("patience: 0}", "patience: 0, search_n_hat: false}").replace("{drop_n_hat: true}", "{}")
    ctx, recipe, model, data, out = _run_tiny(tmp_path, text)
    results = json.loads((out / "03-compare" / "results.json").read_text())
    assert set(results["ppl"]) == {"none", "pi", "yarn", "longrope"}
    assert results["meta"]["shipped"][0]["row"] == "longrope" and results["meta"]["shipped"][0]["dropped"] == {}
    report = (out / "03-compare" / "report.md").read_text()
    assert "holds the `longrope` factors whole (the export dropped nothing)" in report


def test_tiny_recipe_end_to_end(tmp_path):
    ctx, recipe, model, data, out = _run_tiny(tmp_path, TINY)
    for name in ("01-search", "02-export", "03-compare"):
        assert (out / name / "done.json").is_file()
    results = json.loads((out / "03-compare" / "results.json").read_text())
    # a searched n_hat > 0 is dropped by the export, which is then scored on its own as `shipped`
    dropped = json.loads((Path(ctx.exported) / "longrope_scaling.json").read_text())["dropped"]
    assert set(results["ppl"]) == {"none", "pi", "yarn", "longrope"} | ({"shipped"} if dropped else set())
    assert results["meta"]["longrope_factors"] == str(out / "01-search" / "factors.json")
    assert (Path(ctx.exported) / "config.json").is_file()
    with pytest.raises(LongRopeError, match="not empty"):
        run(load_recipe(str(recipe)), out, model=str(model), data=str(data), log=lambda m: None)
    # resume on a finished run skips everything
    logs = []
    run(load_recipe(str(recipe)), out, resume=True, model=str(model), data=str(data), log=logs.append)
    assert sum("skipped" in m for m in logs) == 3


def test_interrupted_compare_stage_scores_only_the_methods_it_had_not_finished(tmp_path, monkeypatch):
    """The compare stage saves each method as it finishes (part-N.json); a resumed stage keeps those
    and scores the rest, and its results equal the uninterrupted run's. A part written for other
    settings is not used."""
    import longrope.eval.compare as cmp
    ctx, recipe, model, data, out = _run_tiny(tmp_path, TINY)
    stage = out / "03-compare"
    whole = json.loads((stage / "results.json").read_text())
    part = json.loads((stage / "part-1.json").read_text())
    ours = f"longrope:{out / '01-search' / 'factors.json'}"  # renamed `longrope` in results.json
    assert part["complete"] and set(part["result"]["ppl"]) == {"none", "pi", "yarn", ours}
    # as if killed while scoring yarn: none and pi saved, the stage not finished
    for key in ("ppl", "ppl_detail", "seconds", "short_ppl"):
        for m in ("yarn", ours):
            part["result"][key].pop(m, None)
    part["result"]["meta"]["methods"] = {m: v for m, v in part["result"]["meta"]["methods"].items()
                                         if m in ("none", "pi")}
    part["complete"] = False
    (stage / "part-1.json").write_text(json.dumps(part))
    for name in ("done.json", "results.json", "report.md"):
        (stage / name).unlink()
    scored = []
    real = cmp._score
    monkeypatch.setattr(cmp, "_score", lambda r, *a, **k: (scored.append(r.spec), real(r, *a, **k))[1])
    run(load_recipe(str(recipe)), out, resume=True, model=str(model), data=str(data), log=lambda m: None)
    assert len(scored) == 2
    assert not any(s.startswith(("none", "pi")) for s in scored)
    again = json.loads((stage / "results.json").read_text())
    assert again["ppl"] == whole["ppl"] and again["short"] == whole["short"]
    # a part made with other settings (here: other methods) is scored afresh
    part["key"]["methods"] = ["none", "ntk"]
    (stage / "part-1.json").write_text(json.dumps(part))
    (stage / "done.json").unlink()
    scored.clear()
    run(load_recipe(str(recipe)), out, resume=True, model=str(model), data=str(data), log=lambda m: None)
    assert len(scored) == 4


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
  - search: {target_length: 96, docs: 2, population: 4, iterations: 1, parents: 2, mutations: 1, crossovers: 1, screen_docs: 0, patience: 0, seed_from: previous}
  - compare: {lengths: [96], methods: [none, yarn], docs: 2, passkey_trials: 0, plots: false, baselines_on: initial, final_methods: [none, yarn]}
"""


def test_progressive_recipe_scores_baselines_on_the_initial_model(tmp_path):
    ctx, _, model, _, _ = _run_tiny(tmp_path, PROGRESSIVE, "p.yaml", n=8, words=400)
    finetuned = str(tmp_path / "out" / "02-finetune" / "model")
    assert ctx.model == finetuned
    results = json.loads((tmp_path / "out" / "04-compare" / "results.json").read_text())
    models = results["meta"]["models"]
    assert models["yarn"] == str(model) and models["none (final model)"] == finetuned
    assert models["longrope"] == finetuned and models["yarn (final model)"] == finetuned  # the control
    assert set(results["ppl"]) == {"none", "yarn", "none (final model)", "yarn (final model)", "longrope"}  # no export stage
    assert results["ppl"]["yarn (final model)"]["96"] != results["ppl"]["yarn"]["96"]
    # seed_from: previous -- the 64-token factors, carried to 96 tokens, seed the second search
    from longrope.rope.files import load_scaling
    from longrope.search.objective import carry_factors
    first = load_scaling(tmp_path / "out" / "01-search" / "factors.json")
    state = json.loads((tmp_path / "out" / "03-search" / "state.json").read_text())
    assert state["seeds"]["carried"] == pytest.approx(list(carry_factors(first.long_factor, first.factor, 3.0)))


# -- the whole recipe is checked before the first stage ------------------------------------------
@pytest.mark.parametrize("text,msg", [
    ("seed: zero\nstages:\n  - search: {target_length: 64}\n", "seed must be int"),
    ("stages:\n  - search: {target_length: -256}\n", "target_length must be a positive length"),
    ("stages:\n  - search: {target_length: 64, docs: four}\n", "docs must be int"),
    ("stages:\n  - search: {target_length: 64}\n  - export: {drop_n_hat: true}\n"
     "  - compare: {lengths: [64], methods: [none, warp]}\n", "warp"),
    ("stages:\n  - search: {target_length: 64}\n  - export: {drop_n_hat: true}\n"
     "  - compare: {lengths: [64], passkey_trials: -1}\n", "passkey_trials must be >= 0"),
    ("stages:\n  - search: {target_length: 64}\n  - export: {drop_n_hat: true}\n"
     "  - compare: {lengths: [-64]}\n", "positive length"),
    ("stages:\n  - search: {target_length: 64}\n  - export: {drop_n_hat: false}\n", "drop_n_hat is false"),
    ("stages:\n  - search: {target_length: 64}\n  - short: {search_attention_scale: true}\n"
     "  - export: {drop_n_hat: true}\n", "drop_short_attention is false"),
    ("stages:\n  - search: {target_length: 64}\n  - export: {drop_n_hat: yes_please}\n", "drop_n_hat must be bool"),
    ("device: banana\nstages:\n  - search: {target_length: 64}\n", "unknown device"),
    ("stages:\n  - search: {target_length: 64, dtype: float99}\n", "unknown dtype"),
    ("stages:\n  - search: {target_length: 64}\n  - finetune: {length: 64, steps: 2, min_lr_ratio: x}\n",
     "min_lr_ratio must be float"),
])
def test_whole_recipe_is_checked_before_any_work(tmp_path, capsys, text, msg):
    path = _dry_run_refuses(tmp_path, capsys, text, msg)
    assert main(["extend", "--recipe", str(path), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_recipe_lengths_accept_2k(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("stages:\n  - search: {target_length: 2k}\n  - export: {drop_n_hat: true}\n"
                    "  - compare: {lengths: [256, 1k], short_length: 0.25k}\n")
    recipe = load_recipe(str(path))
    assert recipe.stages[0].options["target_length"] == "2k"  # parsed when the stage config is built
    from longrope.recipe import compare_config as _compare_config
    assert _compare_config(recipe, recipe.stages[2]).lengths == [256, 1024]


def test_extend_device_override_is_checked(capsys):
    assert main(["extend", "--recipe", "builtin-8x", "--device", "banana", "--dry-run"]) == 2
    assert "unknown device" in capsys.readouterr().err


def test_dry_run_of_a_model_without_rope_is_one_line(tmp_path, capsys):
    from transformers import GPT2Config
    folder = tmp_path / "gpt2"
    GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64).save_pretrained(folder)
    assert main(["extend", "--recipe", "builtin-8x", "--model", str(folder), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "RoPE" in err and len(err.splitlines()) == 1


# -- resume checks the run's fingerprint -----------------------------------------------------------
def _finished_tiny(tmp_path):
    return _run_tiny(tmp_path, TINY)[1:]


def test_resume_refuses_a_different_recipe_model_or_data(tmp_path, capsys):
    recipe, model, data, out = _finished_tiny(tmp_path)
    capsys.readouterr()  # the first run's progress lines
    saved = (out / "recipe.json").read_text()
    other = tmp_path / "other.yaml"
    other.write_text(TINY.replace("docs: 2, passkey_trials", "docs: 3, passkey_trials"))
    base = ["extend", "--out", str(out), "--resume", "--model", str(model), "--data", str(data)]
    assert main(base + ["--recipe", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert "different recipe" in err and len(err.splitlines()) == 1
    other_data = write_texts(tmp_path / "docs2", n=6, words=301)
    assert main(["extend", "--recipe", str(recipe), "--out", str(out), "--resume", "--model", str(model),
                 "--data", str(other_data)]) == 2
    assert "different data" in capsys.readouterr().err
    other_model = save_tiny(tmp_path / "m2", seed=1)
    assert main(["extend", "--recipe", str(recipe), "--out", str(out), "--resume", "--model", str(other_model),
                 "--data", str(data)]) == 2
    assert "different model" in capsys.readouterr().err
    assert (out / "recipe.json").read_text() == saved  # never rewritten on a mismatch
    assert main(base + ["--recipe", str(recipe)]) == 0  # the same run resumes (everything skipped)
    assert "done earlier, skipped" in capsys.readouterr().err


def test_resume_refuses_a_folder_without_fingerprint(tmp_path, capsys):
    out = tmp_path / "old-demo-out"
    (out / "01-search").mkdir(parents=True)
    (out / "recipe.json").write_text(json.dumps({"recipe": {"name": "builtin-8x"}}))
    assert main(["extend", "--recipe", "builtin-8x", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "older longrope" in err and len(err.splitlines()) == 1
    (out / "recipe.json").unlink()
    assert main(["extend", "--recipe", "builtin-8x", "--out", str(out), "--resume"]) == 2
    assert "not a longrope extend run" in capsys.readouterr().err
