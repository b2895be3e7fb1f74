"""Each shipped recipe, shrunk to the built-in model on CPU (same stages, same export and compare
settings, tiny lengths and budgets), runs to the end; searches are forced to return n_hat > 0
wherever the recipe lets them search it, so the export's n_hat handling is exercised."""
from __future__ import annotations

import json

import pytest

from longrope.models import BUILTIN_DIR
from longrope.pipeline import run
from longrope.recipe import load_recipe

SHIPPED = ("builtin-8x", "builtin-progressive", "llama2-7b-2m", "mistral-7b-128k")
TINY_SEARCH = {"docs": 1, "population": 4, "parents": 2, "mutations": 1, "crossovers": 1, "iterations": 1,
               "screen_docs": 0, "patience": 0}

pytestmark = pytest.mark.skipif(not (BUILTIN_DIR / "config.json").is_file(), reason="built-in model not installed")


def shrink(recipe):
    """Tiny lengths and budgets; every other setting (flags, export, compare methods) kept."""
    recipe.model, recipe.data = "builtin", "builtin"
    for st in recipe.stages:
        o = st.options
        if st.kind == "search":
            o.update(TINY_SEARCH, target_length=384, descent_steps=2)
        elif st.kind == "short":
            o.update(TINY_SEARCH)
        elif st.kind == "finetune":
            o.update(length=384, steps=2, batch_size=1, micro_batch=1, checkpoint_every=1)
        elif st.kind == "compare":
            o.update(lengths=[256, 384], docs=1, passkey_trials=1, depths=[0.5], plots=False)
    return recipe


@pytest.fixture
def forced_n_hat(monkeypatch):
    """Searches that may search n_hat can only pick n_hat > 0."""
    from longrope.search import space
    monkeypatch.setattr(space, "allowed_n_hats", lambda window: (16, 32))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipe_shrunk_runs_to_the_end(name, tmp_path, forced_n_hat):
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recipe = shrink(load_recipe(name))
        ctx = run(recipe, tmp_path / "out", device="cpu", dtype="float32", log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "out"
    assert all((out / st.name / "done.json").is_file() for st in recipe.stages)
    searches = [st for st in recipe.stages if st.kind == "search"]
    factors = json.loads((out / searches[-1].name / "factors.json").read_text())
    n_hat = factors.get("n_hat", factors.get("scaling", {}).get("n_hat"))
    if searches[-1].options.get("search_n_hat", True):
        assert n_hat and n_hat > 0  # forced, and the export (drop_n_hat: true) still went through
    else:
        assert not n_hat
    exported = json.loads((out / ctx.exported.split("/")[-2] / "model" / "config.json").read_text())
    assert exported["rope_parameters"]["rope_type"] == "longrope"
    results = json.loads((out / recipe.stages[-1].name / "results.json").read_text())
    assert "longrope" in results["ppl"] and set(results["ppl"]["longrope"]) == {"256", "384"}
