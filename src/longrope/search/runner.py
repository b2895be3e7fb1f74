"""`longrope search` as a library call: load the model and data, build the space and the objective,
run the evolution, and keep DIR/{state.json, history.jsonl, factors.json, search.png} current.

Every output is written atomically after every generation (rank 0 only under torchrun), so a run
killed at any moment resumes from its last generation and ends exactly as an uninterrupted one.
Until the search is done the best factors so far are `factors.partial.json` (and state.json says
`"done": false`); `factors.json` is written only at the end, then the output folder's marker is set
finished, then search.png is drawn (when matplotlib is installed).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import LongRopeError
from ..io import mark_finished, write_json, write_text
from .evolution import PRESETS, evolve
from .setup import (CARRIED, DESCENT, DESCENT_FILE, WHERE, Window, _Progress, _samples, _short_attn, _space_and_seeds,
                    _window, _with_short, before_hold)
from .space import Candidate, Space

FORMAT = "longrope-search/1"
PARTIAL = "factors.partial.json"  # the best factors so far of an unfinished search
SEARCH_KEYS = ("population", "iterations", "parents", "mutations", "crossovers", "mutation_prob",
               "screen_docs", "promote", "patience", "descent_steps", "descent_hold")


@dataclass
class SearchConfig:
    target_length: int
    model: str = "builtin"
    data: str | None = None
    split: str = "validation"
    docs: int = 5
    seed: int = 0
    preset: str = "fast"
    population: int | None = None
    iterations: int | None = None
    parents: int | None = None
    mutations: int | None = None
    crossovers: int | None = None
    mutation_prob: float | None = None
    screen_docs: int | None = None
    promote: float | None = None
    patience: int | None = None
    screen_pick: str = "first"  # which samples screen: first | spread (search/fidelity.py)
    step: float = 0.01
    search_n_hat: bool = True
    search_attention_scale: bool = False
    objective: str = "ppl"
    critical_dim: str | None = None
    short_of: str | None = None  # a long-factor file: search its short factors (target <= window)
    seed_from: str | None = None  # a factor file of an earlier stage: its factors, carried to this scale, seed
    descent_steps: int | None = None  # gradient steps before the evolution (search/descent.py)
    descent_hold: float | None = None  # share of the highest-frequency pairs the descent leaves at the start
    descent_lr: float = 0.05  # its Adam learning rate on log factors, cosine-decayed to descent_lr_end
    descent_lr_end: float = 0.005
    sample_mode: str = "auto"
    dtype: str = "float32"
    device: str = "cpu"
    chunk: int = 1024
    trust_remote_code: bool = False

    def resolved(self) -> "SearchConfig":
        """Preset values filled in where no explicit value was given; values checked. Idempotent.
        `screen_docs` and `patience` 0 (or None after resolving) mean off."""
        if self.preset not in PRESETS:
            raise LongRopeError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        p = asdict(PRESETS[self.preset])
        kw = asdict(self)
        for k in SEARCH_KEYS:
            if kw[k] is None:
                kw[k] = p[k]
        c = SearchConfig(**kw)
        if c.target_length < 2 or c.docs < 1:
            raise LongRopeError("--target-length and --docs must be positive")
        if min(c.population, c.parents) < 1 or min(c.iterations, c.mutations, c.crossovers) < 0:
            raise LongRopeError("population and parents must be >= 1, the other counts >= 0")
        if c.parents > c.population:
            raise LongRopeError(f"--parents ({c.parents}) cannot exceed --population ({c.population})")
        if not 0 <= c.mutation_prob <= 1 or not 0 < c.promote <= 1 or not c.step > 0:
            raise LongRopeError("--mutation-prob must be in [0, 1], --promote in (0, 1], --step > 0")
        if (c.screen_docs or 0) < 0 or (c.patience or 0) < 0:
            raise LongRopeError("--screen-docs and --patience must be >= 0 (0: off)")
        if c.screen_docs and c.screen_docs >= c.docs:
            c.screen_docs = 0  # screening on all documents is just the full fitness: off
        if c.screen_pick not in ("first", "spread"):
            raise LongRopeError(f"unknown --screen-pick {c.screen_pick!r}; choose first or spread")
        if c.objective not in ("ppl", "needle"):
            raise LongRopeError(f"unknown objective {c.objective!r}; choose ppl or needle")
        if c.descent_steps < 0 or not c.descent_lr > 0 or not c.descent_lr_end >= 0 or not 0 <= c.descent_hold < 1:
            raise LongRopeError("--descent-steps must be >= 0, --descent-lr > 0, --descent-lr-end >= 0, "
                                "--descent-hold in [0, 1)")
        if c.descent_steps and (c.objective != "ppl" or c.short_of):
            if self.descent_steps:  # asked for explicitly
                raise LongRopeError("the gradient descent (--descent-steps) takes the ppl objective of a "
                                    "long-factor search; set --descent-steps 0")
            c.descent_steps = 0  # the preset's descent: only where it applies
        return c


def load_state(out: str | Path) -> dict:
    path = Path(out) / "state.json"
    if not path.is_file():
        raise LongRopeError(f"nothing to resume: {path} does not exist")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LongRopeError(f"cannot read {path}: {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise LongRopeError(f"{path} is not a longrope search state")
    fields = set(SearchConfig.__dataclass_fields__)
    if not isinstance(state.get("config"), dict) or not set(state["config"]) <= fields \
            or not isinstance(state.get("evolution"), dict):
        raise LongRopeError(f"{path} is not a readable longrope search state (bad config or evolution)")
    before_hold(state["config"])
    try:
        SearchConfig(**state["config"]).resolved()
    except TypeError:  # a value of the wrong JSON type
        raise LongRopeError(f"{path}: the saved config holds a value of the wrong type") from None
    return state


def saved_config(out: str | Path) -> dict:
    """The settings of the search in `out` to resume: from state.json, or from descent.json when
    the run was stopped during its descent (before the first state.json)."""
    from .gradient import read_descent

    if _descent_only(Path(out)):
        return read_descent(out)["config"]
    return load_state(out)["config"]


def run_search(cfg: SearchConfig | None, out: str | Path, *, resume: bool = False, progress: bool = True,
               model=None, tokenizer=None, cache="auto") -> dict:
    """Run (or resume) a search; returns a summary. `model`/`tokenizer` may be passed pre-loaded.
    With `resume`, the settings come from OUT/state.json (`cfg` may be None, or give the device).
    `cache`: the score cache folder shared across runs ("auto": `search.cache.default_dir()`;
    None: off); it changes no result, only how many forward passes are run."""
    from .cache import for_search
    from .objective import init_distributed

    from .gradient import read_descent

    out = Path(out)
    saved = load_state(out) if resume and not _descent_only(out) else None
    # killed during the descent: its settings are in descent.json, resolved the same way
    cfg = _resolve_config(cfg, saved if saved is not None or not resume else read_descent(out))
    import torch.distributed as dist
    owns_group = not (dist.is_available() and dist.is_initialized())  # else a recipe holds it: left alone
    rank, world, device = init_distributed(cfg.device)
    model, tokenizer = _load(cfg, device, model, tokenizer)
    w = _window(cfg, model)
    samples, positions = _samples(cfg, tokenizer, model, cfg.docs)
    crit, seeds, space = _space_and_seeds(cfg, w)
    bar = _Progress(progress and rank == 0, cfg,
                    baselines=len(seeds) + bool(w.long is not None and cfg.search_attention_scale),
                    done_generations=saved["evolution"].get("generation") if saved else None, world=world)
    store = for_search(cache, cfg, model, positions)
    objective = _objective(cfg, model, samples, positions, w, rank=rank, world=world, bar=bar, store=store)
    full = objective.fitness()
    screen = objective.fitness(cfg.screen_docs) if cfg.screen_docs else None
    baselines = saved["baselines"] if saved is not None else _baselines(objective, cfg, w, seeds)
    if cfg.screen_docs:
        from .fidelity import pick_screen
        objective.screen_samples = (saved["info"].get("screen_samples") if saved else None) or \
            pick_screen(objective, list(baselines), cfg.screen_docs, cfg.screen_pick)
    t0 = time.time()  # the run's seconds include its descent (a descent cut short and resumed: this part)
    descent = saved["info"].get("descent") if saved else None
    if cfg.descent_steps and descent is None:
        descent = _descend(cfg, out, model, samples, space, seeds, baselines, rank=rank, world=world, bar=bar,
                           resume=resume)
    if descent:
        seeds[DESCENT] = np.asarray(descent["factors"], dtype=np.float64)
    info = {"descent": descent, "screen_samples": objective.screen_samples, "rotary_dim": w.dim, "base": w.base,
            "original": w.original, "scale": w.scale, "world": world,
            "critical_dim": crit, "samples": len(samples), "sample_length": cfg.target_length,
            "answer_positions": list(positions) if positions else None,
            "short_of": w.long.to_dict() if w.long is not None else None}
    prior = saved.get("seconds", 0.0) if saved else 0.0
    prior_fp, prior_hits = ((saved.get("forward_passes", saved.get("scored_here", 0)), saved.get("cache_hits", 0))
                            if saved else (0, 0))  # states from before the cache: their one run's count
    record = _recorder(out, cfg, space, objective, bar, rank=rank, info=info, baselines=baselines,
                       seeds=seeds, prior=(prior, prior_fp, prior_hits), t0=t0)
    result = evolve(full, space, population=cfg.population, iterations=cfg.iterations,
                    parents=cfg.parents, mutations=cfg.mutations, crossovers=cfg.crossovers,
                    seed=cfg.seed, seeds=seeds, screen=screen, promote=cfg.promote,
                    patience=cfg.patience or None, state=saved["evolution"] if saved else None,
                    on_generation=record)
    record(result.state, done=True)
    bar.close()
    return _finish(result, cfg, objective, store, w, crit=crit, baselines=baselines, rank=rank, world=world,
                   prior=(prior, prior_fp, prior_hits), t0=t0, descent=descent, owns_group=owns_group)


def _descent_only(out: Path) -> bool:
    """A search killed during its descent: descent.json but no state.json yet."""
    return not (out / "state.json").is_file() and (out / DESCENT_FILE).is_file()


def _descend(cfg: SearchConfig, out: Path, model, samples, space: Space, seeds: dict, baselines: dict, *,
             rank, world, bar, resume) -> dict:
    """The descent phase from the carried seed when there is one, else from the best baseline's
    seed; its history goes to the search state, its best point joins the seeds."""
    from .gradient import descent_phase

    start = seeds[CARRIED] if CARRIED in seeds else seeds[min(baselines, key=lambda k: baselines[k])]
    return descent_phase(cfg, out, model, samples, space, start, rank=rank, world=world, on_pass=bar.descent_tick,
                         resume=resume)


def _resolve_config(cfg: SearchConfig | None, saved: dict | None) -> SearchConfig:
    """The run's resolved settings: on resume the saved ones, where only the device and
    trust_remote_code may come from `cfg`."""
    if saved is not None:  # the saved settings rule; only where to run may change
        where = {k: getattr(cfg, k) for k in WHERE} if cfg else {}
        cfg = SearchConfig(**{**saved["config"], **where})
    return cfg.resolved()


def _load(cfg: SearchConfig, device, model, tokenizer):
    """The model and tokenizer, loaded where not passed in."""
    from ..models import check_vocabulary, load_model, load_tokenizer

    if model is None:
        model = load_model(cfg.model, dtype=cfg.dtype, device=device, trust_remote_code=cfg.trust_remote_code)
    if tokenizer is None:
        tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    check_vocabulary(model, tokenizer, cfg.model)
    return model, tokenizer


def _objective(cfg: SearchConfig, model, samples, positions, w: Window, *, rank, world, bar, store):
    """The objective over the samples; a short-factor search scores each candidate as the long
    scaling with those short factors."""
    from .objective import Objective

    long = w.long
    objective = Objective(model, samples, original=w.original, target=cfg.target_length, positions=positions,
                          chunk=cfg.chunk, rank=rank, world=world, on_score=bar.tick, store=store,
                          make_scaling=(lambda c: _with_short(long, c.factors, _short_attn(cfg, c)))
                          if long else None)
    bar.objective = objective
    return objective


def _baselines(objective, cfg: SearchConfig, w: Window, seeds: dict) -> dict:
    """The exact methods the seeds come from, scored as they are (a fresh search only)."""
    from ..rope.scaling import Scaling

    names = [n for n in seeds if n not in (CARRIED, DESCENT)]  # the carried seed is no method: scored in generation 0
    if w.long is not None:
        exact = [_with_short(w.long, [1.0] * (w.dim // 2)), w.long]
        if cfg.search_attention_scale:  # the unscaled model itself: ones at scale 1
            names.append("unscaled")
            exact.append(_with_short(w.long, [1.0] * (w.dim // 2), 1.0))
    else:
        exact = [Scaling(method=n, factor=w.scale) for n in names]
    vals = objective.score_many(list(zip(exact, names)))
    return {n: v for n, v in zip(names, vals)}


def _recorder(out: Path, cfg: SearchConfig, space: Space, objective, bar, *, rank, info, baselines, seeds,
              prior, t0):
    """The per-generation callback: progress on every rank; on rank 0 the outputs and state.json,
    and at the end the finished marker and the figure. `prior`: (seconds, forward passes, cache
    hits) of the earlier runs of this search."""
    seconds, prior_fp, prior_hits = prior

    def record(evo: dict, done: bool = False) -> None:
        bar.generation(evo)
        passes, hits = objective.counts()  # every rank takes part
        if rank != 0:
            return
        doc = {"format": FORMAT, "config": asdict(cfg), "info": info, "baselines": baselines,
               "seeds": {k: v.tolist() for k, v in seeds.items()}, "done": done,
               "seconds": seconds + time.time() - t0,
               "scored_here": passes,  # sample forward passes by all processes, this run
               # by all processes over every run of this search (resumes add up); hits: from the score cache
               "forward_passes": prior_fp + passes, "cache_hits": prior_hits + hits,
               "evolution": evo}
        _write_outputs(out, doc, space, cfg, final=done)
        write_json(out / "state.json", doc)
        (out / DESCENT_FILE).unlink(missing_ok=True)  # state.json holds the descent from now on
        if done:  # results first, then the marker, then the optional figure
            mark_finished(out)
            from .plot import have_matplotlib, plot_search
            if have_matplotlib():  # without it the search said so up front; a finished search is not an error
                plot_search(out / "search.png", doc, Candidate.from_json(evo["parents"][0][0]))

    return record


def _finish(result, cfg: SearchConfig, objective, store, w: Window, *, crit, baselines, rank, world,
            prior, t0, descent=None, owns_group=True) -> dict:
    """The cost report (all processes' passes), the distributed teardown (only by the run that joined
    the group), the non-finite check and the summary."""
    from .cost import run_cost

    seconds, prior_fp, prior_hits = prior
    passes, hits = objective.counts()
    cost = run_cost(cfg, result.evaluations, result.screened, prior_fp + passes, prior_hits + hits,
                    (descent or {}).get("passes", 0))
    if world > 1:
        import torch.distributed as dist
        dist.barrier()  # no process leaves before rank 0 has written the outputs
        if owns_group:
            dist.destroy_process_group()
    if not math.isfinite(result.score):
        raise LongRopeError("every candidate scored a non-finite perplexity; check the model and data")
    return {"best": result.best.to_json(), "ppl": result.score, "baselines": baselines,
            "evaluations": result.evaluations, "screened": result.screened,
            "generations": result.generations, "stopped_early": result.stopped_early,
            "critical_dim": crit, "scale": w.scale, "original": w.original, "rank": rank, "world": world,
            "forward_passes": passes, "cache_hits": hits, "cost": cost,
            "descent": descent,
            "cache": str(store.path) if store is not None else None, "seconds": seconds + time.time() - t0}


def scaling_of(doc: dict, best: Candidate):
    """The `Scaling` a search state's best candidate stands for (what factors.json holds)."""
    from ..rope.scaling import Scaling

    cfg, info = doc["config"], doc["info"]
    ev = doc["evolution"]
    if info.get("short_of"):
        long = Scaling.from_dict(info["short_of"])
        prov = dict(long.provenance, short_search={"model": cfg["model"], "length": cfg["target_length"],
                                                   "docs": cfg["docs"], "seed": cfg["seed"],
                                                   "ppl": ev["history"][-1]["best_score"],
                                                   "baselines": doc["baselines"]})
        out = _with_short(long, best.factors, _short_attn(cfg, best))
        out.provenance = prov
        return out
    return Scaling(method="longrope", long_factor=list(best.factors), n_hat=int(best.n_hat),
                   original_max_position=info["original"], target_length=cfg["target_length"],
                   factor=info["scale"], attention=best.attn if cfg["search_attention_scale"] else "su",
                   provenance={"tool": "longrope search", "model": cfg["model"], "data": cfg["data"],
                               "split": cfg["split"], "docs": cfg["docs"], "objective": cfg["objective"],
                               "preset": cfg["preset"], "seed": cfg["seed"],
                               "ppl": ev["history"][-1]["best_score"], "baselines": doc["baselines"],
                               "critical_dim": info["critical_dim"], "generation": ev["generation"],
                               "attention_scale": best.attn})


def _write_outputs(out: Path, doc: dict, space: Space, cfg: SearchConfig, *, final: bool) -> None:
    ev = doc["evolution"]
    best = Candidate.from_json(ev["parents"][0][0])
    # factors.json only once the search is done; until then the best so far is factors.partial.json
    scaling_of(doc, best).save(out / ("factors.json" if final else PARTIAL))
    if final:
        (out / PARTIAL).unlink(missing_ok=True)
    docs = {"full": cfg.docs, "screen": cfg.screen_docs}
    lines = [json.dumps({"generation": e["generation"], "fidelity": e["fidelity"], "docs": docs[e["fidelity"]],
                         "ppl": e["score"], **e["candidate"]}) for e in ev["evaluations"]]
    write_text(out / "history.jsonl", "\n".join(lines) + ("\n" if lines else ""))
