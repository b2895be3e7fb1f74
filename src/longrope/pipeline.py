"""`longrope extend`: run a YAML recipe of stages (search, finetune, short, export, compare).

Each stage works in DIR/NN-kind/ and, when finished, writes DIR/NN-kind/done.json holding what
later stages need (the typed `Context`: current model folder, current factor file, ...).
`--resume` skips stages with a marker and resumes an interrupted one from its own checkpoint
(search state.json, finetune checkpoints), but only when DIR/recipe.json's fingerprint (the
recipe, the model's and the data's identities) matches this run's; a mismatch is refused.

Under `torchrun` / `accelerate launch` every rank runs the loop in one process group for the whole
recipe (`processes.Group`: joined here, left here; the search and finetune stages use it and leave
it alone). Search and finetune run on every rank (they share the work); the folder's lock and
marker, recipe.json, the stage markers, export and compare are rank 0's, and the others wait for it.

Each stage's options are its component's config dataclass (SearchConfig, FinetuneConfig,
ExportConfig, CompareConfig); `validate` builds and checks all of them, and the stages against each
other, before the first stage runs. `device`/`dtype` at the recipe's top level apply to every stage
that loads a model (a stage's own value wins; `extend --device/--dtype` wins over both).

The recipe file, its checks and the stages' configs: recipe.py.
"""
from __future__ import annotations

import dataclasses
import json
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .errors import LongRopeError
from .io import write_json
from .recipe import (Context, ExportConfig, Recipe, Stage, check_data, compare_config, finetune_config, prepare,
                     recipe_doc, runtime, search_config, window_of)
from .schema import build

FORMAT = "longrope-extend/2"
KIND = "extend"  # the kind of an extend folder's marker (io.prepare_output)


