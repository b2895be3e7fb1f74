"""The steps of `runner.run_search` before the evolution: the model's rotary window, the data
samples, the search space with its seeds, and the progress display. Kept apart from runner.py
so each step is a named function; nothing here writes files."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import LongRopeError
from .space import Candidate, Space


@dataclass
class Window:
    """The model's rotary geometry for this search: rotary dim, base, original window, the scale
    target/original, and the long scaling whose short factors are searched (None: a long search)."""
    dim: int
    base: float
    original: int
    scale: float
    long: object | None = None


def _samples(cfg, tok, model, count: int):
    from ..data import build_samples, load_documents, tokenize_documents
    from .objective import needle_samples

    docs = load_documents(cfg.data, cfg.split)
    ids = tokenize_documents(docs, tok)
    bos = getattr(tok, "bos_token_id", None)
    if bos is None:
        bos = getattr(model.config, "bos_token_id", None)
    if cfg.objective == "needle":
        return needle_samples(ids, tok, cfg.target_length, count, bos_id=bos, seed=cfg.seed)
    try:
        s = build_samples(ids, cfg.target_length, count, mode=cfg.sample_mode, bos_id=bos,
                          sep_id=getattr(tok, "eos_token_id", None), seed=cfg.seed)
    except LongRopeError as e:
        from ..data.sources import split_sizes
        raise LongRopeError("; ".join(x for x in (str(e), split_sizes(cfg.data, cfg.split)) if x)) from None
    return s.tensors, None


def _window(cfg, model) -> Window:
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


def _space_and_seeds(cfg, w: Window):
    """(critical dim or None, the named seed factors, the search space)."""
    from ..rope.methods import attention_scale
    from .objective import resolve_critical, seed_factors

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
        seeds = seed_factors(dim, base, original, scale)
        space = Space.critical(seeds["ntk"], crit // 2, scale, window=original,
                               search_n_hat=cfg.search_n_hat, **space_kw)
    if cfg.seed_from:
        seeds[CARRIED] = _carried(cfg.seed_from, dim, scale)
    return crit, seeds, space


CARRIED = "carried"  # the seed carried over from --seed-from (not a baseline method of its own)
DESCENT = "descent"  # the best point of the gradient descent (search/descent.py)
DESCENT_FILE = "descent.json"  # the descent's state after every step (rank 0) until state.json exists
WHERE = ("device", "trust_remote_code")  # the only settings a resumed run may change (where it runs)


def before_hold(config: dict) -> dict:
    """A saved (resolved) search config from before `descent_hold` existed: its run had no hold."""
    config.setdefault("descent_hold", 0.0)
    return config


def _carried(path: str, dim: int, scale: float) -> np.ndarray:
    """The long factors of an earlier stage's factor file, carried to this search's scale."""
    from ..rope.scaling import load_scaling
    from .objective import carry_factors

    prev = load_scaling(path)
    if prev.method != "longrope" or not prev.factor:
        raise LongRopeError(f"--seed-from {path}: a longrope factor file with its scale is needed, "
                            f"got a {prev.method} scaling")
    prev.check_pairs(dim // 2)
    if not prev.factor > 1.0:
        raise LongRopeError(f"--seed-from {path}: its scale factor {prev.factor} is not above 1")
    return carry_factors(prev.long_factor, float(prev.factor), scale)


def _long_scaling(cfg, dim: int):
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


class _Progress:
    """Search progress on rank 0 (`longrope.progress`): a bar over sample forward passes, whose total
    is the most the settings can take (the initial population and every generation in full; early
    stopping and cached scores make it shorter), and one plain line per generation outside a terminal."""

    def __init__(self, on: bool, cfg, *, baselines: int, done_generations: int | None, world: int):
        from ..progress import Progress

        per_gen = cfg.mutations + cfg.crossovers
        full = math.ceil(cfg.promote * per_gen) if cfg.screen_docs else per_gen
        gen_cost = full * cfg.docs + (per_gen * cfg.screen_docs if cfg.screen_docs else 0)
        if done_generations is None:
            total = (baselines + cfg.population + cfg.descent_steps) * cfg.docs + cfg.iterations * gen_cost
        else:
            total = max(0, cfg.iterations - done_generations) * gen_cost
        self.cfg, self.objective, self.descent = cfg, None, 0
        self.p = Progress(math.ceil(total / world), f"search {cfg.preset}", "pass", enabled=on, every=0)
        if on and not self.p.tty:
            self.p.line(f"up to {cfg.iterations} generations at {cfg.target_length} tokens on {cfg.docs} "
                        "documents (the total is an upper bound)")

    def tick(self) -> None:
        done = self.descent + (self.objective.docs_run if self.objective is not None else 0)
        if done > self.p.n:
            self.p.update(done - self.p.n)

    def descent_tick(self) -> None:
        """One (forward + backward) sample pass of the descent; the bar counts it as one pass."""
        self.descent += 1
        self.tick()

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
