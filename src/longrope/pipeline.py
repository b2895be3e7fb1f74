"""`longrope extend`: run a YAML recipe of stages (search, finetune, short, export, compare).

Each stage works in DIR/NN-kind/ and, when finished, writes DIR/NN-kind/done.json holding what
later stages need (the current model folder and the current factor file). `--resume` skips
stages with a marker and resumes an interrupted one from its own checkpoint (search state.json,
finetune checkpoints); a stage killed at any moment loses at most the work since that checkpoint.

Recipe (YAML):

    name: builtin-8x
    model: builtin            # default model (overridable with --model)
    data: builtin             # default data source (overridable with --data)
    seed: 0
    stages:
      - search: {target_length: 2048, docs: 4}
      - short: {docs: 8}
      - export: {drop_n_hat: true}
      - compare: {lengths: [256, 512, 1024, 2048], methods: [none, pi, ntk, dynamic, yarn]}
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import LongRopeError
from .io import write_json

RECIPES_DIR = Path(__file__).parent / "recipes"
KINDS = ("search", "short", "finetune", "export", "compare")
COMPARE_KEYS = {"lengths", "methods", "docs", "passkey_trials", "depths", "factor", "stride",
                "batch_size", "short_length", "split", "plots", "baselines_on"}


@dataclass
class Stage:
    kind: str
    options: dict[str, Any]
    index: int

    @property
    def name(self) -> str:
        return f"{self.index:02d}-{self.kind}"


@dataclass
class Recipe:
    name: str
    stages: list[Stage]
    model: str = "builtin"
    data: str | None = None
    seed: int = 0
    description: str = ""
    model_shape: dict[str, Any] = field(default_factory=dict)  # for --dry-run when the model is not here


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name_or_path: str) -> Recipe:
    import yaml

    path = Path(name_or_path)
    if not path.is_file():
        path = RECIPES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise LongRopeError(f"unknown recipe {name_or_path!r}: not a file and not one of "
                            f"{', '.join(list_recipes())}")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise LongRopeError(f"bad YAML in {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("stages"), list) or not doc["stages"]:
        raise LongRopeError(f"{path}: a recipe needs a non-empty 'stages' list")
    stages = []
    for i, item in enumerate(doc["stages"], 1):
        if not isinstance(item, dict) or len(item) != 1:
            raise LongRopeError(f"{path}: stage {i} must be one mapping like '- search: {{...}}'")
        (kind, opts), = item.items()
        if kind not in KINDS:
            raise LongRopeError(f"{path}: stage {i} has unknown kind {kind!r}; use {', '.join(KINDS)}")
        stages.append(Stage(kind, dict(opts or {}), i))
    known = {f.name for f in dataclasses.fields(Recipe)} - {"stages"}
    unknown = set(doc) - known - {"stages"}
    if unknown:
        raise LongRopeError(f"{path}: unknown recipe key(s) {', '.join(sorted(unknown))}")
    recipe = Recipe(stages=stages, **{k: v for k, v in doc.items() if k in known and k != "name"},
                    name=doc.get("name", path.stem))
    validate(recipe)
    return recipe


# -- per-stage configs -----------------------------------------------------------------------
def _search_config(recipe: Recipe, stage: Stage, ctx: dict):
    from .search.runner import SearchConfig
    opts = dict(stage.options)
    if stage.kind == "short":
        opts.setdefault("short_of", ctx.get("scaling"))
        opts.setdefault("target_length", ctx.get("original") or 1)
    return _build(SearchConfig, stage, model=ctx["model"], data=recipe.data, seed=recipe.seed, **opts)


def _finetune_config(recipe: Recipe, stage: Stage, ctx: dict, out: Path):
    from .train.finetune import FinetuneConfig
    opts = dict(stage.options)
    scaling = opts.pop("scaling", None) or (f"longrope:{ctx['scaling']}" if ctx.get("scaling") else "none")
    return _build(FinetuneConfig, stage, out=str(out / "model"), work=str(out / "work"), model=ctx["model"],
                  scaling=scaling, data=recipe.data, seed=recipe.seed, **opts)


def _build(cls, stage: Stage, **kw):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(kw) - names
    if unknown:
        raise LongRopeError(f"stage {stage.name}: unknown option(s) {', '.join(sorted(unknown))}")
    return cls(**kw)


def validate(recipe: Recipe) -> None:
    """Check every stage's options against its config schema without loading anything."""
    ctx = {"model": recipe.model, "scaling": "factors.json", "original": 1}
    seen_search = False
    for st in recipe.stages:
        if st.kind in ("search", "short"):
            if st.kind == "search" and "target_length" not in st.options:
                raise LongRopeError(f"stage {st.name}: search needs target_length")
            if st.kind == "short" and not seen_search:
                raise LongRopeError(f"stage {st.name}: a short search needs an earlier search")
            _search_config(recipe, st, ctx)
            seen_search = True
        elif st.kind == "finetune":
            if "length" not in st.options or "steps" not in st.options:
                raise LongRopeError(f"stage {st.name}: finetune needs length and steps")
            _finetune_config(recipe, st, ctx, Path("x"))
        elif st.kind == "compare":
            unknown = set(st.options) - COMPARE_KEYS
            if unknown:
                raise LongRopeError(f"stage {st.name}: unknown option(s) {', '.join(sorted(unknown))}")
        elif st.kind == "export":
            unknown = set(st.options) - {"drop_n_hat", "drop_short_attention"}
            if unknown:
                raise LongRopeError(f"stage {st.name}: unknown option(s) {', '.join(sorted(unknown))}")
            if not seen_search:
                raise LongRopeError(f"stage {st.name}: export needs an earlier search")


