"""`longrope search` as a library call: prepare the run, score the baselines, descend, evolve, finish.

The outputs (`search/state.py`) are written atomically after every generation (rank 0 only under
torchrun), so a run killed at any moment resumes from its last generation and ends exactly as an
uninterrupted one. Until the search is done the best factors so far are `factors.partial.json`
(and state.json says `"done": false`); `factors.json` is written only at the end, then the output
folder's marker is set finished, then search.png is drawn (when matplotlib is installed).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..errors import LongRopeError
from ..io import mark_finished
from .config import SearchConfig
from .evolution import Result, evolve
from .longrope2 import WIDE_PREFIX
from .setup import CARRIED, DESCENT, SearchRun, prepare, with_short
from .space import Candidate
from .state import FORMAT, best_of, write_state


def run_search(cfg: SearchConfig | None, out: str | Path, *, resume: bool = False, progress: bool = True,
               model=None, tokenizer=None, cache="auto") -> dict:
    """Run (or resume) a search; returns a summary. `model`/`tokenizer` may be passed pre-loaded.
    With `resume`, the settings come from OUT/state.json (`cfg` may be None, or give the device).
    `cache`: the score cache folder shared across runs ("auto": `search.cache.default_dir()`;
    None: off); it changes no result, only how many forward passes are run."""
    run = prepare(cfg, out, resume, progress=progress, model=model, tokenizer=tokenizer, cache=cache)
    score_baselines(run)
    run_descent(run)
    result = run_evolution(run)
    return finish(run, result)


def score_baselines(run: SearchRun) -> None:
    """The exact methods the seeds come from, scored as they are (a fresh search only), then the
    screening samples, which may be chosen by how the baselines differ on them."""
    cfg, w = run.cfg, run.window
    if run.baselines is None:
        from ..rope.scaling import Scaling

        # the carried seed and LongRoPE2's wide seeds are no method: scored in generation 0
        names = [n for n in run.seeds if n not in (CARRIED, DESCENT) and not n.startswith(WIDE_PREFIX)]
        if w.long is not None:
            ones = [1.0] * (w.dim // 2)
            exact = [with_short(w.long, ones), w.long]
            if cfg.search_attention_scale:  # the unscaled model itself: ones at scale 1
                names.append("unscaled")
                exact.append(with_short(w.long, ones, 1.0))
        else:
            exact = [Scaling(method=n, factor=w.scale) for n in names]
        run.baselines = dict(zip(names, run.objective.score_many(list(zip(exact, names)))))
    if cfg.screen_docs:
        from .fidelity import pick_screen
        run.objective.screen_samples = run.screen_samples or \
            pick_screen(run.objective, list(run.baselines), cfg.screen_docs, cfg.screen_pick)


def run_descent(run: SearchRun) -> None:
    """The descent phase (`--descent-steps`) from the carried seed when there is one, else from the
    best baseline's seed; its best point joins the seeds. A resumed run keeps its saved descent."""
    run.t0 = time.time()  # the run's seconds include its descent (one cut short and resumed: this part)
    if run.cfg.descent_steps and run.descent is None:
        from .gradient import descent_phase

        seeds = run.seeds
        start = seeds[CARRIED] if CARRIED in seeds else seeds[min(run.baselines, key=run.baselines.get)]
        run.descent = descent_phase(run, start)
    if run.descent:
        run.seeds[DESCENT] = np.asarray(run.descent["factors"], dtype=np.float64)


def run_evolution(run: SearchRun) -> Result:
    """The evolution from the seeds (or the saved state), the outputs written after every generation."""
    cfg, objective = run.cfg, run.objective
    record = _recorder(run)
    result = evolve(objective.fitness(), run.space, cfg.evolution(), seeds=run.seeds,
                    screen=objective.fitness(cfg.screen_docs) if cfg.screen_docs else None,
                    state=run.evolution_state, on_generation=record)
    record(result.state, done=True)
    run.bar.close()
    return result


