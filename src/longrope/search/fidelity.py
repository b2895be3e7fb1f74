"""Which samples the cheap (screening) fitness uses.

`first` (default): the first `screen_docs` samples. `spread`: the samples whose NLL differs most
between the exact baselines (PI, NTK, YaRN; scored on every sample before the search anyway, so
the choice costs no forward pass) -- the samples most sensitive to the factors. Measured on the
built-in model at 8x: the first sample's perplexity ranks 16 candidates of a paper-preset search
with Spearman 0.52 against their 4-document score, while the sample with the widest baseline spread
ranks the candidates of generation 0 best (benchmarks/results/search_levers_builtin.txt).
"""
from __future__ import annotations

import math

from ..errors import LongRopeError

PICKS = ("first", "spread")


def pick_screen(objective, names: list[str], k: int, how: str) -> list[int]:
    """The sample indices of the screening fitness, best first (`k` of them)."""
    n = len(objective.samples)
    if how == "first" or not k:
        return list(range(min(k or 0, n)))
    if how != "spread":
        raise LongRopeError(f"unknown screen pick {how!r}; choose one of {', '.join(PICKS)}")
    nll = dict(objective.nll)
    if objective.world > 1:  # each rank holds the baselines it scored
        import torch.distributed as dist

        parts: list = [None] * objective.world
        dist.all_gather_object(parts, {k2: v for k2, v in nll.items() if k2[0] in names})
        for p in parts:
            nll.update(p)

    def spread(i: int) -> float:
        vals = [nll[(m, i)] for m in names if (m, i) in nll and math.isfinite(nll[(m, i)])]
        return max(vals) - min(vals) if len(vals) > 1 else 0.0

    return sorted(range(n), key=lambda i: (-spread(i), i))[:k]
