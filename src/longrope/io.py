"""Atomic file output, and the safety of output folders.

`atomic_path`/`atomic_dir` write to a temporary file or folder beside the target, then rename: a
crash never leaves a half-written result. Output folders carry a marker file, `.longrope-run.json`
({"kind", "command", "finished", ...}); a folder without it was not made by longrope and is never
deleted or replaced (`atomic_dir` refuses it, `prepare_output` refuses it before the work).
`prepare_output` also locks the folder for the run (`fcntl.flock` on `.longrope.lock`, holding the
pid), so two runs never write into the same folder; a lock left by a dead process is free again.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import LongRopeError

MARKER = ".longrope-run.json"
LOCK = ".longrope.lock"


def cache_root() -> Path:
    """Where longrope keeps its caches (tokens/, scores/, the converter): `$LONGROPE_CACHE_DIR`, else
    `$XDG_CACHE_HOME/longrope`, else `~/.cache/longrope`."""
    env = os.environ.get("LONGROPE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "longrope"


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; results are ordinary files
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_file_output(path: str | os.PathLike, *, overwrite: bool = False, option: str = "--out") -> Path:
    """Before the work: `path` may take a single-file output. Refused in one line: a symbolic link or
    a folder there (never replaced), an existing file unless `overwrite`, a parent that is a file, and
    a place nothing can be written (probed with a temporary file, removed at once)."""
    path = Path(path).expanduser()
    if path.is_symlink():
        raise LongRopeError(f"{option} {path} is a symbolic link; longrope never replaces one: choose another file")
    if path.is_dir():
        raise LongRopeError(f"{option} {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise LongRopeError(f"{option} {path} exists; pass --overwrite to replace it, or choose another file")
    probe = path.parent
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise LongRopeError(f"cannot write {option} {path}: {probe} is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".longrope-probe.", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise LongRopeError(f"cannot write {option} {path}: {e.strerror} ({probe})") from None
    return path


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line and flush it to disk (for logs such as history.jsonl)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_json_object(path: str | os.PathLike, keys: tuple[str, ...] = ()) -> dict:
    """A JSON object longrope wrote (a state or checkpoint file), checked: one line if the file is
    unreadable, not JSON, not an object, or lacks one of `keys`."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise LongRopeError(f"cannot read {path}: {' '.join(str(e).split())}") from None
    if not isinstance(doc, dict):
        raise LongRopeError(f"{path} is not a longrope state file (not a JSON object)")
    missing = [k for k in keys if k not in doc]
    if missing:
        raise LongRopeError(f"{path} is not a longrope state file (missing {', '.join(missing)})")
    return doc


# -- markers: which folders are longrope's own ------------------------------------------------
def read_marker(folder: str | os.PathLike) -> dict | None:
    """The marker of a folder longrope wrote, or None (no marker, or not a readable one)."""
    try:
        doc = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("kind"), str) else None