def finish(run: SearchRun, result: Result) -> dict:
    """The cost report (every process's passes), the distributed teardown (only by the run that joined
    the group), the non-finite check and the summary."""
    from .cost import run_cost

    cfg, w, prior = run.cfg, run.window, run.prior
    passes, hits = run.objective.counts()
    cost = run_cost(cfg, result.evaluations, result.screened, prior.forward_passes + passes,
                    prior.cache_hits + hits, (run.descent or {}).get("passes", 0))
    if run.world > 1:
        import torch.distributed as dist
        dist.barrier()  # no process leaves before rank 0 has written the outputs
        if run.owns_group:
            dist.destroy_process_group()
    if not math.isfinite(result.score):
        raise LongRopeError("every candidate scored a non-finite perplexity; check the model and data")
    return {"best": result.best.to_json(), "ppl": result.score, "baselines": run.baselines,
            "evaluations": result.evaluations, "screened": result.screened,
            "generations": result.generations, "stopped_early": result.stopped_early,
            "critical_dim": run.critical_dim, "scale": w.scale, "original": w.original, "rank": run.rank,
            "world": run.world, "forward_passes": passes, "cache_hits": hits,
            "cost": cost, "descent": run.descent,
            "cache": str(run.store.path) if run.store is not None else None,
            "seconds": prior.seconds + time.time() - run.t0}


def _recorder(run: SearchRun):
    """The per-generation callback: progress on every rank; on rank 0 the outputs and state.json,
    and at the end the finished marker and the figure."""
    cfg, w, objective, prior = run.cfg, run.window, run.objective, run.prior
    info = {"descent": run.descent, "screen_samples": objective.screen_samples, "rotary_dim": w.dim,
            "base": w.base, "original": w.original, "scale": w.scale, "world": run.world,
            "critical_dim": run.critical_dim, "samples": len(run.samples), "sample_length": cfg.target_length,
            "answer_positions": [run.terms[-1][0], run.terms[-1][1]] if run.terms else None,
            "loss_terms": [list(t) for t in run.terms] if run.terms else None,
            "short_of": w.long.to_dict() if w.long is not None else None, "documents": run.documents}

    def record(evo: dict, done: bool = False) -> None:
        run.bar.generation(evo)
        passes, hits = objective.counts()  # every rank takes part
        if run.rank != 0:
            return
        doc = {"format": FORMAT, "config": asdict(cfg), "info": info, "baselines": run.baselines,
               "seeds": {k: v.tolist() for k, v in run.seeds.items()}, "done": done,
               "seconds": prior.seconds + time.time() - run.t0,
               "scored_here": passes,  # this run's, every process (the key's name predates the cache)
               "forward_passes": prior.forward_passes + passes,  # every process, every run
               "cache_hits": prior.cache_hits + hits,
               "evolution": evo}
        best = best_of(doc)
        write_state(run.out, doc, _factors(run, evo, best), final=done)
        if done:  # results first, then the marker, then the optional figure
            mark_finished(run.out)
            from .plot import have_matplotlib, plot_search
            if have_matplotlib():  # without it the search said so up front; a finished search is not an error
                plot_search(run.out / "search.png", doc, best)

    return record


def _factors(run: SearchRun, evo: dict, best: Candidate):
    """The `Scaling` the best candidate stands for (what factors.json holds), with its provenance."""
    from ..rope.scaling import Scaling

    cfg, w, ppl = run.cfg, run.window, evo["history"][-1]["best_score"]
    if w.long is not None:
        out = run.short_scaling(best)
        out.provenance = dict(w.long.provenance, short_search={
            "model": cfg.model, "length": cfg.target_length, "docs": cfg.docs, "seed": cfg.seed, "ppl": ppl,
            "baselines": run.baselines})
        return out
    return Scaling(method="longrope", long_factor=list(best.factors), n_hat=int(best.n_hat),
                   original_max_position=w.original, target_length=cfg.target_length, factor=w.scale,
                   attention=best.attn if cfg.search_attention_scale else "su",
                   provenance={"tool": "longrope search", "model": cfg.model, "data": cfg.data,
                               "split": cfg.split, "docs": cfg.docs, "objective": cfg.objective,
                               "preset": cfg.preset, "seed": cfg.seed, "ppl": ppl, "baselines": run.baselines,
                               "critical_dim": run.critical_dim, "generation": evo["generation"],
                               "attention_scale": best.attn})
