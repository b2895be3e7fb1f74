"""`longrope extend`: run a YAML recipe of stages (search, finetune, short, export, compare).

Each stage works in DIR/NN-kind/ and, when finished, writes DIR/NN-kind/done.json holding what
later stages need (the typed `Context`: current model folder, current factor file, ...).
`--resume` skips stages with a marker and resumes an interrupted one from its own checkpoint
(search state.json, finetune checkpoints), but only when DIR/recipe.json's fingerprint (the
recipe, the model's and the data's identities) matches this run's; a mismatch is refused.

Each stage's options are its component's config dataclass (SearchConfig, FinetuneConfig,
ExportConfig, CompareConfig); `validate` builds and checks all of them, and the stages against each
other, before the first stage runs. `device`/`dtype` at the recipe's top level apply to every stage
that loads a model (a stage's own value wins; `extend --device/--dtype` wins over both).

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
from .schema import build, check_types

RECIPES_DIR = Path(__file__).parent / "recipes"
KINDS = ("search", "short", "finetune", "export", "compare")
FORMAT = "longrope-extend/2"


@dataclass
class ExportConfig:
    drop_n_hat: bool = False
    drop_short_attention: bool = False


@dataclass
class Context:
    """What a stage hands to the next (saved in each stage's done.json)."""
    model: str                      # the current model folder (or 'builtin')
    scaling: str | None = None      # the current factor file
    original: int | None = None     # the model's pre-trained window
    exported: str | None = None     # the exported model folder
    report: str | None = None       # the comparison report

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def update(self, doc: dict) -> None:
        for f in dataclasses.fields(self):
            if f.name in doc:
                setattr(self, f.name, doc[f.name])


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
    device: str | None = None   # every stage's device unless the stage sets one
    dtype: str | None = None    # every stage's dtype (search, short, compare) unless the stage sets one
    overrides: dict[str, Any] = field(default_factory=dict)  # extend --device/--dtype (not a YAML key)


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
    known = {f.name for f in dataclasses.fields(Recipe)} - {"stages", "overrides"}
    unknown = set(doc) - known - {"stages"}
    if unknown:
        raise LongRopeError(f"{path}: unknown recipe key(s) {', '.join(sorted(unknown))}")
    recipe = Recipe(stages=stages, **{k: v for k, v in doc.items() if k in known and k != "name"},
                    name=doc.get("name", path.stem))
    check_types(recipe, str(path))
    validate(recipe)
    return recipe


# -- per-stage configs -----------------------------------------------------------------------
def _runtime(recipe: Recipe, stage: Stage, keys=("device", "dtype")) -> dict:
    """device/dtype for a stage: extend's override > the stage's own > the recipe's top level."""
    out = {}
    for k in keys:
        v = recipe.overrides.get(k) or stage.options.get(k) or getattr(recipe, k)
        if v is not None:
            out[k] = v
    return out


def _search_config(recipe: Recipe, stage: Stage, ctx: Context):
    from .search.config import SearchConfig
    opts = {**stage.options, **_runtime(recipe, stage)}
    if stage.kind == "short":
        opts.setdefault("short_of", ctx.scaling)
        opts.setdefault("target_length", ctx.original or 1)
    if opts.get("seed_from") == "previous":  # progressive: seed with the last stage's factors, carried
        opts["seed_from"] = ctx.scaling
    return build(SearchConfig, f"stage {stage.name}", model=ctx.model, data=recipe.data, seed=recipe.seed,
                 **opts)


def _finetune_config(recipe: Recipe, stage: Stage, ctx: Context, out: Path):
    from .train.finetune import FinetuneConfig
    opts = {**stage.options, **_runtime(recipe, stage, ("device",))}
    scaling = opts.pop("scaling", None) or (f"longrope:{ctx.scaling}" if ctx.scaling else "none")
    return build(FinetuneConfig, f"stage {stage.name}", out=str(out / "model"), work=str(out / "work"),
                 model=ctx.model, scaling=scaling, data=recipe.data, seed=recipe.seed, **opts)


def _compare_config(recipe: Recipe, stage: Stage):
    from .eval.compare import CompareConfig
    return build(CompareConfig, f"stage {stage.name}", data=recipe.data, seed=recipe.seed,
                 **{**stage.options, **_runtime(recipe, stage)}).validated(f"stage {stage.name}")


def _check_runtime(where: str, device: str | None, dtype: str | None) -> None:
    import torch

    from .models import torch_dtype
    if dtype is not None and dtype != "auto":
        try:
            torch_dtype(dtype)
        except LongRopeError as e:
            raise LongRopeError(f"{where}: {e}") from None
    if device is not None:
        try:
            torch.device(device)
        except (RuntimeError, TypeError):
            raise LongRopeError(f"{where}: unknown device {device!r}; use cpu, cuda or cuda:N") from None


def _named(where: str, check: Callable):
    """A component's own check, its one-line error prefixed with the stage."""
    try:
        return check()
    except LongRopeError as e:
        raise LongRopeError(f"{where}: {e}") from None


def validate(recipe: Recipe) -> None:
    """Every stage's options as its config dataclass (types and values), and the stages against each
    other, checked without loading anything."""
    ctx = Context(model=recipe.model, scaling="factors.json", original=2)  # placeholders: nothing is loaded
    search_n_hat: tuple[str, bool] | None = None  # (stage, searches n_hat) of the factors export will get
    short_attention: str | None = None
    _check_runtime("recipe", recipe.device, recipe.dtype)
    _check_runtime("extend", recipe.overrides.get("device"), recipe.overrides.get("dtype"))
    for st in recipe.stages:
        where = f"stage {st.name}"
        _check_runtime(where, st.options.get("device"), st.options.get("dtype"))
        if st.kind in ("search", "short"):
            if st.kind == "search" and "target_length" not in st.options:
                raise LongRopeError(f"{where}: search needs target_length")
            if st.kind == "short" and search_n_hat is None:
                raise LongRopeError(f"{where}: a short search needs an earlier search")
            if st.options.get("seed_from") == "previous" and search_n_hat is None:
                raise LongRopeError(f"{where}: seed_from: previous needs an earlier search")
            cfg = _named(where, _search_config(recipe, st, ctx).resolved)
            if st.kind == "search":
                search_n_hat = (st.name, cfg.search_n_hat)
            short_attention = st.name if st.kind == "short" and cfg.search_attention_scale else None
        elif st.kind == "finetune":
            if "length" not in st.options or "steps" not in st.options:
                raise LongRopeError(f"{where}: finetune needs length and steps")
            _named(where, _finetune_config(recipe, st, ctx, Path("x")).validate)
        elif st.kind == "compare":
            cfg = _compare_config(recipe, st)
            if cfg.plots:
                from .eval.report import require_plots
                require_plots()
        elif st.kind == "export":
            cfg = build(ExportConfig, where, **st.options)
            if search_n_hat is None:
                raise LongRopeError(f"{where}: export needs an earlier search")
            if search_n_hat[1] and not cfg.drop_n_hat:
                raise LongRopeError(
                    f"{where}: drop_n_hat is false but stage {search_n_hat[0]} searches n_hat (search_n_hat "
                    "defaults to true), so the export would refuse its factors at the end; set "
                    f"drop_n_hat: true here or search_n_hat: false in {search_n_hat[0]}")
            if short_attention and not cfg.drop_short_attention:
                raise LongRopeError(
                    f"{where}: drop_short_attention is false but stage {short_attention} searches a short "
                    "attention scale, which the stock format cannot hold; set drop_short_attention: true "
                    f"here or search_attention_scale: false in {short_attention}")


def window_of(model: str) -> int:
    """The model's pre-trained window, read from its config (no weights are loaded)."""
    from transformers import AutoConfig

    from .models import resolve, rope_config
    path = resolve(model)
    try:
        cfg = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise LongRopeError(f"cannot read the config of {path}: {str(e).splitlines()[0]}") from None
    return rope_config(cfg)[2]


# -- running ---------------------------------------------------------------------------------
def _marker(out: Path, stage: Stage) -> Path:
    return out / stage.name / "done.json"


def _check_devices_here(recipe: Recipe) -> None:
    """A stage asking for CUDA on a machine without it fails now, not after the stages before it."""
    import torch
    for st in recipe.stages:
        device = _runtime(recipe, st, ("device",)).get("device")
        if device and str(device).startswith("cuda") and not torch.cuda.is_available():
            raise LongRopeError(f"stage {st.name} needs device {device!r}, but this torch has no CUDA "
                                "device; pass --device cpu or run it on a GPU machine")


def recipe_doc(recipe: Recipe) -> dict:
    doc = dataclasses.asdict(recipe)
    doc.pop("overrides")
    return doc


def _check_resume(out: Path, fingerprint: dict) -> None:
    """A folder is resumed only by the run that made it: same recipe, model and data."""
    from .fingerprint import mismatch
    plan_file = out / "recipe.json"
    try:
        saved = json.loads(plan_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise LongRopeError(f"{out} has no readable recipe.json: not a longrope extend run; choose a new "
                            "--out") from None
    if not isinstance(saved, dict) or "fingerprint" not in saved:
        raise LongRopeError(f"{out} was made by an older longrope without a run fingerprint; it cannot be "
                            "checked, so it is not resumed: remove it or choose a new --out")
    what = mismatch(saved["fingerprint"], fingerprint)
    if what:
        raise LongRopeError(f"{out} was made with a different {what} than this run "
                            f"(recipe {saved.get('recipe', {}).get('name', '?')!r}); refusing to resume: "
                            "remove it or choose a new --out")


def run(recipe: Recipe, out: str | Path, *, resume: bool = False, log: Callable[[str], None] = print,
        model: str | None = None, data: str | None = None, device: str | None = None,
        dtype: str | None = None) -> Context:
    """Run the recipe's stages in order under `out`; returns the final context."""
    from .fingerprint import run_fingerprint
    out = Path(out)
    recipe.model = model or recipe.model
    recipe.data = data or recipe.data
    recipe.overrides = {k: v for k, v in (("device", device), ("dtype", dtype)) if v}
    validate(recipe)
    _check_devices_here(recipe)
    stages_doc = {k: v for k, v in recipe_doc(recipe).items() if k not in ("model", "data")}
    fingerprint = run_fingerprint(stages_doc, recipe.model, recipe.data)  # model, data: by identity
    fresh = not (out.exists() and any(out.iterdir()))
    if not fresh and not resume:
        raise LongRopeError(f"{out} is not empty; pass --resume to continue it or choose a new --out")
    if not fresh:
        _check_resume(out, fingerprint)
    out.mkdir(parents=True, exist_ok=True)
    if fresh:
        write_json(out / "recipe.json", {"format": FORMAT, "recipe": recipe_doc(recipe),
                                         "fingerprint": fingerprint})
    ctx = Context(model=recipe.model)
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
        write_json(marker, {"stage": stage.name, "seconds": time.time() - t0, "context": ctx.to_json(),
                            "summary": summary})
        log(f"[{stage.name}] finished in {time.time() - t0:.0f} s")
    return ctx


def _run_search(recipe, stage, ctx: Context, work, resume, log):
    from .search.runner import run_search
    from .search.state import DESCENT_FILE
    if ctx.original is None:
        ctx.original = window_of(ctx.model)
    cfg = _search_config(recipe, stage, ctx)
    begun = (work / "state.json").is_file() or (work / DESCENT_FILE).is_file()
    summary = run_search(cfg, work, resume=resume and begun)
    ctx.scaling = str(work / "factors.json")
    log(f"[{stage.name}] best perplexity {summary['ppl']:.3f}; baselines "
        + ", ".join(f"{k} {v:.3f}" for k, v in summary["baselines"].items()))
    return summary


def _run_finetune(recipe, stage, ctx: Context, work, resume, log):
    from .train.finetune import finetune
    cfg = _finetune_config(recipe, stage, ctx, work)
    summary = finetune(cfg, resume=resume and Path(cfg.work).exists())
    ctx.model = cfg.out
    return summary


def _run_export(recipe, stage, ctx: Context, work, resume, log):
    from .exporter import export
    cfg = build(ExportConfig, f"stage {stage.name}", **stage.options)
    path = export(ctx.model, f"longrope:{ctx.scaling}", work / "model", drop_n_hat=cfg.drop_n_hat,
                  drop_short_attention=cfg.drop_short_attention)
    ctx.exported = str(path)
    log(f"[{stage.name}] wrote {path}")
    return {"model": str(path)}


def _run_compare(recipe, stage, ctx: Context, work, resume, log):
    """Baselines and the found factors on the same data. `baselines_on: initial` scores the
    baselines on the recipe's starting model (what a user would otherwise run), the found factors
    on the final (fine-tuned) model; the default scores everything on the final model."""
    from .eval.compare import compare
    from .eval.outputs import write_outputs
    from .eval.report import ppl_table
    from .models import load_model, load_tokenizer
    cfg = _compare_config(recipe, stage)
    ours = [f"longrope:{ctx.scaling}"] if ctx.scaling else []
    runs = [(ctx.model, cfg.methods + ours, {})]
    if cfg.baselines_on == "initial" and recipe.model != ctx.model:
        runs = [(recipe.model, cfg.methods, {}), (ctx.model, ["none"] + ours, {"none": "none (final model)"})]
    result = None
    for model_name, names, relabel in runs:
        model = load_model(model_name, dtype=cfg.dtype or "float32", device=cfg.device or "cpu")
        part = compare(model, load_tokenizer(model_name), dataclasses.replace(cfg, methods=names), log=log,
                       model_name=model_name)
        del model
        if result is None:
            result = part
        else:
            result.merge(part, relabel)
    if ours:
        result.rename(ours[0], "longrope")
        result.meta["longrope_factors"] = ctx.scaling
    result.meta["recipe"] = recipe.name
    write_outputs(result, work, plots=cfg.plots)
    ctx.report = str(work / "report.md")
    log(ppl_table(result))
    return {"report": ctx.report}


RUNNERS = {"search": _run_search, "short": _run_search, "finetune": _run_finetune,
           "export": _run_export, "compare": _run_compare}
