"""Report tables and plots from a hand-made results dict."""
from __future__ import annotations

import pytest

from longrope.errors import LongRopeError
from longrope.eval.results import CompareResult
from longrope.eval.report import (length_table, markdown_table, plot_passkey, plot_ppl, render_report,
                                  safe_name, short_table)
from tests.helpers import without_module

DOC = {
    "ppl": {"none": {"256": 10.0, "512": 250.5, "1024": 12345.0}, "yarn": {"256": 10.5, "512": 11.0, "1024": 12.25}},
    "passkey": {"none": {"256": 1.0, "512": 0.0}, "yarn": {"256": 1.0, "512": 0.8}},
    "passkey_depth": {"none": {"256": {"0": 1.0, "1": 1.0}, "512": {"0": 0.0, "1": 0.0}},
                      "yarn": {"256": {"0": 1.0, "1": 1.0}, "512": {"0": 0.6, "1": 1.0}}},
    "short_ppl": {"none": 10.0, "yarn": 10.5},
    "short": {"length": 256, "unscaled_ppl": 10.0, "relative_cost": {"none": 0.0, "yarn": 0.05}},
    "meta": {"model": "m", "original_window": 256, "default_factor": 4.0, "docs": 3, "depths": [0, 1],
             "passkey_trials": 5, "methods": {"none": "none", "yarn": "yarn:4"}},
}
RESULTS = CompareResult.from_json(DOC)


def test_tables_values_and_order():
    t = length_table(DOC["ppl"])
    lines = t.splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == ["method", "256", "512", "1024"]
    assert [c.strip() for c in lines[2].split("|")[1:-1]] == ["none", "10.000", "250.50", "12345.0"]
    assert "12.250" in lines[3]
    assert "80%" in length_table(DOC["passkey"], pct=True)
    s = short_table(RESULTS)
    assert "+5.0%" in s and "+0.0%" in s and "ppl @ 256" in s
    assert markdown_table(["a", "bb"], [["x", "y"]]).splitlines()[1] == "|---|----|"


def test_passkey_table_shows_the_wilson_interval_where_recorded():
    from longrope.eval.report import passkey_table

    doc = dict(DOC, passkey_ci={"yarn": {"256": [0.57, 1.0], "512": [0.376, 0.964]}})
    r = CompareResult.from_json(doc)
    t = passkey_table(r)
    assert "| 80% (38-96)" in t and "| 100% (57-100)" in t and "0%" in t  # `none` has no interval recorded
    assert CompareResult.from_json(r.to_json()).table("passkey_ci") == doc["passkey_ci"]
    assert "95% Wilson interval" in render_report(r) and "Wilson" not in render_report(RESULTS)


def test_report_mentions_everything():
    md = render_report(RESULTS, {"ppl": "ppl.png", "yarn": "passkey_yarn.png"})
    assert md.count("## ") == 3 and "![perplexity vs length](ppl.png)" in md
    assert "passkey_yarn.png" in md and "`yarn` = yarn:4" in md and "3 documents per length" in md


def test_plots_are_png(tmp_path):
    plot_ppl(RESULTS, tmp_path / "p.png")
    plot_passkey(DOC["passkey_depth"]["yarn"], tmp_path / "k.png", "yarn")
    for name in ("p.png", "k.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.png", "p.png"]  # no temp files left


def test_missing_matplotlib_is_one_line_error(tmp_path, monkeypatch):
    with without_module(monkeypatch, "matplotlib"), \
            pytest.raises(LongRopeError, match=r"pip install 'longrope\[plot\]'"):
        plot_ppl(RESULTS, tmp_path / "p.png")


def test_safe_name():
    assert safe_name("longrope:runs/x y.json") == "longrope_runs_x_y.json"


def test_json_round_trip_keeps_the_layout():
    doc = RESULTS.to_json()
    for key in ("ppl", "passkey", "passkey_depth", "short_ppl"):
        assert doc[key] == DOC[key]
    assert doc["short"]["relative_cost"] == pytest.approx(DOC["short"]["relative_cost"])
    assert doc["short"]["length"] == 256 and doc["meta"]["methods"] == DOC["meta"]["methods"]
    again = CompareResult.from_json(doc)
    assert again.to_json() == doc and again.methods["yarn"].ppl[1024] == 12.25


def test_shipped_results_json_still_loads():
    import json
    from pathlib import Path
    path = Path(__file__).parents[2] / "docs" / "results" / "builtin-8x-before-filter" / "results.json"  
    doc = json.loads(path.read_text())
    res = CompareResult.from_json(doc)
    assert res.to_json()["ppl"] == doc["ppl"] and res.to_json()["passkey"] == doc["passkey"]
    assert "longrope" in render_report(res)


def test_report_links_only_written_plots(tmp_path):
    from longrope.eval.outputs import write_outputs
    images = write_outputs(CompareResult.from_json(DOC), tmp_path)
    md = (tmp_path / "report.md").read_text()
    import re
    for link in re.findall(r"\]\(([^)]+)\)", md):
        assert (tmp_path / link).is_file(), link
    assert set(images) == {"ppl", "none", "yarn"}


def test_results_json_is_written_before_plots_fail(tmp_path, monkeypatch):
    from longrope.eval import outputs

    def boom(*a, **k):
        raise RuntimeError("plotting broke")
    monkeypatch.setattr(outputs, "plot_ppl", boom)
    with pytest.raises(RuntimeError):
        outputs.write_outputs(CompareResult.from_json(DOC), tmp_path)
    assert (tmp_path / "results.json").is_file()


def test_shipped_reports_link_only_files_that_exist():
    import re
    from pathlib import Path
    for report in (Path(__file__).parents[2] / "docs" / "results").glob("*/report.md"):
        for link in re.findall(r"\]\(([^)]+\.png)\)", report.read_text()):
            assert (report.parent / link).is_file(), f"{report}: {link}"
