"""The settings of one search: `SearchConfig` (every option and its default, once), the presets, and
`resolved()`, the one place a preset is merged with the explicit values. The runner, the cost
bound (`search/cost.py`), recipes (`pipeline.py`, `plan.py`) and the command all read a resolved
config, so a search and its plan cannot disagree about what the preset means.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..errors import LongRopeError
from .evolution import Settings
from .longrope2 import OBJECTIVES, check_critical


@dataclass(frozen=True)
class Preset:
    population: int
    iterations: int
    parents: int
    mutations: int
    crossovers: int
    mutation_prob: float
    screen_docs: int | None = None  # documents of the cheap fitness; None: no screening
    promote: float = 1.0  # at most this fraction of new candidates gets the full fitness
    patience: int | None = None  # stop after this many generations without improvement
    descent_steps: int = 0  # gradient steps before the evolution (search/descent.py); 0: none
    descent_hold: float = 0.0  # share of the highest-frequency pairs the descent leaves at the start


PRESETS = {
    # The paper and its code: 64 + 40 * 32 = 1,344 evaluations, each on all documents.
    "paper": Preset(64, 40, 32, 16, 16, 0.3),
    # Default: a gradient descent on the factors from the best seed (search/descent.py; where it does
    # not apply -- short factors -- the evolution alone), then a small
    # population over a few generations whose children are screened on one document, and only the
    # best quarter of them (those beating the worst parent there) is scored on all documents.
    # The descent holds the first 1/16 of the pairs (the highest frequencies), along which the
    # perplexity is too rugged for its steps; the evolution still moves them. Why these numbers, with
    # the runs that chose them: docs/results/search.md.
    "fast": Preset(16, 25, 8, 8, 8, 0.3, screen_docs=1, promote=0.25, patience=8, descent_steps=40,
                   descent_hold=0.0625),
}
PRESET_FIELDS = tuple(f.name for f in fields(Preset))  # a SearchConfig's None there: the preset's value
WHERE = ("device", "trust_remote_code")  # the only settings a resumed run may change (where it runs)
# Saved configs from before a field existed hold no value for it: the value their run had (critical-dim
# searches before issue 26 fixed the pairs below the critical pair to NTK's factors).
BEFORE = {"descent_hold": 0.0, "critical_low": "ntk", "critical_seeds": "methods", "needle_weight": 1.0}


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
    objective: str = "ppl"  # ppl | needle | combined (search/longrope2.py)
    needle_weight: float = 1.0  # combined: sample loss = text NLL + this x the needle answer's NLL
    critical_dim: str | None = None  # auto | K | sweep | K1,K2,... (search/longrope2.py, search/sweep.py)
    critical_low: str = "ramp"  # pairs below the critical pair: ramp (lambda_cd ** (i / cd)) | ntk (fixed)
    critical_seeds: str = "methods"  # methods (PI/NTK/YaRN) | wide (+ LongRoPE2's NTK ramps at 2-3.4 s)
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

    @classmethod
    def from_saved(cls, config: dict, **where) -> "SearchConfig":
        """A config saved in state.json or descent.json (resolved when it was written), with the
        values of fields it predates, and `where` (device, trust_remote_code) replaced."""
        return cls(**{**BEFORE, **config, **where})

    def resolved(self) -> "SearchConfig":
        """Preset values filled in where no explicit value was given; values checked. Idempotent.
        `screen_docs` and `patience` 0 (or None after resolving) mean off."""
        if self.preset not in PRESETS:
            raise LongRopeError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        preset = asdict(PRESETS[self.preset])
        c = replace(self, **{k: preset[k] for k in PRESET_FIELDS if getattr(self, k) is None})
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
        if c.objective not in OBJECTIVES:
            raise LongRopeError(f"unknown objective {c.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if isinstance(c.needle_weight, bool) or not isinstance(c.needle_weight, (int, float)) or c.needle_weight < 0:
            raise LongRopeError(f"--needle-weight must be a number >= 0, got {c.needle_weight!r}")
        check_critical(c)
        if c.descent_steps < 0 or not c.descent_lr > 0 or not c.descent_lr_end >= 0 or not 0 <= c.descent_hold < 1:
            raise LongRopeError("--descent-steps must be >= 0, --descent-lr > 0, --descent-lr-end >= 0, "
                                "--descent-hold in [0, 1)")
        if c.descent_steps and c.short_of:  # every objective is differentiable; short factors are not descended
            if self.descent_steps:  # asked for explicitly
                raise LongRopeError("the gradient descent (--descent-steps) is for long-factor searches; "
                                    "set --descent-steps 0")
            c.descent_steps = 0  # the preset's descent: only where it applies
        return c

    def evolution(self) -> Settings:
        """The evolution's settings (`search.evolution.evolve`) of this resolved config."""
        return Settings(population=self.population, iterations=self.iterations, parents=self.parents,
                        mutations=self.mutations, crossovers=self.crossovers, seed=self.seed,
                        promote=self.promote, patience=self.patience or None)