# -- running ---------------------------------------------------------------------------------
def run(recipe: Recipe, out: str | Path, *, resume: bool = False, log: Callable[[str], None] = print,
        model: str | None = None, data: str | None = None, device: str | None = None,
        dtype: str | None = None, trust_remote_code: bool = False) -> Context:
    """Run the recipe's stages in order under `out` (locked while it runs); returns the final context.
    The keyword arguments are extend's flags (recipe.prepare). Under a launcher every rank runs this:
    one process group for the whole recipe (`processes.Group`), rank 0 writes."""
    from .fingerprint import run_fingerprint
    from .io import LOCK, mark_finished
    from .processes import Group
    out = Path(out)
    prepare(recipe, model=model, data=data, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    check_data(recipe)
    cuda = _check_devices_here(recipe)
    stages_doc = {k: v for k, v in recipe_doc(recipe).items() if k not in ("model", "data")}
    fingerprint = run_fingerprint(stages_doc, recipe.model, recipe.data)  # model, data: by identity
    group = Group.join(cuda)
    log = log if group.main else (lambda msg: None)
    fresh = group.agree(not (out.is_dir() and any(p.name != LOCK for p in out.iterdir())))
    if not fresh and not resume:
        raise LongRopeError(f"{out} is not empty; pass --resume to continue it or choose a new --out")
    with _claim(out, group, resume=not fresh):  # the lock: one run at a time
        if not fresh:
            _check_resume(out, fingerprint)
        elif group.main:
            write_json(out / "recipe.json", {"format": FORMAT, "recipe": recipe_doc(recipe),
                                             "fingerprint": fingerprint})
        group.wait()
        if recipe.original_window:  # every stage, the export and compare's baselines see that window
            from .models import with_window
            if group.main:  # a copy of the config (the weights linked) that rank 0 writes, the others read
                with_window(recipe.model, recipe.original_window, out / "base-model")
            group.wait()
            recipe.model = str(out / "base-model")
        ctx = Context(model=recipe.model)
        for stage in recipe.stages:
            _run_stage(recipe, stage, ctx, out, resume, log, group)
        if group.main:
            mark_finished(out)
    group.leave()
    return ctx


@contextmanager
def _claim(out: Path, group, *, resume: bool) -> Iterator[None]:
    """Rank 0 takes the folder (`io.prepare_output`: its marker and lock; the other ranks take
    nothing, so no rank waits on a lock another holds) and tells the others whether it could: a
    refusal stops every rank with rank 0's line."""
    from .io import prepare_output
    with ExitStack() as held:
        refusal = None
        try:
            held.enter_context(prepare_output(out, kind=KIND, resume=resume, adopt="recipe.json"))
        except LongRopeError as e:
            refusal = str(e)
        refusal = group.agree(refusal)
        if refusal:
            raise LongRopeError(refusal)
        yield


# search and finetune share their work among the ranks; export and compare write files and nothing
# else, so rank 0 alone runs them and the others wait
SHARED = ("search", "short", "finetune")


def _run_stage(recipe: Recipe, stage: Stage, ctx: Context, out: Path, resume: bool, log, group) -> None:
    """One stage; every decision about the folder's state is rank 0's, so all ranks take the same path."""
    marker, work = _marker(out, stage), out / stage.name
    if group.agree(marker.is_file()):
        ctx.update(json.loads(marker.read_text())["context"])
        log(f"[{stage.name}] done earlier, skipped")
        return
    started, begun = group.agree((work.exists(), _begun(stage.kind, work)))
    if group.main:
        work.mkdir(parents=True, exist_ok=True)
    group.wait()
    log(f"[{stage.name}] {'resuming' if started else 'starting'}")
    t0 = time.time()
    summary = None
    if group.main or stage.kind in SHARED:
        summary = RUNNERS[stage.kind](recipe, stage, ctx, work, resume and begun, log)
    ctx.update(group.agree(ctx.to_json()))
    if group.main:
        write_json(marker, {"stage": stage.name, "seconds": time.time() - t0, "context": ctx.to_json(),
                            "summary": summary})
    group.wait()
    log(f"[{stage.name}] finished in {time.time() - t0:.0f} s")


def _begun(kind: str, work: Path) -> bool:
    """Whether an interrupted stage left something to resume from."""
    from .search.state import DESCENT_FILE
    if kind == "finetune":
        return (work / "work" / "checkpoint" / "state.json").is_file()
    if kind == "compare":
        return any(work.glob("part-*.json"))
    return kind in ("search", "short") and ((work / "state.json").is_file() or (work / DESCENT_FILE).is_file())


def _marker(out: Path, stage: Stage) -> Path:
    return out / stage.name / "done.json"


def _check_devices_here(recipe: Recipe) -> bool:
    """A stage asking for CUDA on a machine without it fails now, not after the stages before it.
    Returns whether any stage runs on CUDA."""
    import torch
    cuda = False
    for st in recipe.stages:
        device = runtime(recipe, st, ("device",)).get("device")
        if device and str(device).startswith("cuda") and not torch.cuda.is_available():
            raise LongRopeError(f"stage {st.name} needs device {device!r}, but this torch has no CUDA "
                                "device; pass --device cpu or run it on a GPU machine")
        cuda = cuda or bool(device and str(device).startswith("cuda"))
    return cuda


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


def _run_search(recipe, stage, ctx: Context, work, resume, log):
    from .search.runner import run_search
    if ctx.original is None:
        ctx.original = window_of(ctx.model, trust_remote_code=bool(recipe.overrides.get("trust_remote_code")))
    cfg = search_config(recipe, stage, ctx)
    summary = run_search(cfg, work, resume=resume)
    ctx.scaling = str(work / "factors.json")
    log(f"[{stage.name}] best perplexity {summary['ppl']:.3f}; baselines "
        + ", ".join(f"{k} {v:.3f}" for k, v in summary["baselines"].items()))
    return summary


def _run_finetune(recipe, stage, ctx: Context, work, resume, log):
    from .train.finetune import finetune
    cfg = finetune_config(recipe, stage, ctx, work)
    summary = finetune(cfg, resume=resume)
    ctx.model = cfg.out
    return summary


def _run_export(recipe, stage, ctx: Context, work, resume, log):
    from .exporter import export
    cfg = build(ExportConfig, f"stage {stage.name}", **stage.options)
    path = export(ctx.model, f"longrope:{ctx.scaling}", work / "model", drop_n_hat=cfg.drop_n_hat,
                  drop_short_attention=cfg.drop_short_attention,
                  trust_remote_code=bool(recipe.overrides.get("trust_remote_code")))
    ctx.exported = str(path)
    log(f"[{stage.name}] wrote {path}")
    return {"model": str(path)}


def _drops_nothing(exported: Path) -> bool:
    """The export holds the found factors whole (nothing dropped): the shipped model is the
    `longrope` row, scored once (transformers' own longrope equals ours: `check-runtime`)."""
    try:
        record = json.loads((exported / "longrope_scaling.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("dropped") == {}


def _run_compare(recipe, stage, ctx: Context, work, resume, log):
    """Baselines and the found factors on the same data. `baselines_on: initial` scores the
    baselines on the recipe's starting model (what a user would otherwise run), the found factors
    on the final (fine-tuned) model; the default scores everything on the final model. After an
    export stage the exported folder is scored too, as stock transformers loads it: `shipped`."""
    from .eval.outputs import write_outputs
    from .eval.report import ppl_table
    cfg = dataclasses.replace(compare_config(recipe, stage), shipped=False)
    remote = bool(recipe.overrides.get("trust_remote_code"))
    ours = [f"longrope:{ctx.scaling}"] if ctx.scaling else []
    runs = [(ctx.model, cfg.methods + ours, {})]
    if cfg.baselines_on == "initial" and recipe.model != ctx.model:
        final = ours + [m for m in cfg.final_methods if m not in ours]
        runs = [(recipe.model, cfg.methods, {}),
                (ctx.model, final, {m: f"{m} (final model)" for m in final if m not in ours})]
    same = ctx.exported and _drops_nothing(Path(ctx.exported))
    if ctx.exported and not same:
        runs.append((ctx.exported, ["model"], {"model": "shipped"}))
    # the model holding the found factors is scored first: an interrupted stage has the row it is for
    first = next((i for i, (_, names, _) in enumerate(runs) if set(ours) & set(names)), 0)
    parts = {i: _compare_part(i + 1, runs[i][0], runs[i][1], cfg, work, resume, remote, log)
             for i in [first] + [j for j in range(len(runs)) if j != first]}
    result = parts[0]
    for i in range(1, len(runs)):
        result.merge(parts[i], runs[i][2])
    if ours:
        result.rename(ours[0], "longrope")
        result.meta["longrope_factors"] = ctx.scaling
    if ctx.exported and not same:
        result.methods["shipped"].spec = f"the exported folder {ctx.exported} in stock transformers"
        result.meta["shipped"] = [_shipped(ctx.exported, "longrope" if ours else None)]
    elif ctx.exported:
        result.meta["shipped"] = [{**_shipped(ctx.exported, None), "row": "longrope", "whole": True}]
    result.meta["recipe"] = recipe.name
    write_outputs(result, work, plots=cfg.plots)
    ctx.report = str(work / "report.md")
    log(ppl_table(result))
    return {"report": ctx.report}


def _compare_part(i: int, model_name: str, names: list[str], cfg, work: Path, resume: bool, remote: bool, log):
    """compare() of one model's methods. Each method is saved as it finishes (part-N.json), so a resumed
    stage scores only the methods it had not finished: on a CPU one method at 32k tokens costs an hour."""
    from .eval.compare import compare
    from .models import check_vocabulary, load_model, load_tokenizer
    path = work / f"part-{i}.json"
    key = _jsonable({"model": model_name, "methods": names, "config": dataclasses.asdict(cfg)})
    saved = _saved_part(path, key) if resume else None
    if saved is not None and saved[1]:
        log(f"  {model_name}: {', '.join(names)} kept from the interrupted run")
        return saved[0]
    model = load_model(model_name, dtype=cfg.dtype or "float32", device=cfg.device or "cpu", trust_remote_code=remote)
    tok = load_tokenizer(model_name, trust_remote_code=remote)
    check_vocabulary(model, tok, model_name)

    def keep(partial):
        write_json(path, {"key": key, "complete": False, "result": partial.to_json()})

    part = compare(model, tok, dataclasses.replace(cfg, methods=names), log=log, model_name=model_name,
                   saved=saved[0] if saved else None, on_method=keep)
    write_json(path, {"key": key, "complete": True, "result": part.to_json()})
    return part


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def _saved_part(path: Path, key: dict):
    """(CompareResult, complete) of an interrupted compare stage's part-N.json when it was written for
    the same model, methods and config; None otherwise (then the part is scored afresh)."""
    from .eval.results import CompareResult
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("key") != key:
        return None
    return CompareResult.from_json(doc["result"]), bool(doc.get("complete"))


def _shipped(folder: str, of: str | None) -> dict:
    """What the report says about the `shipped` row: the folder, the row it is the export of, and
    what the export dropped (from its longrope_scaling.json)."""
    from .io import read_json_object
    record = read_json_object(Path(folder) / "longrope_scaling.json")
    return {"row": "shipped", "of": of, "folder": folder,
            "dropped": {k: v["value"] for k, v in (record.get("dropped") or {}).items()}}


RUNNERS = {"search": _run_search, "short": _run_search, "finetune": _run_finetune,
           "export": _run_export, "compare": _run_compare}
