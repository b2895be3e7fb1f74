"""Report tables and plots from a hand-made results dict."""
from __future__ import annotations

import pytest

from longrope.errors import LongRopeError
from longrope.eval.report import (length_table, markdown_table, plot_passkey, plot_ppl, render_report,
                                  safe_name, short_table)
from tests.helpers import without_module

RESULTS = {
    "ppl": {"none": {"256": 10.0, "512": 250.5, "1024": 12345.0}, "yarn": {"256": 10.5, "512": 11.0, "1024": 12.25}},
    "passkey": {"none": {"256": 1.0, "512": 0.0}, "yarn": {"256": 1.0, "512": 0.8}},
    "passkey_depth": {"none": {"256": {"0": 1.0, "1": 1.0}, "512": {"0": 0.0, "1": 0.0}},
                      "yarn": {"256": {"0": 1.0, "1": 1.0}, "512": {"0": 0.6, "1": 1.0}}},
    "short_ppl": {"none": 10.0, "yarn": 10.5},
    "short": {"length": 256, "unscaled_ppl": 10.0, "relative_cost": {"none": 0.0, "yarn": 0.05}},
    "meta": {"model": "m", "original_window": 256, "default_factor": 4.0, "docs": 3, "depths": [0, 1],
             "passkey_trials": 5, "methods": {"none": "none", "yarn": "yarn:4"}},
}


def test_tables_values_and_order():
    t = length_table(RESULTS["ppl"])
    lines = t.splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == ["method", "256", "512", "1024"]
    assert [c.strip() for c in lines[2].split("|")[1:-1]] == ["none", "10.000", "250.50", "12345.0"]
    assert "12.250" in lines[3]
    assert "80%" in length_table(RESULTS["passkey"], pct=True)
    s = short_table(RESULTS)
    assert "+5.0%" in s and "+0.0%" in s and "ppl @ 256" in s
    assert markdown_table(["a", "bb"], [["x", "y"]]).splitlines()[1] == "|---|----|"


def test_report_mentions_everything():
    md = render_report(RESULTS, {"ppl": "ppl.png", "yarn": "passkey_yarn.png"})
    assert md.count("## ") == 3 and "![perplexity vs length](ppl.png)" in md
    assert "passkey_yarn.png" in md and "`yarn` = yarn:4" in md and "3 documents per length" in md


def test_plots_are_png(tmp_path):
    plot_ppl(RESULTS, tmp_path / "p.png")
    plot_passkey(RESULTS["passkey_depth"]["yarn"], tmp_path / "k.png", "yarn")
    for name in ("p.png", "k.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.png", "p.png"]  # no temp files left


def test_missing_matplotlib_is_one_line_error(tmp_path, monkeypatch):
    with without_module(monkeypatch, "matplotlib"), \
            pytest.raises(LongRopeError, match=r"pip install 'longrope\[plot\]'"):
        plot_ppl(RESULTS, tmp_path / "p.png")


def test_safe_name():
    assert safe_name("longrope:runs/x y.json") == "longrope_runs_x_y.json"