def write_marker(folder: str | os.PathLike, kind: str, *, finished: bool) -> None:
    old = read_marker(folder) or {}
    write_json(Path(folder) / MARKER, {
        "kind": kind, "finished": bool(finished),
        "command": old.get("command") or "longrope " + " ".join(sys.argv[1:]),
        "started": old.get("started") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **({"finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())} if finished else {})})


def mark_finished(folder: str | os.PathLike) -> None:
    """Set `finished: true` in a folder's marker (a folder without one is left alone)."""
    m = read_marker(folder)
    if m is not None and not m.get("finished"):
        write_marker(folder, m["kind"], finished=True)


def _foreign(path: Path) -> bool:
    """True for something longrope must not replace: a file, or a non-empty folder without a marker
    that is not inside a marked folder (a checkpoint inside a run's work folder is the run's)."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        return True
    return (path.is_dir() and read_marker(path) is None and read_marker(path.parent) is None
            and any(path.iterdir()))


@contextmanager
def atomic_dir(path: str | os.PathLike, kind: str = "folder") -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` whole, marked as
    longrope's own (`kind`, finished). An existing `path` is replaced only when longrope made it
    (its marker) or it is an empty folder; anything else is refused, before and after the work."""
    path = Path(path)
    if _foreign(path):
        raise LongRopeError(_refusal(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a model folder is an ordinary folder
    try:
        yield tmp
        write_marker(tmp, kind, finished=True)
        if path.exists() or path.is_symlink():
            if _foreign(path):  # appeared during the work
                raise LongRopeError(_refusal(path))
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old)  # `old` is an empty folder: the rename replaces it
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _refusal(path: Path) -> str:
    if path.is_symlink():
        return f"{path} is a symbolic link; longrope never replaces it: choose another --out"
    if path.exists() and not path.is_dir():
        return f"{path} exists and is not a folder; longrope never replaces it: choose another --out"
    return (f"{path} is a non-empty folder that longrope did not make (no {MARKER}); longrope never "
            "replaces it: choose a new or empty --out")


# -- prepare an output folder before the work ------------------------------------------------
class RunLock:
    """An exclusive `fcntl.flock` on FOLDER/.longrope.lock holding the owner's pid. The kernel drops
    the lock when its process dies, so a lock left by a dead run is simply taken over."""

    def __init__(self, folder: str | os.PathLike):
        import fcntl

        self.path = Path(folder) / LOCK
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = os.read(self.fd, 32).decode(errors="replace").strip() or "?"
            finally:
                os.close(self.fd)
                self.fd = None
            raise LongRopeError(f"{folder} is in use by another longrope run (pid {pid}); wait for it "
                                "to end or choose another --out") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self.fd is not None:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _is_secondary_process() -> bool:
    """True in a non-zero rank under torchrun/accelerate: rank 0 owns the output folder."""
    return int(os.environ.get("RANK", "0") or 0) != 0


@contextmanager
def prepare_output(path: str | os.PathLike, *, kind: str, overwrite: bool = False, resume: bool = False,
                   clear: tuple[str, ...] = (), adopt: str | None = None) -> Iterator[Path]:
    """Check, before any work, that `path` may take a longrope output of `kind`; create it, mark it
    (unfinished) and lock it for the `with` block. If the block fails before writing anything,
    what this made (the folder, its marker and lock) is removed again.

    Refused in one line: a file or a symlink at `path`; a non-empty folder longrope did not make
    (whatever the flags: longrope never deletes what it did not create); a longrope output of
    another kind; one of this kind unless `resume` (continue it) or `overwrite` (replace it: the
    files named in `clear` are deleted now, a folder written by `atomic_dir` is replaced at the
    end); a folder or parent that cannot be written; a folder another run holds. `adopt` names a
    file that marks a folder of this kind written before markers existed (resumed, then marked).
    """
    path = Path(path).expanduser()
    if _is_secondary_process():
        yield path
        return
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise LongRopeError(_refusal(path))
    _check_parent(path)
    existed = path.is_dir()
    marker = read_marker(path) if existed else None
    if marker is None and resume and adopt and (path / adopt).is_file():
        marker = {"kind": kind, "finished": False}  # an older longrope's run: resumed as our own
    if existed and marker is None and any(p.name != LOCK for p in path.iterdir()):
        raise LongRopeError(_refusal(path))
    if marker is not None and marker["kind"] != kind:
        raise LongRopeError(f"{path} holds a longrope {marker['kind']} output, not a {kind} one; "
                            "choose another --out")
    lock = None
    if marker is not None:
        if not resume and not overwrite:
            _check_not_busy(path)  # a run in progress is reported as such (nothing written)
            state = "a finished" if marker.get("finished") else "an unfinished"
            more = "" if marker.get("finished") else " or --resume to continue it"
            raise LongRopeError(f"{path} already holds {state} longrope {kind} run; pass --overwrite to "
                                f"replace it{more}, or choose another --out")
    had_lock = (path / LOCK).exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock = RunLock(path)
        if marker is not None and overwrite and not resume:
            for name in clear:
                (path / name).unlink(missing_ok=True)
        if marker is None or not read_marker(path) or (overwrite and not resume and clear):
            write_marker(path, kind, finished=False)  # an atomic_dir output stays whole until replaced
    except OSError as e:
        _undo(path, existed, marker)
        raise LongRopeError(f"cannot write to --out {path}: {e.strerror}") from None
    try:
        yield path
    except BaseException:
        lock.release()
        if not had_lock:
            (path / LOCK).unlink(missing_ok=True)
        _undo(path, existed, marker)
        raise
    lock.release()


def _check_not_busy(path: Path) -> None:
    """Refuse a folder whose lock another process holds, without writing anything."""
    import fcntl

    try:
        fd = os.open(path / LOCK, os.O_RDONLY)
    except OSError:
        return  # no lock file: no run
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:
        pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
        raise LongRopeError(f"{path} is in use by another longrope run (pid {pid}); wait for it "
                            "to end or choose another --out") from None
    finally:
        os.close(fd)


def _undo(path: Path, existed: bool, marker: dict | None) -> None:
    """Remove what prepare_output added when nothing else was written since."""
    if marker is not None or not path.is_dir():
        return
    if {p.name for p in path.iterdir()} <= {MARKER, LOCK}:
        for name in (MARKER, LOCK):
            (path / name).unlink(missing_ok=True)
        if not existed:
            path.rmdir()


def _check_parent(path: Path) -> None:
    """One line, before the work, when `path` cannot be created or written."""
    probe = path if path.exists() else path.parent
    while not probe.exists():
        if probe.is_symlink() or probe == probe.parent:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise LongRopeError(f"cannot create --out {path}: {probe} is a file, not a folder")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise LongRopeError(f"cannot write to --out {path}: {probe} is not writable")
