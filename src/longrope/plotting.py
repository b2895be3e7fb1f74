"""matplotlib, imported only when a figure is drawn: one place that says what is missing."""
from __future__ import annotations

from .errors import LongRopeError


def pyplot():
    """`matplotlib.pyplot` on the non-interactive Agg backend; a one-line LongRopeError without
    matplotlib (`pip install 'longrope[plot]'`)."""
    try:
        import matplotlib
    except ImportError:
        raise LongRopeError("plots need matplotlib: pip install 'longrope[plot]'") from None
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def save_png(fig, path) -> None:
    """Write `fig` as a PNG at `path` atomically (a crash leaves the old file or none)."""
    from .io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
