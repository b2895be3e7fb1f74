"""search.png: the best perplexity per generation beside the baselines, and the found factor curve
beside PI's, NTK's and YaRN's."""
from __future__ import annotations

import math
from pathlib import Path

from ..io import atomic_path
from .space import Candidate


def plot_search(path: str | Path, doc: dict, best: Candidate) -> bool:
    """Write the figure atomically; without matplotlib a one-line LongRopeError, as every plot."""
    from ..plotting import pyplot

    plt = pyplot()
    hist = doc["evolution"]["history"]
    gens = [h["generation"] for h in hist]
    best_ppl = [float(h["best_score"]) for h in hist]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(gens, best_ppl, marker="o", ms=3, label="search (best so far)")
    colors = {"pi": "C1", "ntk": "C2", "yarn": "C3"}
    for name, v in doc["baselines"].items():
        if math.isfinite(float(v)):
            a.axhline(float(v), ls="--", lw=1, color=colors.get(name, "grey"),
                      label=f"{name.upper()} (exact) {float(v):.3f}")
    a.set_xlabel("generation")
    a.set_ylabel(f"perplexity at {doc['config']['target_length']} tokens")
    a.set_title(f"{doc['config']['preset']} preset, {hist[-1]['evaluations']} evaluations")
    a.legend(fontsize=8)
    pairs = range(len(best.factors))
    for k, (name, values) in enumerate(doc["seeds"].items()):
        b.plot(pairs, values, lw=1, color=colors.get(name, f"C{4 + k}"), label=name.upper())
    b.plot(pairs, best.factors, lw=2, color="black", label=f"searched (n_hat={best.n_hat})")
    crit = doc["info"].get("critical_dim")
    if crit:
        b.axvline(crit // 2, color="grey", ls=":", label=f"critical dim {crit}")
    b.set_xlabel("rotary pair i (low i = high frequency)")
    b.set_ylabel("rescale factor lambda_i")
    b.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return True
