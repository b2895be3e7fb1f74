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
