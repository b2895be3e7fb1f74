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
from .space import Candidate, Space

FORMAT = "longrope-search/1"
PARTIAL = "factors.partial.json"  # the best factors so far of an unfinished search
SEARCH_KEYS = ("population", "iterations", "parents", "mutations", "crossovers", "mutation_prob",
               "screen_docs", "promote", "patience")


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
    try:
        SearchConfig(**state["config"]).resolved()
    except TypeError:  # a value of the wrong JSON type
        raise LongRopeError(f"{path}: the saved config holds a value of the wrong type") from None
    return state


def _samples(cfg: SearchConfig, tok, model, count: int):
    from ..data import build_samples, load_documents, tokenize_documents
    from .objective import needle_samples

    docs = load_documents(cfg.data, cfg.split)
    ids = tokenize_documents(docs, tok)
    bos = getattr(tok, "bos_token_id", None)
    if bos is None:
        bos = getattr(model.config, "bos_token_id", None)
    if cfg.objective == "needle":
        return needle_samples(ids, tok, cfg.target_length, count, bos_id=bos, seed=cfg.seed)
    s = build_samples(ids, cfg.target_length, count, mode=cfg.sample_mode, bos_id=bos,
                      sep_id=getattr(tok, "eos_token_id", None), seed=cfg.seed)
    return s.tensors, None


