"""The evolutionary search of LongRoPE, independent of models.

The contract: `evolve(fitness, space, settings, seeds=..., screen=..., state=..., on_generation=...)`
minimises a batch fitness (`fitness(list[Candidate]) -> list[float]`, lower is better, e.g.
perplexity) over a `search.space.Space`; it knows no model, no data and no files, and takes every
random choice from `settings.seed`. Generation 0 scores a seeded population; every later generation
keeps the top `parents` and adds `mutations` mutants and `crossovers` crossovers of them. A
candidate is scored at most once (per fidelity); non-finite scores rank last.

Faster mode (successive halving): with `screen` (a cheap fitness, e.g. perplexity on one document)
new candidates are scored cheaply first and only the most promising (at most `promote` of them,
and only those that beat the worst parent on the cheap score) get the full fitness. `patience`
stops the search when the best full score has not improved for that many generations.

After every generation `on_generation(state)` receives a JSON-serialisable state holding the
parents, every evaluation, the random generator's state and the history; `evolve(..., state=s)`
continues from it and ends exactly as the uninterrupted run would.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import LongRopeError
from .space import Candidate, Space

Fitness = Callable[[list[Candidate]], Sequence[float]]
FORMAT = "longrope-evolution/1"


@dataclass(frozen=True)
class Settings:
    """The evolution's counts; the defaults are the paper's (64 + 40 * 32 = 1,344 evaluations).
    `promote`: the share of screened children that may get the full fitness; `patience`: flat
    generations before stopping (None: never); `tol`: the relative gain a generation needs not to
    count as flat."""
    population: int = 64
    iterations: int = 40
    parents: int = 32
    mutations: int = 16
    crossovers: int = 16
    seed: int = 0
    promote: float = 1.0
    patience: int | None = None
    tol: float = 0.0


@dataclass
class Result:
    best: Candidate
    score: float
    parents: list[tuple[Candidate, float]]
    generations: int  # generations run after the initial one
    evaluations: int  # full-fidelity evaluations
    screened: int  # cheap evaluations
    stopped_early: bool
    history: list[dict]
    state: dict = field(repr=False)


def _enc(x: float):
    x = float(x)
    return x if math.isfinite(x) else repr(x)  # "nan", "inf", "-inf": exact through JSON


def _dec(x) -> float:
    return float(x)


def _rank_key(item: tuple[Candidate, float]):
    s = item[1]
    return (0, s) if math.isfinite(s) else (1, 0.0)


def rank(items: list[tuple[Candidate, float]]) -> list[tuple[Candidate, float]]:
    """Best first; stable, so ties keep their order; non-finite scores last."""
    return sorted(items, key=_rank_key)


class _Scorer:
    """Memoised batch scoring at one fidelity; every call to the fitness is logged in order."""

    def __init__(self, fn: Fitness, name: str, log: list):
        self.fn, self.name, self.log, self.memo = fn, name, log, {}

    def __call__(self, cands: list[Candidate], generation: int) -> list[float]:
        new = [c for c in dict.fromkeys(cands) if c not in self.memo]
        if new:
            scores = list(self.fn(new))
            if len(scores) != len(new):
                raise LongRopeError(f"the fitness returned {len(scores)} scores for {len(new)} candidates")
            for c, s in zip(new, scores):
                s = float(s)
                self.memo[c] = s
                self.log.append({"generation": generation, "fidelity": self.name,
                                 "candidate": c.to_json(), "score": _enc(s)})
        return [self.memo[c] for c in cands]


def _children(parents: list[Candidate], space: Space, rng: np.random.Generator, n_mut: int,
              n_cross: int, seen, max_tries: int = 100) -> list[Candidate]:
    """`n_mut` mutants and `n_cross` crossovers, all new; a crossover that keeps coming out
    invalid or already seen (converged parents) is replaced by a mutant."""
    out: list[Candidate] = []
    fresh: set[Candidate] = set()

    def new(c):
        if c is not None and c not in fresh and not seen(c):
            out.append(c)
            fresh.add(c)
            return True
        return False

    def mutant():
        return any(new(space.mutate(parents[int(rng.integers(len(parents)))], rng)) for _ in range(max_tries))

    for _ in range(n_mut):
        mutant()
    for _ in range(n_cross):
        if len(parents) < 2 or not any(
                new(space.crossover(*(parents[int(i)] for i in rng.choice(len(parents), size=2, replace=False)), rng))
                for _ in range(max_tries)):
            mutant()
    return out


def evolve(fitness: Fitness, space: Space, settings: Settings = Settings(), *,
           seeds: Mapping[str, Sequence[float]] | None = None, screen: Fitness | None = None,
           state: dict | None = None, on_generation: Callable[[dict], None] | None = None) -> Result:
    """Minimise `fitness` over `space` with `settings`, from the named `seeds` (factor vectors) or
    from a saved `state`; see the module docstring."""
    st = settings
    if min(st.population, st.parents) < 1 or min(st.iterations, st.mutations, st.crossovers) < 0:
        raise LongRopeError("population and parents must be >= 1; iterations, mutations, crossovers >= 0")
    if st.parents > st.population:
        raise LongRopeError(f"parents ({st.parents}) cannot exceed the population ({st.population})")
    if not 0.0 < st.promote <= 1.0:
        raise LongRopeError(f"promote must be in (0, 1], got {st.promote}")
    # what a saved state must match to be continued
    saved = {"population": st.population, "iterations": st.iterations, "parents": st.parents,
             "mutations": st.mutations, "crossovers": st.crossovers, "seed": st.seed,
             "screen": screen is not None, "promote": st.promote, "patience": st.patience, "tol": st.tol,
             "space": space.describe()}
    log: list[dict] = []
    full = _Scorer(fitness, "full", log)
    cheap = _Scorer(screen, "screen", log) if screen is not None else None
    seen = (lambda c: c in full.memo or c in cheap.memo) if cheap else (lambda c: c in full.memo)
    rng = np.random.default_rng(st.seed)

    if state is not None:
        pars, history, start, stall, seed_names = _restore_state(state, saved, log, full, cheap, rng)
    else:
        pars, seed_names = _initial_generation(space, seeds, st.population, st.parents, rng, full, cheap)
        history = [_summary(0, pars, full, cheap)]
        start, stall = 1, 0
        if on_generation:
            on_generation(_state(saved, 0, rng, pars, log, history, stall, seed_names))

    stopped = False
    gen = start - 1
    for gen in range(start, st.iterations + 1):
        if st.patience is not None and stall >= st.patience:
            stopped, gen = True, gen - 1
            break
        kids = _children([c for c, _ in pars], space, rng, st.mutations, st.crossovers, seen)
        pars, stall = _next_generation(pars, kids, gen, full, cheap, parents=st.parents,
                                       promote=st.promote, tol=st.tol, stall=stall)
        history.append(_summary(gen, pars, full, cheap))
        if on_generation:
            on_generation(_state(saved, gen, rng, pars, log, history, stall, seed_names))
    final = _state(saved, gen, rng, pars, log, history, stall, seed_names)
    return Result(best=pars[0][0], score=pars[0][1], parents=pars, generations=max(gen, 0),
                  evaluations=len(full.memo), screened=len(cheap.memo) if cheap else 0,
                  stopped_early=stopped, history=history, state=final)


def _restore_state(state: dict, settings: dict, log: list, full: _Scorer, cheap: _Scorer | None,
                   rng: np.random.Generator):
    """Refill the log, the score memos and the generator from a saved state; returns
    (parents, history, first generation to run, stall, seed names)."""
    if state.get("format") != FORMAT:
        raise LongRopeError("not a search state file (wrong format)")
    if state["settings"] != settings:
        diff = sorted(k for k in settings if state["settings"].get(k) != settings[k])
        raise LongRopeError(f"the saved state was made with different settings: {', '.join(diff)}")
    for e in state["evaluations"]:
        log.append(e)
        (full if e["fidelity"] == "full" else cheap).memo[Candidate.from_json(e["candidate"])] = _dec(e["score"])
    rng.bit_generator.state = state["rng"]
    pars = [(Candidate.from_json(c), _dec(s)) for c, s in state["parents"]]
    return pars, list(state["history"]), state["generation"] + 1, state["stall"], dict(state["seeds"])


def _initial_generation(space: Space, seeds, population: int, parents: int, rng: np.random.Generator,
                        full: _Scorer, cheap: _Scorer | None):
    """Generation 0: the seeded population, screened when `cheap` is given (the seeds always get
    the full fitness); returns (ranked parents, seed names)."""
    pop, named = space.initial(seeds or {}, population, rng)
    seed_names = {k: v.to_json() for k, v in named.items()}
    if cheap:
        cs = cheap(pop, 0)
        seeds_set = set(named.values())
        ordered = [c for c, _ in rank(list(zip(pop, cs)))]
        chosen = [c for c in pop if c in seeds_set]
        chosen += [c for c in ordered if c not in seeds_set][:max(0, parents - len(chosen))]
    else:
        chosen = pop
    return rank(list(zip(chosen, full(chosen, 0))))[:parents], seed_names


def _next_generation(pars, kids: list[Candidate], gen: int, full: _Scorer, cheap: _Scorer | None, *,
                     parents: int, promote: float, tol: float, stall: int):
    """Score this generation's children (screened first when `cheap` is given) and keep the top
    `parents`; returns (new parents, new stall count)."""
    if cheap and kids:
        ks = cheap(kids, gen)
        par_cheap = [cheap.memo.get(c, math.inf) for c, _ in pars]
        bar = max((s for s in par_cheap if math.isfinite(s)), default=math.inf)
        ranked = rank(list(zip(kids, ks)))[:max(1, math.ceil(promote * len(kids)))]
        kids = [c for c, s in ranked if math.isfinite(s) and (s <= bar or len(pars) < parents)]
    before = pars[0][1]
    pars = rank(pars + list(zip(kids, full(kids, gen))))[:parents]
    after = pars[0][1]
    improved = math.isfinite(after) and (not math.isfinite(before) or after < before - tol * abs(before))
    return pars, 0 if improved else stall + 1


def _summary(gen: int, pars, full: _Scorer, cheap: _Scorer | None) -> dict:
    best, score = pars[0]
    return {"generation": gen, "best_score": _enc(score), "best": best.to_json(),
            "evaluations": len(full.memo), "screened": len(cheap.memo) if cheap else 0}


def _state(settings, gen, rng, pars, log, history, stall, seed_names) -> dict:
    return {"format": FORMAT, "settings": settings, "generation": gen,
            "rng": rng.bit_generator.state, "parents": [[c.to_json(), _enc(s)] for c, s in pars],
            "evaluations": list(log), "history": list(history), "stall": stall, "seeds": seed_names}