# -- running ---------------------------------------------------------------------------------
def _marker(out: Path, stage: Stage) -> Path:
    return out / stage.name / "done.json"


def run(recipe: Recipe, out: str | Path, *, resume: bool = False, log: Callable[[str], None] = print,
        model: str | None = None, data: str | None = None) -> dict:
    """Run the recipe's stages in order under `out`; returns the final context."""
    out = Path(out)
    if model:
        recipe.model = model
    if data:
        recipe.data = data
    plan_file = out / "recipe.json"
    if out.exists() and any(out.iterdir()) and not resume:
        raise LongRopeError(f"{out} is not empty; pass --resume to continue it or choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json(plan_file, {"recipe": dataclasses.asdict(recipe)})
    ctx: dict[str, Any] = {"model": recipe.model, "scaling": None, "original": None}
    for stage in recipe.stages:
        marker = _marker(out, stage)
        if marker.is_file():
            ctx.update(json.loads(marker.read_text())["context"])
            log(f"[{stage.name}] done earlier, skipped")
            continue
        work = out / stage.name
        started = work.exists()
        work.mkdir(parents=True, exist_ok=True)
        log(f"[{stage.name}] {'resuming' if started else 'starting'}")
        t0 = time.time()
        summary = RUNNERS[stage.kind](recipe, stage, ctx, work, started and resume, log)
        write_json(marker, {"stage": stage.name, "seconds": time.time() - t0, "context": ctx,
                            "summary": summary})
        log(f"[{stage.name}] finished in {time.time() - t0:.0f} s")
    return ctx


def _run_search(recipe, stage, ctx, work, resume, log):
    from . import models
    from .patch import rope_dims
    from .search.runner import run_search
    if ctx.get("original") is None:
        ctx["original"] = rope_dims(models.load_model(ctx["model"]))[2]
    cfg = _search_config(recipe, stage, ctx)
    summary = run_search(cfg, work, resume=resume and (work / "state.json").is_file())
    ctx["scaling"] = str(work / "factors.json")
    log(f"[{stage.name}] best perplexity {summary['ppl']:.3f}; baselines "
        + ", ".join(f"{k} {v:.3f}" for k, v in summary["baselines"].items()))
    return summary


def _run_finetune(recipe, stage, ctx, work, resume, log):
    from .train.finetune import finetune
    cfg = _finetune_config(recipe, stage, ctx, work)
    summary = finetune(cfg, resume=resume and Path(cfg.work).exists())
    ctx["model"] = cfg.out
    return summary


def _run_export(recipe, stage, ctx, work, resume, log):
    from .exporter import export
    path = export(ctx["model"], f"longrope:{ctx['scaling']}", work / "model",
                  drop_n_hat=bool(stage.options.get("drop_n_hat", False)),
                  drop_short_attention=bool(stage.options.get("drop_short_attention", False)))
    ctx["exported"] = str(path)
    log(f"[{stage.name}] wrote {path}")
    return {"model": str(path)}


def _run_compare(recipe, stage, ctx, work, resume, log):
    """Baselines and the found factors on the same data. `baselines_on: initial` scores the
    baselines on the recipe's starting model (what a user would otherwise run), the found factors
    on the final (fine-tuned) model; the default scores everything on the final model."""
    from .commands.compare import write_outputs
    from .eval.compare import compare
    from .eval.report import ppl_table
    from .models import load_model, load_tokenizer
    opts = dict(stage.options)
    plots = opts.pop("plots", True)
    where = opts.pop("baselines_on", "final")
    if where not in ("initial", "final"):
        raise LongRopeError(f"stage {stage.name}: baselines_on must be 'initial' or 'final'")
    methods = list(opts.pop("methods", ["none", "pi", "ntk", "dynamic", "yarn"]))
    ours = [f"longrope:{ctx['scaling']}"] if ctx.get("scaling") else []
    lengths = opts.pop("lengths")
    runs = [(ctx["model"], methods + ours)]
    if where == "initial" and recipe.model != ctx["model"]:
        runs = [(recipe.model, methods), (ctx["model"], ["none"] + ours)]
    results: dict = {}
    for i, (model_name, names) in enumerate(runs):
        model, tok = load_model(model_name), load_tokenizer(model_name)
        part = compare(model, tok, names, lengths, data=recipe.data, seed=recipe.seed, log=log, **opts)
        if i == 0:
            results = part
            results["meta"]["models"] = {m: model_name for m in names}
            continue
        for key in ("ppl", "passkey", "passkey_depth", "short_ppl", "ppl_detail"):
            for m, v in part.get(key, {}).items():
                label = m if m != "none" else "none (final model)"
                results.setdefault(key, {})[label] = v
        for m in names:
            results["meta"]["models"][m if m != "none" else "none (final model)"] = model_name
        base = results["short"]["unscaled_ppl"]
        results["short"]["relative_cost"] = {m: v / base - 1 for m, v in results["short_ppl"].items()}
    if ours:
        _rename(results, ours[0], "longrope")
        results["meta"]["longrope_factors"] = ctx["scaling"]
    results["meta"]["recipe"] = recipe.name
    write_outputs(results, work, plots=plots)
    ctx["report"] = str(work / "report.md")
    log(ppl_table(results))
    return {"report": str(work / "report.md")}


def _rename(results: dict, old: str, new: str) -> None:
    """Show the found factors as `new` instead of their long `longrope:PATH` spec."""
    for key in ("ppl", "passkey", "passkey_depth", "short_ppl", "ppl_detail"):
        if old in results.get(key, {}):
            results[key][new] = results[key].pop(old)
    short = results.get("short", {}).get("relative_cost", {})
    if old in short:
        short[new] = short.pop(old)
    for key in ("methods", "models"):
        table = results["meta"].get(key, {})
        if old in table:
            table[new] = table.pop(old)


RUNNERS = {"search": _run_search, "short": _run_search, "finetune": _run_finetune,
           "export": _run_export, "compare": _run_compare}
