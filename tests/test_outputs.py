"""Output safety (issue 17): longrope never deletes or replaces what it did not write, a run's folder
is locked while in use, and a run's outputs say whether it finished."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from longrope import cli
from longrope.errors import LongRopeError
from longrope.io import LOCK, MARKER, RunLock, atomic_dir, prepare_output, read_marker
from tests.helpers import cli_env, save_tiny, spawn, write_texts

SEARCH = ["--target-length", "64", "--docs", "2", "--population", "4", "--parents", "2", "--mutations", "2",
          "--crossovers", "2", "--iterations", "2", "--patience", "0", "--screen-docs", "0"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    return save_tiny(root / "model"), write_texts(root / "texts", n=8, words=200)


def foreign(folder):
    """A user's folder: notes and a sub-folder, no marker."""
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "keep.txt").write_text("keep\n")
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def contents(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def one_error(capsys, rc):
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    return err


# -- atomic_dir and prepare_output ------------------------------------------------------------
def test_atomic_dir_refuses_a_foreign_folder_and_a_file(tmp_path):
    before = foreign(tmp_path / "user")
    with pytest.raises(LongRopeError, match="did not make"):
        with atomic_dir(tmp_path / "user") as d:
            (d / "x").write_text("x")
    assert contents(tmp_path / "user") == before
    (tmp_path / "f").write_text("data")
    with pytest.raises(LongRopeError, match="not a folder"):
        with atomic_dir(tmp_path / "f"):
            pass
    assert (tmp_path / "f").read_text() == "data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "user"]  # no .old, no temporary folder


def test_atomic_dir_replaces_its_own_output_and_an_empty_folder(tmp_path):
    (tmp_path / "e").mkdir()
    with atomic_dir(tmp_path / "e", "export") as d:
        (d / "a").write_text("1")
    assert read_marker(tmp_path / "e")["kind"] == "export" and read_marker(tmp_path / "e")["finished"]
    with atomic_dir(tmp_path / "e", "export") as d:
        (d / "b").write_text("2")
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == [MARKER, "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]


def test_inside_a_marked_folder_everything_is_longropes(tmp_path):
    """A checkpoint folder inside a run's (marked) work folder is replaced even without its own marker,
    as one written by an older longrope; the same folder outside a marked one is refused."""
    with prepare_output(tmp_path / "work", kind="finetune-work"):
        (tmp_path / "work" / "checkpoint").mkdir()
        (tmp_path / "work" / "checkpoint" / "state.json").write_text("{}")
        with atomic_dir(tmp_path / "work" / "checkpoint") as d:
            (d / "state.json").write_text('{"step": 2}')
    assert (tmp_path / "work" / "checkpoint" / "state.json").read_text() == '{"step": 2}'
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "state.json").write_text("{}")
    with pytest.raises(LongRopeError, match="did not make"):
        with atomic_dir(tmp_path / "loose"):
            pass


def test_a_failed_run_leaves_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError):
        with prepare_output(tmp_path / "new", kind="export"):
            raise RuntimeError("bad input found after the check")
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError):
        with prepare_output(tmp_path / "empty", kind="export"):
            raise RuntimeError
    assert list((tmp_path / "empty").iterdir()) == []


def test_lock_refuses_a_second_run_and_a_dead_owner_is_taken_over(tmp_path):
    out = tmp_path / "run"
    code = f"import time; from longrope.io import RunLock; RunLock({str(out)!r}); print('locked', flush=True); time.sleep(60)"
    out.mkdir()
    with spawn([sys.executable, "-c", code], stdout=subprocess.PIPE, env=cli_env()) as holder:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LongRopeError, match=f"in use by another longrope run \\(pid {holder.pid}\\)"):
            RunLock(out)
    assert (out / LOCK).read_text().strip() == str(holder.pid)  # the dead owner's pid is still there
    lock = RunLock(out)  # ... and its lock is free: taken over
    lock.release()


