"""`prepare(cfg, out, resume) -> SearchRun`: everything a search is before its first score.

The run object holds the resolved settings, where it runs (rank, world), the model, its rotary
`Window`, the samples, the space and the named seeds, the objective over the samples, the progress
display, and what a resumed run takes from its state.json (baselines, descent, screening samples,
the evolution's state, the counters of the earlier runs). `runner.run_search` reads it step by
step; nothing here scores a candidate or writes a file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import LongRopeError
from .config import WHERE, SearchConfig
from .space import Candidate, Space

CARRIED = "carried"  # the seed carried over from --seed-from (not a baseline method of its own)
DESCENT = "descent"  # the best point of the gradient descent (search/descent.py)


@dataclass
class Window:
    """The model's rotary geometry for this search: rotary dim, base, original window, the scale
    target/original, and the long scaling whose short factors are searched (None: a long search)."""
    dim: int
    base: float
    original: int
    scale: float
    long: object | None = None


@dataclass
class Counters:
    """What the runs of one search spent, added up over resumes: seconds, sample forward passes
    (every process) and sample scores taken from the score cache instead."""
    seconds: float = 0.0
    forward_passes: int = 0
    cache_hits: int = 0

    @classmethod
    def of(cls, state: dict | None) -> "Counters":
        """The counters saved in a state.json (states from before the cache: their one run's count)."""
        if state is None:
            return cls()
        return cls(state.get("seconds", 0.0), state.get("forward_passes", state.get("scored_here", 0)),
                   state.get("cache_hits", 0))


@dataclass
class SearchRun:
    cfg: SearchConfig  # resolved
    out: Path
    resume: bool
    rank: int
    world: int
    model: object
    window: Window
    samples: list
    terms: tuple | None  # the loss terms of the needle/combined objective (longrope2.objective_terms), else None
    documents: list[dict]  # the documents the samples hold, by name and token count (data.Tokenized.cite)
    critical_dim: int | None
    owns_group: bool  # joined the process group itself (else a recipe holds it and leaves it last)
    seeds: dict  # name -> factor vector: the exact methods', the carried one, later the descent's
    space: Space
    objective: object  # search.objective.Objective
    store: object  # search.cache.ScoreCache or None
    bar: object  # search.progress.SearchProgress
    # from the state.json of a resumed run (None / empty for a fresh one)
    baselines: dict | None = None
    descent: dict | None = None
    screen_samples: list | None = None
    evolution_state: dict | None = None
    prior: Counters = field(default_factory=Counters)
    t0: float = 0.0  # when this run's timed part (descent and evolution) began

    def short_scaling(self, cand: Candidate):
        """The long scaling with this candidate as its short factors (a short-factor search)."""
        attn = float(cand.attn) if self.cfg.search_attention_scale else None
        return with_short(self.window.long, cand.factors, attn)


def prepare(cfg: SearchConfig | None, out: str | Path, resume: bool = False, *, progress: bool = True,
            model=None, tokenizer=None, cache="auto") -> SearchRun:
    """The run of `cfg` into `out`; with `resume`, the settings come from OUT/state.json (or
    OUT/descent.json when the run was stopped in its descent) and `cfg` may only say where to run."""
    from .cache import for_search
    from .objective import Objective, init_distributed
    from .progress import SearchProgress
    from .state import descent_only, load_state, read_descent

    out = Path(out)
    state = load_state(out) if resume and not descent_only(out) else None
    if resume:
        where = {k: getattr(cfg, k) for k in WHERE} if cfg else {}
        cfg = SearchConfig.from_saved((state or read_descent(out))["config"], **where)
    cfg = cfg.resolved()
    import torch.distributed as dist
    owns_group = not (dist.is_available() and dist.is_initialized())
    rank, world, device = init_distributed(cfg.device)
    model, tokenizer = _load(cfg, device, model, tokenizer)
    w = window(cfg, model)
    samples, terms, documents = load_samples(cfg, tokenizer, model, cfg.docs)
    crit, seeds, space = space_and_seeds(cfg, w)
    bar = SearchProgress(progress and rank == 0, cfg,
                         baselines=len(seeds) + bool(w.long is not None and cfg.search_attention_scale),
                         done_generations=state["evolution"].get("generation") if state else None, world=world)
    store = for_search(cache, cfg, model, terms)
    info = state["info"] if state else {}
    run = SearchRun(cfg=cfg, out=out, resume=resume, rank=rank, world=world, model=model, window=w,
                    samples=samples, terms=terms, documents=documents, critical_dim=crit,
                    owns_group=owns_group, seeds=seeds, space=space,
                    objective=None, store=store, bar=bar,
                    baselines=state["baselines"] if state else None, descent=info.get("descent"),
                    screen_samples=info.get("screen_samples"),
                    evolution_state=state["evolution"] if state else None, prior=Counters.of(state))
    run.objective = Objective(model, samples, original=w.original, target=cfg.target_length, terms=terms,
                              chunk=cfg.chunk, rank=rank, world=world, on_score=bar.tick, store=store,
                              make_scaling=run.short_scaling if w.long is not None else None)
    bar.objective = run.objective
    return run


def _load(cfg: SearchConfig, device, model, tokenizer):
    """The model and tokenizer, loaded where not passed in."""
    from ..models import check_vocabulary, load_model, load_tokenizer

    if model is None:
        model = load_model(cfg.model, dtype=cfg.dtype, device=device, trust_remote_code=cfg.trust_remote_code)
    if tokenizer is None:
        tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    check_vocabulary(model, tokenizer, cfg.model)
    return model, tokenizer


def load_samples(cfg: SearchConfig, tok, model, count: int):
    """(`count` samples of the target length, the loss terms of the needle/combined objective or None,
    the documents they hold by name and token count) from cfg's data. Every objective reads the
    same documents; needle and combined plant a needle in each (search/objective.py)."""
    from ..data import build_samples, load_tokenized
    from .longrope2 import objective_terms
    from .objective import needle_samples

    documents = load_tokenized(tok, cfg.data, cfg.split)
    bos = getattr(tok, "bos_token_id", None)
    if bos is None:
        bos = getattr(model.config, "bos_token_id", None)
    try:
        s = build_samples(documents.ids, cfg.target_length, count, mode=cfg.sample_mode, bos_id=bos,
                          sep_id=getattr(tok, "eos_token_id", None), seed=cfg.seed)
    except LongRopeError as e:
        from ..data.sources import split_sizes
        raise LongRopeError("; ".join(x for x in (str(e), split_sizes(cfg.data, cfg.split)) if x)) from None
    if cfg.objective == "ppl":
        return s.tensors, None, documents.cite(s.used)
    samples, answer = needle_samples(s.tensors, tok, bos_id=bos, seed=cfg.seed)
    terms = objective_terms(cfg.objective, cfg.target_length, answer, cfg.needle_weight)
    return samples, terms, documents.cite(s.used)


def window(cfg: SearchConfig, model) -> Window:
    """The rotary geometry, checked against the target length (above the window for long
    factors, up to it for short factors)."""
    from .. import patch

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
    from ..memory import check_lengths
    check_lengths(model, [cfg.target_length], what="search", chunk=cfg.chunk, option="--target-length")
    return Window(dim, base, original, cfg.target_length / original, long)


def space_and_seeds(cfg: SearchConfig, w: Window):
    """(critical dim or None, the named seed factors, the search space)."""
    from ..rope.basis import attention_scale
    from .longrope2 import resolve_critical
    from .objective import seed_factors

    dim, base, original, scale, long = w.dim, w.base, w.original, w.scale, w.long
    crit = None if long else resolve_critical(cfg.critical_dim, dim, base, original)
    attn = attention_scale("su", scale, original)
    space_kw = dict(step=cfg.step, attn=attn, mutation_prob=cfg.mutation_prob,
                    attn_bounds=(1.0, round(1.0 + 2 * (max(attn, attention_scale("yarn", scale, original)) - 1), 2))
                    if cfg.search_attention_scale else None)
    if long is not None and cfg.seed_from:
        raise LongRopeError("--seed-from seeds a long-factor search; a short-factor search (--short-of) takes none")
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
        seeds, space = _critical_space(cfg, w, crit // 2, space_kw)
    if cfg.seed_from:
        seeds[CARRIED] = _carried(cfg.seed_from, dim, scale)
    return crit, seeds, space


def _critical_space(cfg: SearchConfig, w: Window, cd: int, space_kw: dict):
    """LongRoPE2's space from critical pair `cd` (search/longrope2.py) and its seeds."""
    from .longrope2 import wide_seeds
    from .objective import seed_factors

    pairs = w.dim // 2
    seeds = seed_factors(w.dim, w.base, w.original, w.scale)
    top = None
    if cfg.critical_seeds == "wide":
        wide = wide_seeds(pairs, cd, w.scale)
        top = max(2.0 * w.scale, max(float(v.max()) for v in wide.values()))
        seeds.update(wide)
    low = None if cfg.critical_low == "ramp" else seeds["ntk"]
    space = Space.critical(low, cd, w.scale, pairs=pairs, top=top, window=w.original,
                           search_n_hat=cfg.search_n_hat, **space_kw)
    return seeds, space


def _carried(path: str, dim: int, scale: float) -> np.ndarray:
    """The long factors of an earlier stage's factor file, carried to this search's scale."""
    from ..rope.files import load_scaling
    from .objective import carry_factors

    prev = load_scaling(path)
    if prev.method != "longrope" or not prev.factor:
        raise LongRopeError(f"--seed-from {path}: a longrope factor file with its scale is needed, "
                            f"got a {prev.method} scaling")
    prev.check_pairs(dim // 2)
    if not prev.factor > 1.0:
        raise LongRopeError(f"--seed-from {path}: its scale factor {prev.factor} is not above 1")
    return carry_factors(prev.long_factor, float(prev.factor), scale)


def _long_scaling(cfg: SearchConfig, dim: int):
    from ..rope.files import load_scaling

    if cfg.critical_dim:
        raise LongRopeError("a short-factor search takes no --critical-dim")
    long = load_scaling(cfg.short_of)
    if long.method != "longrope":
        raise LongRopeError(f"{cfg.short_of} is a {long.method} scaling; short factors need longrope factors")
    long.check_pairs(dim // 2)
    return long


def with_short(long, factors, short_attention: float | None = None):
    """The long scaling with these short factors (used up to the original window) and, when
    given, their own attention scale."""
    from ..rope.scaling import Scaling

    d = long.to_dict()
    d["short_factor"] = [float(x) for x in factors]
    d["short_attention"] = short_attention
    return Scaling.from_dict(d)
