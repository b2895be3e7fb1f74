"""The command line: --help everywhere, one-line errors with exit status 2."""
import sys

import pytest

from longrope.cli import build_parser, main
from tests.helpers import run_group


def subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_every_subcommand_has_help(capsys):
    names = subcommands()
    assert {"inspect", "export"} <= set(names)
    for name in names:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert "usage: longrope" in capsys.readouterr().out


@pytest.mark.parametrize("argv,msg", [
    (["inspect", "warp:2", "--head-dim", "64"], "unknown scaling method"),
    (["inspect", "longrope:/nope.json", "--head-dim", "64"], "factor file not found"),
    (["inspect", "yarn:4", "--head-dim", "63"], "positive even"),
    (["inspect", "yarn:4", "--model", "/no/such/model"], "model folder not found"),
    (["export", "--model", "/no/such/model", "--scaling", "yarn:4", "--out", "/tmp/x"], "model folder not found"),
])
def test_errors_are_one_line_exit_2(capsys, argv, msg):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_wrong_factor_count_for_the_model(tmp_path, capsys):
    from tests.helpers import make_tiny
    make_tiny("llama").save_pretrained(tmp_path / "m")
    (tmp_path / "f.csv").write_text("1.0\n2.0\n")
    rc = main(["export", "--model", str(tmp_path / "m"), "--scaling", f"longrope:{tmp_path / 'f.csv'}",
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "2 factors but the model has 8 rotary pairs" in err


def test_console_script_runs_as_a_process():
    r = run_group([sys.executable, "-m", "longrope", "inspect", "pi:2", "--head-dim", "8", "--window", "16"],
                  timeout=120)
    assert r.returncode == 0 and "interpolated" in r.stdout
    r = run_group([sys.executable, "-m", "longrope", "inspect", "pi:0"], timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
