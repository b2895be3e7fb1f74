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
