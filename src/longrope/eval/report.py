"""Markdown tables and PNG plots of evaluation results (a `CompareResult`).

matplotlib is imported only when a plot is drawn (`pip install 'longrope[plot]'`).
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

from .results import CompareResult


def _fmt(v, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if pct:
        return f"{100 * v:.0f}%"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.3f}" if v < 100 else f"{v:.2f}" if v < 1e4 else f"{v:.1f}" if v < 1e6 else f"{v:.4g}"


def _pct(v: float) -> str:
    text = f"{100 * v:+.1f}%"
    return "+0.0%" if text == "-0.0%" else text


def _lengths(table: dict) -> list[str]:
    keys = {k for row in table.values() for k in row}
    return sorted(keys, key=int)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def _accuracy(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def tasks_table(results: dict, *, corner: str = "task \\ length") -> str:
    """Markdown table of {task: {length: accuracy}}: one row per task, one column per length."""
    lengths = sorted({int(n) for row in results.values() for n in row})
    rows = [[t] + [_accuracy(_get(row, n)) for n in lengths] for t, row in results.items()]
    return markdown_table([corner] + [str(n) for n in lengths], rows)


def tasks_method_table(by_method: dict) -> str:
    """Markdown table of {method: {task: {length: accuracy}}}: rows task x method, columns lengths."""
    rows = {}
    for task in dict.fromkeys(t for res in by_method.values() for t in res):
        for method, res in by_method.items():
            if task in res:
                rows[f"{task} / {method}"] = res[task]
    return tasks_table(rows, corner="task / method")


def _get(row: dict, n: int):
    v = row.get(n, row.get(str(n)))
    return None if v is None else float(v)


def length_table(table: dict, *, pct: bool = False, corner: str = "method") -> str:
    """A method x length table of {method: {length: value}}."""
    lengths = _lengths(table)
    rows = [[m] + [_fmt(vals.get(n), pct) for n in lengths] for m, vals in table.items()]
    return markdown_table([corner] + lengths, rows)


def ppl_table(result: CompareResult) -> str:
    return length_table(result.table("ppl"))


def passkey_table(result: CompareResult) -> str:
    """Accuracy per method and length, with its 95% Wilson interval where the run recorded one."""
    table = result.table("passkey")
    if not table:
        return ""
    ci = result.table("passkey_ci")
    lengths = _lengths(table)

    def cell(m, n):
        v, lohi = table[m].get(n), ci.get(m, {}).get(n)
        return _fmt(v, True) + (f" ({100 * lohi[0]:.0f}-{100 * lohi[1]:.0f})" if v is not None and lohi else "")

    return markdown_table(["method"] + lengths, [[m] + [cell(m, n) for n in lengths] for m in table])


def short_table(result: CompareResult) -> str:
    cost = result.relative_cost
    rows = [[m, _fmt(r.short_ppl), _fmt(result.unscaled_short_ppl), "-" if m not in cost else _pct(cost[m])]
            for m, r in result.methods.items() if r.short_ppl is not None]
    return markdown_table(["method", f"ppl @ {result.short_length}", "unscaled", "cost"], rows)


def samples_phrase(meta: dict) -> str:
    """'8 documents' (selected long documents) or '8 samples joined from 6 documents'."""
    info = meta.get("samples") or {}
    n = meta.get("docs", "?")
    if info.get("mode") == "join" and info.get("joined") is not None:
        return f"{n} samples joined from {info['joined']} documents"
    return f"{n} documents"


def render_report(result: CompareResult, images: dict[str, str] | None = None) -> str:
    """The markdown report; `images` maps "ppl" and method labels to PNG files that exist."""
    meta = result.meta
    images = images or {}
    out = ["# RoPE scaling comparison", ""]
    out.append(f"Model `{meta.get('model', '?')}`, original window {meta.get('original_window', '?')}, "
               f"baseline factor {meta.get('default_factor', 0):g}; data `{meta.get('data', '?')}` "
               f"({meta.get('split', '?')}), {samples_phrase(meta)} per length, perplexity "
               f"mode: {meta.get('ppl_mode', '?')}; dtype {meta.get('dtype', '?')}; seed {meta.get('seed', '?')}.")
    if meta.get("scaling"):
        out += ["", f"Model as loaded: scaling: {meta['scaling']}; `none` is the unscaled rotation."]
    out += ["", "Methods: " + "; ".join(f"`{k}` = {r.spec}" for k, r in result.methods.items()) + "."]
    out += ["", "## Perplexity by evaluation length", "", ppl_table(result)]
    if "ppl" in images:
        out += ["", f"![perplexity vs length]({images['ppl']})"]
    beyond = result.beyond_window()
    if beyond:
        out += ["", f"## Perplexity of the positions beyond the original window "
                f"({meta.get('original_window', '?')} to L)", "", length_table(beyond)]
    if result.table("passkey"):
        ci = " (in parentheses: the 95% Wilson interval)" if result.table("passkey_ci") else ""
        out += ["", f"## Passkey retrieval accuracy ({meta.get('passkey_trials', '?')} trials per length "
                f"and depth, depths {', '.join(f'{d:g}' for d in meta.get('depths', []))}){ci}", "",
                passkey_table(result)]
        out += [line for m in result.table("passkey") if m in images
                for line in ("", f"![passkey {m}]({images[m]})")]
    for section in EXTRA_SECTIONS:  # evaluations added later (issue 14: tasks) put their table here
        out += section(result, images)
    if any(r.short_ppl is not None for r in result.methods.values()):
        out += ["", "## Short-context cost (perplexity at the original window)", "", short_table(result)]
    return "\n".join(out) + "\n"


def tasks_section(result: CompareResult, images: dict[str, str] | None = None) -> list[str]:
    """Harness task accuracy per task x method x length (issue 14), and its plot when drawn."""
    tasks = {m: r.tasks for m, r in result.methods.items() if r.tasks}
    if not tasks:
        return []
    out = ["", f"## Tasks (lm-evaluation-harness, {result.meta.get('task_limit', '?')} samples per task "
           "and length; not comparable with published RULER numbers)", "", tasks_method_table(tasks)]
    if images and "tasks" in images:
        out += ["", f"![task accuracy]({images['tasks']})"]
    return out


def shipped_section(result: CompareResult, images: dict[str, str] | None = None) -> list[str]:
    """What each `shipped` row is, what its export dropped, and what that costs in perplexity."""
    from ..exporter import DROPPED_MEANS
    out = []
    for s in result.meta.get("shipped") or []:
        row, of = s["row"], s.get("of")
        if s.get("whole"):  # the export holds the factors whole: the row already scores the shipped model
            out += ["", f"## What was shipped: `{row}`", "", f"The exported folder `{s.get('folder')}` holds "
                    f"the `{row}` factors whole (the export dropped nothing), so `{row}` is what stock "
                    "runtimes run (`longrope check-runtime` measures transformers, vLLM and llama.cpp "
                    "against it); it was not scored a second time."]
            continue
        where = f"the exported folder `{s['folder']}` as stock transformers loads it" if s.get("folder") else \
            f"`{of}` as `longrope export --drop-n-hat --drop-short-attention` writes it (the stock form, applied)"
        dropped = s.get("dropped") or {}
        what = "; ".join(f"{k} = {v} ({DROPPED_MEANS.get(k, '')})" for k, v in dropped.items())
        out += ["", f"## What was shipped: `{row}`", "", f"`{row}` is {where}. "
                + (f"The export dropped what the stock config format cannot hold: {what}." if dropped
                   else "The export dropped nothing.")]
        if of in result.methods and row in result.methods:
            a, b = result.methods[row].ppl, result.methods[of].ppl
            cost = ", ".join(f"{n}: {_pct(a[n] / b[n] - 1)}" for n in sorted(a) if n in b and b[n])
            if cost:
                out += ["", f"Perplexity of `{row}` against `{of}` (what the search measured) per length: {cost}."]
    return out


EXTRA_SECTIONS = [tasks_section, shipped_section]


def require_plots() -> None:
    """Fail before the work when plots are asked for and matplotlib is missing."""
    _plt()


def _plt():
    from ..plotting import pyplot
    return pyplot()


def _save(fig, path: str | os.PathLike) -> None:
    from ..plotting import save_png
    save_png(fig, path)


def plot_ppl(result: CompareResult, path: str | os.PathLike, title: str | None = None) -> Path:
    """Perplexity against length, log-log, one line per method."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    try:
        for m, vals in result.table("ppl").items():
            pts = sorted((int(n), v) for n, v in vals.items() if v is not None and math.isfinite(v))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
        window = result.meta.get("original_window")
        if window:
            ax.axvline(window, color="grey", linestyle=":", linewidth=1, label=f"original window {window}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("evaluation length (tokens)")
        ax.set_ylabel("perplexity")
        ax.set_title(title or "Perplexity vs length")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        _save(fig, path)
    finally:
        plt.close(fig)
    return Path(path)


def plot_passkey(grid: dict[str, dict[str, float]], path: str | os.PathLike, title: str) -> Path:
    """Heat map of passkey accuracy: depth (rows) by length (columns)."""
    plt = _plt()
    lengths = sorted(grid, key=int)
    depths = sorted({d for row in grid.values() for d in row}, key=float)
    data = [[grid[n].get(d, float("nan")) for n in lengths] for d in depths]
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(lengths), 1.2 + 0.45 * len(depths)))
    try:
        im = ax.imshow(data, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(len(lengths)), lengths)
        ax.set_yticks(range(len(depths)), depths)
        ax.set_xlabel("length (tokens)")
        ax.set_ylabel("key depth")
        ax.set_title(title, fontsize=9)
        for i, row in enumerate(data):
            for j, v in enumerate(row):
                if not math.isnan(v):
                    ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=8)
        fig.colorbar(im, ax=ax, label="accuracy")
        _save(fig, path)
    finally:
        plt.close(fig)
    return Path(path)


def safe_name(label: str) -> str:
    """A file-name-safe form of a method label ('longrope:runs/x.json' -> 'longrope_runs_x.json')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "method"
