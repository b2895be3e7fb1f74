"""LongRoPE2's search (Shang et al. 2025, and its search code) as options of `longrope search`.

- The critical dimension. RoPE pairs whose period exceeds the original window never saw a full turn
  in pre-training; LongRoPE2's theoretical critical dimension is d_tcd = 2*ceil((d/2) log_b(L/(2 pi))).
  It searches only the pairs from the critical pair cd = K/2 up, with factors in [s, 2s].
  `--critical-dim auto` takes d_tcd, `K` a given even dimension, and because the useful value is
  found lower than theory (its scripts ship 33 and 27 pairs where the formula gives 34 and 33, and
  sweep 27/29/31/34 for Phi-4) `sweep` searches d_tcd and a few values around it in one run, and
  `K1,K2,...` those values (search/sweep.py).
- The pairs below the critical pair (`critical_low`): `ramp` (default, as its code does it) makes
  them follow the searched critical factor, lambda_i = lambda_cd ** (i / cd), recomputed after every
  mutation and crossover (`space.Space` with `ramp`), so the curve has no jump at the critical pair;
  `ntk` fixes them to the NTK seed's factors.
- Seeds (`critical_seeds`): `methods` = PI, NTK and YaRN snapped into the space (in a ramp space all
  three land on "s from the critical pair up"); `wide` adds its code's initial candidates, NTK-shaped
  ramps whose critical factor is 2.0, 2.2, ..., 3.4 times the scale (rising 0.1 per pair above it),
  and raises the space's upper bound so they fit.
- The objective (`OBJECTIVES`): `ppl`, LongRoPE's perplexity; `needle`, LongRoPE2's needle-driven
  perplexity, the NLL of the answer tokens of a needle planted in each document; `combined`, the
  text's NLL plus `needle_weight` times the answer's (search/objective.py).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import LongRopeError

OBJECTIVES = ("ppl", "needle", "combined")
CRITICAL_LOW = ("ramp", "ntk")
CRITICAL_SEEDS = ("methods", "wide")
WIDE_MULTIPLES = tuple(round(2.0 + 0.2 * k, 1) for k in range(8))  # 2.0 .. 3.4 times the scale
WIDE_PREFIX = "ntk-ramp:"  # the wide seeds' names
WIDE_RISE = 0.1  # per pair above the critical pair, as in its code's initial candidates
# the sweep, in pairs around the theoretical critical pair (first): mostly below, where LongRoPE2
# found the useful value
SWEEP_OFFSETS = (0, -2, -4, 2)


def critical_dim(dim: int, base: float, original: int) -> int:
    """LongRoPE2's theoretical critical dimension d_tcd = 2*ceil((d/2) * log_b(L / (2*pi)))."""
    return 2 * math.ceil((dim / 2) * math.log(original / (2 * math.pi)) / math.log(base))


def _check_value(value: int, dim: int) -> int:
    if value % 2 or not 0 < value < dim:
        raise LongRopeError(f"critical dimension {value} must be even and between 2 and {dim - 2} "
                            f"(rotary dim {dim})")
    return value


def _int(text, spec) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise LongRopeError(f"--critical-dim must be 'auto', 'sweep', an even number or a comma-separated "
                            f"list of them, got {spec!r}") from None


def critical_values(spec: str | int | None, dim: int, base: float, original: int) -> list[int] | None:
    """`--critical-dim` -> the even dimensions it names (several for `sweep` or a list), or None
    when not set. `sweep`: d_tcd first, then d_tcd + 2*o for o in SWEEP_OFFSETS[1:], those inside
    (0, dim)."""
    if spec is None or spec == "none":
        return None
    theory = critical_dim(dim, base, original)
    if spec == "auto":
        return [_check_value(theory, dim)]
    if spec == "sweep":
        out = [theory + 2 * o for o in SWEEP_OFFSETS if 0 < theory + 2 * o < dim]
        if not out:
            raise LongRopeError(f"no critical dimension of the sweep fits rotary dim {dim}")
        return list(dict.fromkeys(out))
    values = [_check_value(_int(v, spec), dim) for v in str(spec).split(",") if str(v).strip()]
    if not values:
        raise LongRopeError(f"--critical-dim names no value: {spec!r}")
    if len(set(values)) != len(values):
        raise LongRopeError(f"--critical-dim lists a value twice: {spec!r}")
    return values


def resolve_critical(spec: str | int | None, dim: int, base: float, original: int) -> int | None:
    """`--critical-dim auto|K` -> an even dimension 0 < K < dim, or None when not set; a spec naming
    several values is a sweep (search/sweep.py), refused here."""
    values = critical_values(spec, dim, base, original)
    if values is not None and len(values) > 1:
        raise LongRopeError(f"--critical-dim {spec} names {len(values)} values: a sweep runs one search per "
                            "value (search.sweep.run_sweep)")
    return None if values is None else values[0]


def is_sweep(spec) -> bool:
    """Whether `--critical-dim` names several values (checked without the model's dimensions)."""
    return spec == "sweep" or (isinstance(spec, str) and "," in spec)


def check_critical(cfg) -> None:
    """The LongRoPE2 settings of a SearchConfig, checked before any work (the values against the
    model's rotary dimension later, in `critical_values`)."""
    if cfg.critical_low not in CRITICAL_LOW:
        raise LongRopeError(f"unknown --critical-low {cfg.critical_low!r}; choose one of {', '.join(CRITICAL_LOW)}")
    if cfg.critical_seeds not in CRITICAL_SEEDS:
        raise LongRopeError(f"unknown --critical-seeds {cfg.critical_seeds!r}; choose one of "
                            f"{', '.join(CRITICAL_SEEDS)}")
    spec = cfg.critical_dim
    if spec not in (None, "none", "auto", "sweep"):
        values = [_int(v, spec) for v in str(spec).split(",") if v.strip()]
        if not values or len(set(values)) != len(values) or any(v % 2 or v < 2 for v in values):
            raise LongRopeError(f"--critical-dim {spec}: give distinct even dimensions >= 2")
    if cfg.critical_seeds != "methods" and spec in (None, "none"):
        raise LongRopeError(f"--critical-seeds {cfg.critical_seeds} seeds a --critical-dim search")


def wide_seeds(pairs: int, cd: int, scale: float) -> dict[str, np.ndarray]:
    """LongRoPE2's code's initial candidates: lambda_i = (m s) ** (i / cd) below the critical pair
    and m s + 0.1 (i - cd) from it up, for m in WIDE_MULTIPLES."""
    out = {}
    for m in WIDE_MULTIPLES:
        top = m * scale
        low = top ** (np.arange(cd) / cd)
        out[f"{WIDE_PREFIX}{m:g}s"] = np.concatenate([low, top + WIDE_RISE * np.arange(pairs - cd)])
    return out


def objective_terms(objective: str, length: int, answer_start: int | None, weight: float = 1.0):
    """What a sample's loss sums: None for plain perplexity (mean NLL of every token), else
    ((start, end, weight), ...) over target-position ranges, each range's mean NLL times its weight:
    needle = the answer tokens alone; combined = the text before the answer plus `weight` times the
    answer's NLL (the same forward pass gives both)."""
    if objective == "ppl":
        return None
    if objective not in OBJECTIVES:
        raise LongRopeError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if answer_start is None or not 1 < answer_start < length:
        raise LongRopeError(f"the {objective} objective needs an answer range inside the sample")
    if objective == "needle":
        return ((answer_start, length, 1.0),)
    return ((1, answer_start, 1.0), (answer_start, length, float(weight)))
