"""The LongRoPE search space: candidates, bounds, and the moves of the evolutionary search.

A `Candidate` is one point of the space: a non-decreasing vector of per-pair rescale factors
(`lambda_i`, on a 0.01 grid), a start-token window `n_hat`, and an attention scale. The `Space`
knows the bounds of each pair (the paper's `[1.0, 1.25*s]`, or LongRoPE2's `[s, 2s]` from the
critical pair up, with the pairs below it fixed or on a ramp), the grid step, the allowed `n_hat`
values, and how to mutate, cross and seed candidates.

The ramp is LongRoPE2's search as its code does it: with `ramp=cd`, pairs i < cd are not searched
but follow the critical pair's factor, lambda_i = lambda_cd ** (i / cd) rounded to the grid (pair 0
stays 1), recomputed after every snap, mutation and crossover, so the factor curve has no jump at
the critical pair. Every random choice comes from a `numpy.random.Generator` the
caller passes in. Nothing here knows about models.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..errors import LongRopeError

# The paper's start-token choices; values at or above the original window are dropped.
N_HATS = (0, 1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 64, 128, 256)
_DIGITS = 9  # grid values are rounded to this many decimals: k * 0.01 -> the float nearest k/100


@dataclass(frozen=True)
class Candidate:
    """One point of the search space. Hashable, so equal candidates share one score."""

    factors: tuple[float, ...]
    n_hat: int = 0
    attn: float = 1.0

    def to_json(self) -> dict:
        return {"factors": list(self.factors), "n_hat": self.n_hat, "attn": self.attn}

    @classmethod
    def from_json(cls, d: Mapping) -> "Candidate":
        return cls(tuple(float(x) for x in d["factors"]), int(d["n_hat"]), float(d["attn"]))


def allowed_n_hats(window: int) -> tuple[int, ...]:
    """The paper's n_hat values strictly below the original window."""
    return tuple(n for n in N_HATS if n < window)


