"""search.png: the best perplexity per generation beside the baselines, and the found factor curve
beside PI's, NTK's and YaRN's."""
from __future__ import annotations

import math
from pathlib import Path

from ..io import atomic_path
from .space import Candidate


def have_matplotlib() -> bool:
    """Whether search.png can be drawn (checked before a search, which then says so up front)."""
    try:
        import matplotlib  # noqa: F401 - importable, not merely present (a broken install counts as missing)
    except ImportError:
        return False
    return True


def plot_search(path: str | Path, doc: dict, best: Candidate) -> bool:
    """Write the figure atomically; without matplotlib a one-line LongRopeError, as every plot."""
    from ..plotting import pyplot

    plt = pyplot()
    hist = doc["evolution"]["history"]
    gens = [h["generation"] for h in hist]
    best_ppl = [float(h["best_score"]) for h in hist]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(gens, best_ppl, marker="o", ms=3, label="search (best so far)")
    descent = (doc.get("info") or {}).get("descent")
    if descent and descent.get("history"):  # drawn in [-1, 0): the steps before generation 0
        vals = [float(h["value"]) for h in descent["history"]]
        xs = [-1 + (k + 1) / len(vals) for k in range(len(vals))]
        a.plot(xs, vals, lw=1, color="grey", label=f"descent, {len(vals)} steps (in [-1, 0])")
    colors = {"pi": "C1", "ntk": "C2", "yarn": "C3"}
    for name, v in doc["baselines"].items():
        if math.isfinite(float(v)):
            a.axhline(float(v), ls="--", lw=1, color=colors.get(name, "grey"),
                      label=f"{name.upper()} (exact) {float(v):.3f}")
    a.set_xlabel("generation" + (" (the descent before 0)" if descent else ""))
    a.set_ylabel(f"perplexity at {doc['config']['target_length']} tokens")
    from .cost import describe, doc_cost
    cost = doc_cost(doc)
    import textwrap
    title = f"{doc['config']['preset']} preset: " + (describe(cost) if cost else f"{hist[-1]['evaluations']} evaluations")
    a.set_title(textwrap.fill(title, 80), fontsize=8)
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
