"""LongRoPE2's critical-dimension sweep: one search per value of `--critical-dim sweep` (or a list),
in one run, each in its own folder, and the best of them at the top.

    OUT/critical-26/   a complete search (factors.json, state.json, ...), resumable on its own
    OUT/critical-22/   ...
    OUT/sweep.json     the settings, each value's best score and folder, and the winner
    OUT/factors.json   the winner's factors (its provenance names the sweep)

The values are compared on their own validation score: every value's search scores the same samples
with the same objective. The model is loaded once and shared. `--resume` continues the values in
order: finished ones are read back (their search returns at once), the cut one continues, the rest
start.
"""
from __future__ import annotations

import math
from dataclasses import asdict, replace
from pathlib import Path

from ..errors import LongRopeError
from ..io import mark_finished, prepare_output, write_json
from .state import DESCENT_FILE, FILES, SWEEP_FILE, SWEEP_FORMAT


def sub_dir(out: Path, value: int) -> Path:
    return Path(out) / f"critical-{value}"


def run_sweep(cfg, out, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
              model=None, tokenizer=None, cache="auto") -> dict:
    """One `run_search` per critical dimension of `cfg.critical_dim`; returns the winner's summary
    with `sweep` (every value's score and folder) added."""
    import os

    from .. import patch
    from ..models import load_model, load_tokenizer
    from .longrope2 import critical_values
    from .runner import run_search

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # each search tears its process group down at the end
        raise LongRopeError("a critical-dimension sweep runs in one process; under torchrun, run one "
                            "search per --critical-dim value")
    out = Path(out)
    cfg = cfg.resolved()
    if model is None:
        model = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, trust_remote_code=cfg.trust_remote_code)
    if tokenizer is None:
        tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    dim, base, original = patch.rope_dims(model)
    values = critical_values(cfg.critical_dim, dim, base, original)
    runs, best = [], None
    for k in values:
        sub = sub_dir(out, k)
        again = resume and ((sub / "state.json").is_file() or (sub / DESCENT_FILE).is_file())
        with prepare_output(sub, kind="search", overwrite=overwrite, resume=again, clear=FILES, adopt="state.json"):
            s = run_search(replace(cfg, critical_dim=str(k)), sub, resume=again, progress=progress,
                           model=model, tokenizer=tokenizer, cache=cache)
        runs.append({"critical_dim": k, "out": sub.name, "ppl": s["ppl"], "generations": s["generations"],
                     "seconds": s["seconds"]})
        if best is None or _better(s["ppl"], best[1]["ppl"]):
            best = (k, s)
        _write(out, cfg, runs, best[0], done=False)
    k, summary = best
    _write(out, cfg, runs, k, done=True)
    return {**summary, "sweep": runs, "sweep_best": k}


def _better(a: float, b: float) -> bool:
    return math.isfinite(a) and (not math.isfinite(b) or a < b)


def _write(out: Path, cfg, runs: list[dict], best: int, *, done: bool) -> None:
    """sweep.json after every value; at the end the winner's factors at the top."""
    from ..rope.files import load_scaling

    doc = {"format": SWEEP_FORMAT, "config": asdict(cfg), "done": done, "values": runs, "best": best,
           "theoretical": runs[0]["critical_dim"] if cfg.critical_dim == "sweep" else None}
    write_json(out / SWEEP_FILE, doc)
    if done:
        sc = load_scaling(sub_dir(out, best) / "factors.json")
        sc.provenance = dict(sc.provenance, critical_sweep={str(r["critical_dim"]): r["ppl"] for r in runs},
                             sweep_best=best)
        sc.save(out / "factors.json")
        mark_finished(out)