class Space:
    """Bounds and moves. `lo`/`hi` give each pair's range; a pair with `lo == hi` is fixed."""

    def __init__(self, lo: Sequence[float], hi: Sequence[float], *, step: float = 0.01,
                 n_hats: Sequence[int] = (0,), attn: float = 1.0,
                 attn_bounds: tuple[float, float] | None = None, mutation_prob: float = 0.3,
                 ramp: int | None = None):
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        if lo.ndim != 1 or lo.shape != hi.shape or lo.size == 0:
            raise LongRopeError("search bounds must be two vectors of the same non-zero length")
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))) or np.any(lo > hi):
            raise LongRopeError("search bounds must be finite with lo <= hi for every pair")
        if np.any(np.diff(lo) < 0) or np.any(np.diff(hi) < 0):
            raise LongRopeError("search bounds must be non-decreasing over pairs")
        if not step > 0:
            raise LongRopeError(f"the grid step must be positive, got {step}")
        if not 0.0 <= mutation_prob <= 1.0:
            raise LongRopeError(f"the mutation probability must be in [0, 1], got {mutation_prob}")
        if not n_hats:
            raise LongRopeError("no n_hat value is allowed (the window is too small)")
        self.step = float(step)
        if ramp is not None and not (0 < ramp < lo.size and lo[ramp] >= 1.0):
            raise LongRopeError(f"the ramp's critical pair {ramp} must be in 1..{lo.size - 1} with factors >= 1")
        self.ramp = None if ramp is None else int(ramp)
        self.tied = np.arange(lo.size) < (self.ramp or 0)  # pairs that follow the critical pair's factor
        self.fixed = (lo == hi) & ~self.tied
        # Free pairs live on the grid k*step, k in [lo_k, hi_k]; fixed pairs keep their exact value.
        self.lo_k = np.where(self.fixed | self.tied, 0, np.ceil(lo / step - 1e-9)).astype(np.int64)
        self.hi_k = np.where(self.fixed | self.tied, 0, np.floor(hi / step + 1e-9)).astype(np.int64)
        if np.any(~self.fixed & ~self.tied & (self.lo_k > self.hi_k)):
            raise LongRopeError(f"a pair's bounds contain no point of the {step} grid")
        self.lo, self.hi = lo, hi
        self.n_hats = tuple(int(n) for n in n_hats)
        self.attn = float(attn)
        self.attn_bounds = None
        if attn_bounds is not None:
            a, b = (int(math.ceil(attn_bounds[0] / step - 1e-9)), int(math.floor(attn_bounds[1] / step + 1e-9)))
            if a > b:
                raise LongRopeError(f"attention-scale bounds {attn_bounds} contain no grid point")
            self.attn_bounds = (a, b)
            self.attn = self._val(min(max(round(attn / step), a), b))
        self.mutation_prob = float(mutation_prob)
        if self.snap(lo) is None:  # pragma: no cover - guaranteed by the checks above
            raise LongRopeError("the search bounds admit no monotone factor vector")

    # ---- construction helpers -------------------------------------------------------------
    @classmethod
    def paper(cls, pairs: int, scale: float, *, window: int, search_n_hat: bool = True, **kw) -> "Space":
        """The LongRoPE space: every pair in [1.0, 1.25*s], n_hat from the paper's list."""
        if scale <= 1.0:
            raise LongRopeError(f"the scale factor must be above 1, got {scale}")
        n_hats = allowed_n_hats(window) if search_n_hat else (0,)
        return cls([1.0] * pairs, [1.25 * scale] * pairs, n_hats=n_hats, **kw)

    @classmethod
    def critical(cls, low_factors: Sequence[float] | None, critical_pair: int, scale: float, *, window: int,
                 pairs: int | None = None, top: float | None = None, search_n_hat: bool = True, **kw) -> "Space":
        """LongRoPE2: pairs from `critical_pair` up in [s, top] (default 2s); below it fixed to
        `low_factors`, or with `low_factors=None` (and `pairs`) on the ramp lambda_cd ** (i / cd)."""
        low = None if low_factors is None else np.asarray(low_factors, dtype=np.float64)
        pairs = low.size if low is not None else int(pairs or 0)
        if not 0 <= critical_pair < pairs or (low is None and critical_pair == 0):
            raise LongRopeError(f"critical pair {critical_pair} is outside {int(low is None)}..{pairs - 1}")
        top = 2.0 * scale if top is None else max(float(top), float(scale))
        if low is None:  # the ramp's own bounds: those of the critical pair, to the power i / cd
            w = np.arange(critical_pair) / critical_pair
            low_lo, low_hi = float(scale) ** w, top ** w
        else:
            low_lo = low_hi = low[:critical_pair]
        lo = np.concatenate([low_lo, np.full(pairs - critical_pair, float(scale))])
        hi = np.concatenate([low_hi, np.full(pairs - critical_pair, top)])
        n_hats = allowed_n_hats(window) if search_n_hat else (0,)
        return cls(lo, hi, n_hats=n_hats, ramp=critical_pair if low is None else None, **kw)

    @property
    def pairs(self) -> int:
        return self.lo.size

    def describe(self) -> dict:
        out = {"pairs": self.pairs, "step": self.step, "lo": self.lo.tolist(), "hi": self.hi.tolist(),
               "n_hats": list(self.n_hats), "attn": self.attn,
               "attn_bounds": None if self.attn_bounds is None else [self._val(k) for k in self.attn_bounds],
               "mutation_prob": self.mutation_prob}
        if self.ramp is not None:  # only then, so the saved settings of other spaces stay as they were
            out["ramp"] = self.ramp
        return out

    def _tie(self, f: list[float]) -> list[float]:
        """Pairs below the ramp's critical pair set from its factor (a no-op without a ramp)."""
        cd = self.ramp
        if cd is None:
            return f
        top = float(f[cd])
        return [self._val(round(top ** (i / cd) / self.step)) for i in range(cd)] + list(f[cd:])

    # ---- grid --------------------------------------------------------------------------------
    def _val(self, k: int) -> float:
        return round(int(k) * self.step, _DIGITS)

    def _k(self, v: float) -> int:
        return int(round(v / self.step))

    def snap(self, values: Sequence[float], n_hat: int | None = None, attn: float | None = None) -> Candidate:
        """The nearest valid candidate: round to the grid, clip to the bounds, make non-decreasing."""
        v = np.asarray(values, dtype=np.float64)
        if v.shape != self.lo.shape:
            raise LongRopeError(f"factor vector has {v.size} values, the space has {self.pairs} pairs")
        out: list[float] = []
        prev = -math.inf
        for i, x in enumerate(v):
            if self.tied[i]:
                out.append(math.nan)  # set from the critical pair below
                continue
            if self.fixed[i]:
                val = float(self.lo[i])
            else:
                k = min(max(self._k(x) if math.isfinite(x) else self.lo_k[i], self.lo_k[i]), self.hi_k[i])
                if prev > -math.inf:
                    k = max(k, int(math.ceil(prev / self.step - 1e-9)))
                val = self._val(min(k, self.hi_k[i]))
            out.append(val)
            prev = val
        if n_hat is None or n_hat not in self.n_hats:
            n_hat = self.n_hats[0] if n_hat is None else min(self.n_hats, key=lambda n: (abs(n - n_hat), n))
        return Candidate(tuple(self._tie(out)), int(n_hat), self._snap_attn(attn))

    def _snap_attn(self, attn: float | None) -> float:
        if attn is None or self.attn_bounds is None:
            return self.attn
        return self._val(min(max(self._k(attn), self.attn_bounds[0]), self.attn_bounds[1]))

    def is_valid(self, c: Candidate) -> bool:
        if len(c.factors) != self.pairs or c.n_hat not in self.n_hats:
            return False
        if self.attn_bounds is None:
            if c.attn != self.attn:
                return False
        elif not (self.attn_bounds[0] <= self._k(c.attn) <= self.attn_bounds[1] and c.attn == self._val(self._k(c.attn))):
            return False
        if self.ramp is not None and list(c.factors[:self.ramp]) != self._tie(list(c.factors))[:self.ramp]:
            return False
        prev = -math.inf
        for i, x in enumerate(c.factors):
            if x < prev:
                return False
            if self.tied[i]:
                pass
            elif self.fixed[i]:
                if x != self.lo[i]:
                    return False
            else:
                k = self._k(x)
                if x != self._val(k) or not self.lo_k[i] <= k <= self.hi_k[i]:
                    return False
            prev = x
        return True

    # ---- moves -------------------------------------------------------------------------------
    def mutate(self, c: Candidate, rng: np.random.Generator) -> Candidate:
        """Change each free pair with probability p to a grid value between its neighbours' values.

        Pairs are visited in order, so the left neighbour is already the new value and the right
        one the old: the vector stays non-decreasing. n_hat and the attention scale (when searched)
        change with the same probability. The result may equal `c`; callers retry. A ramp's pairs
        are not drawn; they follow the critical pair afterwards.
        """
        f = list(c.factors)
        p = self.mutation_prob
        n = len(f)
        for i in range(n):
            if self.fixed[i] or self.tied[i] or rng.random() >= p:
                continue
            low = self.lo_k[i]
            if i > 0 and not self.tied[i - 1]:
                low = max(low, int(math.ceil(f[i - 1] / self.step - 1e-9)))
            high = self.hi_k[i]
            if i + 1 < n:
                high = min(high, int(math.floor(f[i + 1] / self.step + 1e-9)))
            if low < high:
                f[i] = self._val(rng.integers(low, high + 1))
        n_hat = c.n_hat
        if len(self.n_hats) > 1 and rng.random() < p:
            others = [x for x in self.n_hats if x != n_hat]
            n_hat = others[int(rng.integers(len(others)))]
        attn = c.attn
        if self.attn_bounds is not None and rng.random() < p:
            k = self._k(attn) + int(rng.integers(-10, 11))
            attn = self._val(min(max(k, self.attn_bounds[0]), self.attn_bounds[1]))
        return Candidate(tuple(self._tie(f)), n_hat, attn)

    def crossover(self, a: Candidate, b: Candidate, rng: np.random.Generator) -> Candidate | None:
        """Take each pair (and n_hat, attention scale) from `b` with probability 0.5.

        Returns None when the child is not monotone (the caller draws again). A ramp's pairs follow
        the child's own critical factor.
        """
        take = rng.random(self.pairs) < 0.5
        f = tuple(self._tie([bv if t else av for av, bv, t in zip(a.factors, b.factors, take)]))
        n_hat = b.n_hat if rng.random() < 0.5 else a.n_hat
        attn = b.attn if rng.random() < 0.5 else a.attn
        if any(x > y for x, y in zip(f, f[1:])):
            return None
        return Candidate(f, n_hat, attn)

    def initial(self, seeds: Mapping[str, Sequence[float]], size: int, rng: np.random.Generator,
                *, seen: set | None = None, max_tries: int = 200) -> tuple[list[Candidate], dict[str, Candidate]]:
        """Seed candidates (snapped onto the space) followed by mutants of them, `size` in all.

        Returns (population, {seed name: its snapped candidate}). Mutants are drawn from the seeds
        in turn; duplicates are rejected. With no seeds the lower-bound vector is the seed.
        """
        named: dict[str, Candidate] = {}
        for name, vec in (seeds or {}).items():
            named[name] = self.snap(vec)
        if not named:
            named["lower"] = self.snap(self.lo)
        pop: list[Candidate] = []
        taken = set(seen or ())
        for c in named.values():
            if c not in taken and len(pop) < size:
                pop.append(c)
                taken.add(c)
        bases = list(dict.fromkeys(named.values()))
        turn = 0
        misses = 0
        while len(pop) < size and misses < max_tries * max(1, size):
            base = bases[turn % len(bases)]
            c = self.mutate(base, rng)
            if c in taken:
                misses += 1
                if misses % max_tries == 0 and pop:  # the seeds have little room: mutate mutants too
                    bases.append(pop[int(rng.integers(len(pop)))])
                continue
            pop.append(c)
            taken.add(c)
            turn += 1
        return pop, named
