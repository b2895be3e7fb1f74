"""Atomic writes: nothing half-written, ordinary permissions."""
import os
import stat

import pytest

from longrope.io import atomic_dir, atomic_path, write_json


def test_atomic_path_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "r.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text().strip().startswith("{") and list(tmp_path.iterdir()) == [target]


def test_outputs_have_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        write_json(tmp_path / "f.json", {})
        with atomic_dir(tmp_path / "d") as d:
            (d / "x").write_text("x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_atomic_dir_replaces_whole(tmp_path):
    target = tmp_path / "d"
    with atomic_dir(target) as d:
        (d / "old").write_text("1")
    with atomic_dir(target) as d:
        (d / "new").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == [".longrope-run.json", "new"]