# -- the commands -----------------------------------------------------------------------------
def test_export_never_replaces_a_users_folder_or_file(tmp_path, capsys):
    before = foreign(tmp_path / "user")
    for extra in ([], ["--overwrite"]):
        one_error(capsys, cli.main(["export", "--scaling", "yarn:2", "--out", str(tmp_path / "user"), *extra]))
        assert contents(tmp_path / "user") == before
    (tmp_path / "model.bin").write_text("precious")
    err = one_error(capsys, cli.main(["export", "--scaling", "yarn:2", "--out", str(tmp_path / "model.bin")]))
    assert "not a folder" in err and (tmp_path / "model.bin").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "user"]  # no hidden .model.bin.old


def test_export_twice_needs_overwrite(tmp_path, capsys, assets):
    model, _ = assets
    out = tmp_path / "exp"
    argv = ["export", "--model", str(model), "--scaling", "yarn:2", "--out", str(out)]
    assert cli.main(argv) == 0
    first = contents(out)
    assert json.loads(first[MARKER])["finished"] is True and json.loads(first[MARKER])["kind"] == "export"
    capsys.readouterr()
    err = one_error(capsys, cli.main(argv[:4] + ["pi:2"] + argv[5:]))
    assert "already holds a finished longrope export run" in err and contents(out) == first
    assert cli.main(argv[:4] + ["pi:2"] + argv[5:] + ["--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text())["rope_scaling"]["type"] == "linear"
    err = one_error(capsys, cli.main(["search", "--model", str(model), "--target-length", "64", "--out", str(out)]))
    assert "holds a longrope export output, not a search one" in err


def test_finetune_refuses_to_overwrite_a_finished_run(tmp_path, capsys, assets):
    model, texts = assets
    out = tmp_path / "ft"
    argv = ["finetune", "--model", str(model), "--data", str(texts), "--scaling", "yarn:2", "--length", "64",
            "--steps", "1", "--batch-size", "1", "--out", str(out), "--cache-dir", str(tmp_path / "c"),
            "--no-progress", "--threads", "1"]
    assert cli.main(argv) == 0
    first = contents(out)
    assert json.loads(first[MARKER]) | {"kind": "finetune", "finished": True} == json.loads(first[MARKER])
    capsys.readouterr()
    err = one_error(capsys, cli.main(argv))
    assert "already holds a finished longrope finetune run; pass --overwrite" in err and contents(out) == first
    assert cli.main(argv + ["--overwrite"]) == 0
    assert (out / "finetune.json").is_file() and read_marker(out)["finished"]


def test_search_interrupted_is_not_final_then_resumes(tmp_path, capsys, assets, monkeypatch):
    """An interrupted search leaves factors.partial.json (never factors.json), state done: false and an
    unfinished marker; --resume ends with factors.json, no partial file and a finished marker. Without
    matplotlib the search says so before the work and writes everything but search.png."""
    import longrope.search.runner as runner

    model, texts = assets
    out = tmp_path / "s"
    real = runner.evolve

    def interrupted(*a, **kw):
        record = kw["on_generation"]

        def then_ctrl_c(evo):  # generation 1 is recorded, then the user presses Ctrl-C
            record(evo)
            if evo["generation"] >= 1:
                raise KeyboardInterrupt
        return real(*a, **{**kw, "on_generation": then_ctrl_c})

    monkeypatch.setattr(runner, "evolve", interrupted)
    monkeypatch.setattr("longrope.search.plot.have_matplotlib", lambda: False)
    argv = ["search", "--model", str(model), "--data", str(texts), *SEARCH, "--out", str(out)]
    assert cli.main(argv) == 130
    names = {p.name for p in out.iterdir()}
    assert "factors.partial.json" in names and "factors.json" not in names
    assert json.loads((out / "state.json").read_text())["done"] is False and not read_marker(out)["finished"]
    err = capsys.readouterr().err
    assert "matplotlib is not installed" in err.splitlines()[0]  # said before the work
    monkeypatch.setattr(runner, "evolve", real)
    monkeypatch.setattr("longrope.search.plot.plot_search", lambda *a, **k: False)
    one_error(capsys, cli.main(argv))  # no --resume, no --overwrite: refused
    assert cli.main(["search", "--out", str(out), "--resume"]) == 0
    names = {p.name for p in out.iterdir()}
    assert "factors.json" in names and "factors.partial.json" not in names and "search.png" not in names
    assert read_marker(out)["finished"] and json.loads((out / "state.json").read_text())["done"]
    capsys.readouterr()
    assert cli.main(argv + ["--overwrite"]) == 0  # replaced: a fresh search, finished again
    assert read_marker(out)["finished"] and (out / "factors.json").is_file()


def test_two_searches_into_one_out_the_second_fails_at_once(tmp_path, capsys, assets):
    model, texts = assets
    out = tmp_path / "s"
    argv = ["search", "--model", str(model), "--data", str(texts), *SEARCH, "--out", str(out)]
    with prepare_output(out, kind="search"):  # a first run, in progress
        t0 = time.time()
        err = one_error(capsys, cli.main(argv + ["--overwrite"]))
        assert "in use by another longrope run" in err and time.time() - t0 < 10
        assert {p.name for p in out.iterdir()} == {MARKER, LOCK}


def test_search_progress_lines_outside_a_terminal(tmp_path, capsys, assets):
    model, texts = assets
    assert cli.main(["search", "--model", str(model), "--data", str(texts), *SEARCH, "--out", str(tmp_path / "s")]) == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("search fast:")]
    gens = [x for x in lines if "generation" in x and "best ppl" in x]
    assert len(gens) == 3 and all("elapsed, ETA" in x and "/" in x for x in gens)  # generations 0, 1, 2


def test_a_search_folder_from_before_markers_still_resumes(tmp_path, capsys, assets, monkeypatch):
    import longrope.search.runner as runner

    model, texts = assets
    out = tmp_path / "old"
    real = runner.evolve

    def stop_after_first(*a, **kw):
        record = kw["on_generation"]

        def then_ctrl_c(evo):
            record(evo)
            raise KeyboardInterrupt
        return real(*a, **{**kw, "on_generation": then_ctrl_c})

    monkeypatch.setattr(runner, "evolve", stop_after_first)
    assert cli.main(["search", "--model", str(model), "--data", str(texts), *SEARCH, "--out", str(out)]) == 130
    (out / MARKER).unlink()  # as an older longrope left it
    monkeypatch.setattr(runner, "evolve", real)
    assert cli.main(["search", "--out", str(out), "--resume"]) == 0
    assert read_marker(out)["finished"] and (out / "factors.json").is_file()


@pytest.mark.parametrize("exc", [
    OSError(30, "Read-only file system", "/mnt/ro/out"), OSError(28, "No space left on device", "/big/out"),
    NotADirectoryError(20, "Not a directory", "/a/file/out"), IsADirectoryError(21, "Is a directory", "/d"),
    PermissionError(13, "Permission denied", "/root/x")])
def test_io_errors_print_one_line(capsys, monkeypatch, exc):
    import longrope.commands.inspect as inspect_cmd

    def fail(args):
        raise exc

    monkeypatch.setattr(inspect_cmd, "run", fail)
    rc = cli.main(["inspect", "yarn:2", "--head-dim", "16"])
    err = one_error(capsys, rc)
    assert err == f"longrope inspect: error: {exc.strerror}: {exc.filename}\n"


def test_progress_outside_a_terminal_writes_plain_lines():
    import io

    from longrope.progress import Progress

    stream = io.StringIO()
    p = Progress(100, "finetune", "step", stream=stream)
    assert not p.tty
    for _ in range(100):
        p.update(1)
        p.set_postfix(loss="1.0")
    p.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 20 and lines[0].startswith("finetune: 5/100 step, loss=1.0, ")
    assert all("elapsed, ETA" in x for x in lines) and lines[-1].startswith("finetune: 100/100 step")
    quiet = io.StringIO()
    Progress(10, "x", enabled=False, stream=quiet).update(10)
    assert quiet.getvalue() == ""
