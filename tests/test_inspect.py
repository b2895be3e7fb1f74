"""`longrope inspect`: factor table and PNG."""
from longrope.cli import main
from longrope.inspect_scaling import Dims, factor_table
from longrope.rope.spec import parse_spec


def test_factor_table_regimes():
    dims = Dims(64, 10000.0, 256)
    yarn = factor_table(parse_spec("yarn:8"), dims)
    assert yarn[0]["regime"] == "extrapolated" and yarn[-1]["regime"] == "interpolated"
    assert any(r["regime"] == "blended" for r in yarn)
    pi = factor_table(parse_spec("pi:8"), dims)
    assert all(r["regime"] == "interpolated" and abs(r["factor"] - 8) < 1e-4 for r in pi)
    assert not pi[-1]["full_turn_in_window"] and pi[0]["full_turn_in_window"]


def test_inspect_cli_writes_png(tmp_path, capsys):
    png = tmp_path / "f.png"
    assert main(["inspect", "yarn:8", "--compare", "pi:8,ntk:8", "--head-dim", "64", "--window", "256",
                 "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "ntk:8" in out and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_marks_the_theoretical_and_the_searched_critical_pair(tmp_path, capsys, monkeypatch):
    from longrope.inspect_scaling import critical_pairs
    from longrope.rope.scaling import Scaling

    dims = Dims(64, 10000.0, 256)  # the built-in model: d_tcd 26, pair 13
    lam = [round(10.0 ** (i / 11), 2) for i in range(11)] + [10.0 + 0.1 * j for j in range(21)]
    sc = Scaling(method="longrope", long_factor=lam, original_max_position=256, target_length=2048, factor=8.0,
                 provenance={"critical_dim": 22})
    assert critical_pairs(sc, dims) == {"theory": 13, "searched": 11}
    path = tmp_path / "f.json"
    sc.save(path)
    drawn = {}
    import longrope.inspect_scaling as mod
    real = mod.plot_factors
    monkeypatch.setattr(mod, "plot_factors", lambda c, p, t, critical=None: drawn.update(critical) or real(c, p, t, critical))
    png = tmp_path / "f.png"
    assert main(["inspect", f"longrope:{path}", "--compare", "ntk:8", "--head-dim", "64", "--window", "256",
                 "--plot", str(png)]) == 0
    out = capsys.readouterr().out.splitlines()
    row = lambda p: next(x for x in out if x.split()[:1] == [str(p)])  # noqa: E731 - the first table's row
    assert "theoretical critical pair (d_tcd 26)" in row(13) and "searched critical pair (dim 22)" in row(11)
    assert drawn == {"theoretical critical pair": 13, f"critical pair searched (longrope:{path})": 11}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
