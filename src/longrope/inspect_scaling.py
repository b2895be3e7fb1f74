"""Per-pair view of a scaling: factor, wavelength, and whether the pair is extrapolated or
interpolated at the target length; optional PNG of several methods' factor curves.

Both mark LongRoPE2's critical pair: the theoretical one (d_tcd / 2, the first pair whose period
exceeds the original window, search/longrope2.py) and, for searched factors, the one their search
used (the factor file's provenance)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .rope.basis import base_inv_freq, factors_of
from .rope.scaling import Scaling
from .rope.spec import parse_spec


@dataclass
class Dims:
    dim: int
    base: float
    original: int

    @classmethod
    def from_model(cls, model: str, *, trust_remote_code: bool = False) -> "Dims":
        from .errors import LongRopeError
        from .models import load_config, rope_config
        dim, base, original = rope_config(load_config(model, trust_remote_code=trust_remote_code))
        if base is None:  # no rope_theta: not a RoPE model, so there are no pairs to show
            raise LongRopeError(f"{model} has no rotary position embedding (no rope_theta in its config); "
                                "inspect shows RoPE scalings only (or pass --head-dim)")
        return cls(dim, float(base), original)


def factor_table(scaling: Scaling, dims: Dims, seq_len: int | None = None) -> list[dict]:
    """One row per rotary pair: index, original wavelength, lambda, scaled wavelength, regime."""
    inv, _ = scaling.inv_freq(dim=dims.dim, base=dims.base, original=dims.original, seq_len=seq_len)
    lam = factors_of(inv, dims.dim, dims.base)
    theta = base_inv_freq(dims.dim, dims.base).double()
    full = max(lam.max().item(), scaling.factor or 1.0)
    rows = []
    for i, (t, f) in enumerate(zip(theta.tolist(), lam.tolist())):
        wave = 2 * math.pi / t
        regime = ("extrapolated" if abs(f - 1) < 1e-3 else
                  "interpolated" if f >= full * (1 - 1e-3) else "blended")
        rows.append({"pair": i, "wavelength": wave, "factor": f, "scaled_wavelength": wave * f,
                     "regime": regime, "full_turn_in_window": wave <= dims.original})
    return rows


def critical_pairs(scaling: Scaling, dims: Dims) -> dict[str, int]:
    """{"theory": d_tcd / 2, "searched": the critical pair the factors were searched with, if any}."""
    from .search.longrope2 import critical_dim

    out = {"theory": critical_dim(dims.dim, dims.base, dims.original) // 2}
    used = (scaling.provenance or {}).get("critical_dim")
    if isinstance(used, int) and 0 < used < dims.dim:
        out["searched"] = used // 2
    return out


def format_table(spec: str, scaling: Scaling, rows: list[dict], dims: Dims) -> str:
    head = (f"{spec}: {scaling.describe()}  (rotary dim {dims.dim}, base {dims.base:g}, "
            f"original window {dims.original})")
    crit = critical_pairs(scaling, dims)
    marks = {crit["theory"]: [f"theoretical critical pair (d_tcd {2 * crit['theory']})"]}
    if "searched" in crit:
        marks.setdefault(crit["searched"], []).append(f"searched critical pair (dim {2 * crit['searched']})")
    lines = [head, f"{'pair':>4} {'wavelength':>12} {'factor':>8} {'scaled wl':>12}  regime"]
    for r in rows:
        turn = "" if r["full_turn_in_window"] else "  (no full turn in window)"
        mark = "".join(f"  <- {m}" for m in marks.get(r["pair"], []))
        lines.append(f"{r['pair']:>4} {r['wavelength']:>12.1f} {r['factor']:>8.3f} "
                     f"{r['scaled_wavelength']:>12.1f}  {r['regime']}{turn}{mark}")
    return "\n".join(lines)


def plot_factors(curves: dict[str, list[float]], path: str | Path, title: str,
                 critical: dict[str, int] | None = None) -> None:
    """The factor curves, log scale; `critical` {label: pair} draws a vertical line at each pair."""
    from .io import atomic_path
    from .plotting import pyplot
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, lam in curves.items():
        ax.plot(range(len(lam)), lam, marker=".", label=name)
    for (label, pair), style in zip((critical or {}).items(), (":", "--", "-.", (0, (1, 3)))):
        ax.axvline(pair, color="grey", linestyle=style, linewidth=1, label=f"{label}: pair {pair}")
    ax.set_xlabel("rotary pair i (high frequency -> low)")
    ax.set_ylabel("factor lambda_i")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def inspect(specs: list[str], dims: Dims, *, seq_len: int | None = None,
            plot: str | Path | None = None) -> str:
    out, curves, critical = [], {}, {}
    for spec in specs:
        scaling = parse_spec(spec)
        rows = factor_table(scaling, dims, seq_len)
        out.append(format_table(spec, scaling, rows, dims))
        curves[spec] = [r["factor"] for r in rows]
        crit = critical_pairs(scaling, dims)
        critical["theoretical critical pair"] = crit["theory"]
        if "searched" in crit:
            critical[f"critical pair searched ({spec})"] = crit["searched"]
    if plot:
        plot_factors(curves, plot, f"factors, dim {dims.dim}, base {dims.base:g}, window {dims.original}",
                     critical=critical)
    return "\n\n".join(out)
