"""A comparison's files: results.json first (so a failing plot loses nothing), then the PNG plots,
then report.md linking exactly the plots that were written."""
from __future__ import annotations

from pathlib import Path

from ..io import write_json, write_text
from .report import plot_passkey, plot_ppl, render_report, require_plots, safe_name
from .results import CompareResult


def planned_images(result: CompareResult) -> dict[str, str]:
    images = {"ppl": "ppl.png"}
    images.update({m: f"passkey_{safe_name(m)}.png" for m in result.table("passkey_depth")})
    if any(r.tasks for r in result.methods.values()):
        images["tasks"] = "tasks.png"
    return images


def write_outputs(result: CompareResult, out_dir, *, plots: bool = True) -> dict[str, str]:
    """DIR/results.json, then (unless plots=False) ppl.png and passkey_<method>.png, then report.md.
    Returns {"ppl" or method label: image file}."""
    out = Path(out_dir)
    images = planned_images(result) if plots else {}
    if plots:
        require_plots()
    result.meta["files"] = sorted(["results.json", "report.md"] + list(images.values()))
    write_json(out / "results.json", result.to_json())
    if plots:
        plot_ppl(result, out / images["ppl"], title=f"Perplexity vs length ({result.meta.get('model', '')})")
        for m, grid in result.table("passkey_depth").items():
            plot_passkey(grid, out / images[m], title=f"passkey accuracy: {m}")
        if "tasks" in images:
            from .tasks import plot_tasks
            plot_tasks({m: r.tasks for m, r in result.methods.items() if r.tasks}, out / images["tasks"])
    write_text(out / "report.md", render_report(result, images))
    return images