def run_search(cfg: SearchConfig | None, out: str | Path, *, resume: bool = False, progress: bool = True,
               model=None, tokenizer=None, cache="auto") -> dict:
    """Run (or resume) a search; returns a summary. `model`/`tokenizer` may be passed pre-loaded.
    With `resume`, the settings come from OUT/state.json (`cfg` may be None, or give the device).
    `cache`: the score cache folder shared across runs ("auto": `search.cache.default_dir()`;
    None: off); it changes no result, only how many forward passes are run."""
    from .. import patch
    from ..models import load_model, load_tokenizer
    from ..rope.methods import attention_scale
    from .objective import Objective, init_distributed, resolve_critical, seed_factors

    out = Path(out)
    saved = load_state(out) if resume else None
    if saved is not None:  # the saved settings rule; only where to run may change
        where = {"device": cfg.device, "trust_remote_code": cfg.trust_remote_code} if cfg else {}
        cfg = SearchConfig(**{**saved["config"], **where})
    cfg = cfg.resolved()
    rank, world, device = init_distributed(cfg.device)
    if model is None:
        model = load_model(cfg.model, dtype=cfg.dtype, device=device, trust_remote_code=cfg.trust_remote_code)
    if tokenizer is None:
        tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    dim, base, original = patch.rope_dims(model)
    long = _long_scaling(cfg, dim) if cfg.short_of else None
    if long is not None:
        original = long.original_max_position or original
        if cfg.target_length > original:
            raise LongRopeError(f"short factors are for lengths up to the window ({original}); "
                                f"got target length {cfg.target_length}")
    elif cfg.target_length <= original:
        raise LongRopeError(f"target length {cfg.target_length} is not above the model's window "
                            f"({original}): nothing to extend")
    scale = cfg.target_length / original
    samples, positions = _samples(cfg, tokenizer, model, cfg.docs)
    crit = None if long else resolve_critical(cfg.critical_dim, dim, base, original)
    attn = attention_scale("su", scale, original)
    space_kw = dict(step=cfg.step, attn=attn, mutation_prob=cfg.mutation_prob,
                    attn_bounds=(1.0, round(1.0 + 2 * (max(attn, attention_scale("yarn", scale, original)) - 1), 2))
                    if cfg.search_attention_scale else None)
    if long is not None:  # short factors in [1, 1.25*max(1, s)]; n_hat stays the long file's
        seeds = {"none": np.ones(dim // 2), "long": np.asarray(long.long_factor, dtype=np.float64)}
        long_attn = long.inv_freq(dim=dim, base=base, original=original, seq_len=original + 1)[1]
        # with --search-attention-scale the short mode gets its own scale, from 1 (the model's own
        # rotation) up to the long one; without, it keeps the long scale as stock runtimes do
        short_attn = dict(attn=1.0, attn_bounds=(1.0, max(1.0, long_attn))) if cfg.search_attention_scale else {}
        space = Space([1.0] * (dim // 2), [1.25 * max(1.0, scale)] * (dim // 2), step=cfg.step,
                      n_hats=(long.n_hat,), mutation_prob=cfg.mutation_prob, **short_attn)
    elif crit is None:
        seeds = seed_factors(dim, base, original, scale)
        space = Space.paper(dim // 2, scale, window=original, search_n_hat=cfg.search_n_hat, **space_kw)
    else:
        seeds = seed_factors(dim, base, original, scale)
        space = Space.critical(seeds["ntk"], crit // 2, scale, window=original,
                               search_n_hat=cfg.search_n_hat, **space_kw)
    bar = _Progress(progress and rank == 0, cfg, baselines=len(seeds) + bool(long is not None and cfg.search_attention_scale),
                    done_generations=saved["evolution"].get("generation") if saved else None, world=world)
    from .cache import for_search
    store = for_search(cache, cfg, model, positions)
    objective = Objective(model, samples, original=original, target=cfg.target_length, positions=positions,
                          chunk=cfg.chunk, rank=rank, world=world, on_score=bar.tick, store=store,
                          make_scaling=(lambda c: _with_short(long, c.factors, _short_attn(cfg, c)))
                          if long else None)
    bar.objective = objective
    full = objective.fitness()
    screen = objective.fitness(cfg.screen_docs) if cfg.screen_docs else None
    if saved is not None:
        baselines = saved["baselines"]
    else:
        from ..rope.scaling import Scaling
        names = list(seeds)  # the exact methods the seeds come from, scored as they are
        if long is not None:
            exact = [_with_short(long, [1.0] * (dim // 2)), long]
            if cfg.search_attention_scale:  # the unscaled model itself: ones at scale 1
                names.append("unscaled")
                exact.append(_with_short(long, [1.0] * (dim // 2), 1.0))
        else:
            exact = [Scaling(method=n, factor=scale) for n in names]
        vals = objective.score_many(list(zip(exact, names)))
        baselines = {n: v for n, v in zip(names, vals)}
    if cfg.screen_docs:
        from .fidelity import pick_screen
        objective.screen_samples = (saved["info"].get("screen_samples") if saved else None) or \
            pick_screen(objective, list(baselines), cfg.screen_docs, cfg.screen_pick)
    info = {"screen_samples": objective.screen_samples, "rotary_dim": dim, "base": base, "original": original, "scale": scale, "world": world,
            "critical_dim": crit, "samples": len(samples), "sample_length": cfg.target_length,
            "answer_positions": list(positions) if positions else None,
            "short_of": long.to_dict() if long is not None else None}
    t0 = time.time()
    prior = saved.get("seconds", 0.0) if saved else 0.0
    prior_fp, prior_hits = ((saved.get("forward_passes", saved.get("scored_here", 0)), saved.get("cache_hits", 0))
                            if saved else (0, 0))  # states from before the cache: their one run's count

    def record(evo: dict, done: bool = False) -> None:
        bar.generation(evo)
        if rank != 0:
            return
        doc = {"format": FORMAT, "config": asdict(cfg), "info": info, "baselines": baselines,
               "seeds": {k: v.tolist() for k, v in seeds.items()}, "done": done,
               "seconds": prior + time.time() - t0,
               "scored_here": objective.docs_run,  # sample forward passes by rank 0, this run
               # by rank 0 over every run of this search (resumes add up); hits: from the score cache
               "forward_passes": prior_fp + objective.docs_run, "cache_hits": prior_hits + objective.cache_hits,
               "evolution": evo}
        _write_outputs(out, doc, space, cfg, final=done)
        write_json(out / "state.json", doc)
        if done:  # results first, then the marker, then the optional figure
            mark_finished(out)
            from .plot import plot_search
            plot_search(out / "search.png", doc, Candidate.from_json(evo["parents"][0][0]))

    result = evolve(full, space, population=cfg.population, iterations=cfg.iterations,
                    parents=cfg.parents, mutations=cfg.mutations, crossovers=cfg.crossovers,
                    seed=cfg.seed, seeds=seeds, screen=screen, promote=cfg.promote,
                    patience=cfg.patience or None, state=saved["evolution"] if saved else None,
                    on_generation=record)
    record(result.state, done=True)
    bar.close()
    from .cost import run_cost
    cost = run_cost(cfg, result.evaluations, result.screened, prior_fp + objective.docs_run,
                    prior_hits + objective.cache_hits)
    if world > 1:
        import torch.distributed as dist
        dist.barrier()  # no process leaves before rank 0 has written the outputs
        dist.destroy_process_group()
    if not math.isfinite(result.score):
        raise LongRopeError("every candidate scored a non-finite perplexity; check the model and data")
    return {"best": result.best.to_json(), "ppl": result.score, "baselines": baselines,
            "evaluations": result.evaluations, "screened": result.screened,
            "generations": result.generations, "stopped_early": result.stopped_early,
            "critical_dim": crit, "scale": scale, "original": original, "rank": rank, "world": world,
            "forward_passes": objective.docs_run, "cache_hits": objective.cache_hits, "cost": cost,
            "cache": str(store.path) if store is not None else None, "seconds": prior + time.time() - t0}


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


def _long_scaling(cfg: SearchConfig, dim: int):
    from ..rope.scaling import load_scaling

    if cfg.critical_dim:
        raise LongRopeError("a short-factor search takes no --critical-dim")
    long = load_scaling(cfg.short_of)
    if long.method != "longrope":
        raise LongRopeError(f"{cfg.short_of} is a {long.method} scaling; short factors need longrope factors")
    long.check_pairs(dim // 2)
    return long


def _short_attn(cfg, cand: Candidate) -> float | None:
    search = cfg["search_attention_scale"] if isinstance(cfg, dict) else cfg.search_attention_scale
    return float(cand.attn) if search else None


def _with_short(long, factors, short_attention: float | None = None):
    """The long scaling with these short factors (used up to the original window) and, when
    given, their own attention scale."""
    from ..rope.scaling import Scaling

    d = long.to_dict()
    d["short_factor"] = [float(x) for x in factors]
    d["short_attention"] = short_attention
    return Scaling.from_dict(d)


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


class _Progress:
    """Search progress on rank 0 (`longrope.progress`): a bar over sample forward passes, whose total
    is the most the settings can take (the initial population and every generation in full; early
    stopping and cached scores make it shorter), and one plain line per generation outside a terminal."""

    def __init__(self, on: bool, cfg: SearchConfig, *, baselines: int, done_generations: int | None, world: int):
        from ..progress import Progress

        per_gen = cfg.mutations + cfg.crossovers
        full = math.ceil(cfg.promote * per_gen) if cfg.screen_docs else per_gen
        gen_cost = full * cfg.docs + (per_gen * cfg.screen_docs if cfg.screen_docs else 0)
        if done_generations is None:
            total = (baselines + cfg.population) * cfg.docs + cfg.iterations * gen_cost
        else:
            total = max(0, cfg.iterations - done_generations) * gen_cost
        self.cfg, self.objective = cfg, None
        self.p = Progress(math.ceil(total / world), f"search {cfg.preset}", "pass", enabled=on, every=0)
        if on and not self.p.tty:
            self.p.line(f"up to {cfg.iterations} generations at {cfg.target_length} tokens on {cfg.docs} "
                        "documents (the total is an upper bound)")

    def tick(self) -> None:
        if self.objective is not None and self.objective.docs_run > self.p.n:
            self.p.update(self.objective.docs_run - self.p.n)

    def generation(self, evo: dict) -> None:
        if evo["generation"] == getattr(self, "last", None):
            return  # the final record repeats the last generation
        self.last = evo["generation"]
        best = float(evo["history"][-1]["best_score"])
        h = evo["history"][-1]
        self.p.set_postfix_str(f"gen {evo['generation']} best ppl {best:.3f}")
        self.p.line(f"generation {evo['generation']}/{self.cfg.iterations}, best ppl {best:.4f}, "
                    f"{h.get('evaluations', '?')} full + {h.get('screened', 0)} screening evaluations")

    def close(self) -> None:
        self.p.close(done=True)
