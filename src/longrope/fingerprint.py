"""Cheap identities of a run's inputs, so `extend --resume` can refuse a folder made by a different
recipe, model or data: the recipe as JSON, a model as its path + config.json + the names, sizes and
modification times of its weight files, a data source as its path + the names, sizes and times of
its files (the built-in corpus as the name `builtin`). Hashing sizes and times instead of contents
keeps this instant for a 7B model; a copied model folder gets new times and is refused, which errs
on the safe side."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

MAX_FILES = 2000  # a data folder with more files is identified by the first ones (sorted) and the count


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return sorted(Path().glob(str(path))) if any(c in str(path) for c in "*?[") else []


def _stat_list(files: list[Path], root: Path) -> list:
    out = []
    for p in files[:MAX_FILES]:
        st = p.stat()
        out.append([str(p.relative_to(root)) if p != root else p.name, st.st_size, int(st.st_mtime)])
    return out + ([len(files)] if len(files) > MAX_FILES else [])


def model_identity(model: str) -> dict:
    from .models import BUILTIN, resolve

    if model == BUILTIN:
        import longrope
        return {"model": BUILTIN, "longrope": longrope.__version__}
    path = resolve(model).resolve()
    if path.is_file():  # a single-file model (.gguf): its name, size and time stand for config and weights
        return {"model": str(path), "files": _digest(_stat_list([path], path))}
    config = (path / "config.json").read_bytes()
    weights = [p for p in sorted(path.iterdir()) if p.suffix in (".safetensors", ".bin", ".json") and p.is_file()
               and p.name != "config.json"]
    return {"model": str(path), "config": hashlib.sha256(config).hexdigest()[:16],
            "files": _digest(_stat_list(weights, path))}


def data_identity(data: str | None) -> dict:
    if data in (None, "builtin"):
        return {"data": "builtin"}
    if data == "pydocs":  # the Debian package's HTML tree
        from .data.prose import HTML_ROOT
        files = _files(HTML_ROOT)
        return {"data": "pydocs", "files": _digest(_stat_list(files, HTML_ROOT)) if files else "missing"}
    spec = str(data)
    base = spec.split(":", 1)[0] if ":" in spec and not Path(spec).exists() else spec  # jsonl:FIELD
    path = Path(base).expanduser()
    files = _files(path)
    root = path if path.is_dir() else path.parent
    return {"data": spec, "files": _digest(_stat_list(files, root)) if files else "missing"}


def run_fingerprint(recipe_doc: dict, model: str, data: str | None) -> dict:
    """{"recipe": hash, "model": identity, "data": identity}: what a resumed run must match."""
    return {"recipe": _digest(recipe_doc), "model": model_identity(model), "data": data_identity(data)}


def mismatch(saved: dict, now: dict) -> str | None:
    """The first part of two fingerprints that differs ('recipe', 'model', 'data'), else None."""
    for key in ("recipe", "model", "data"):
        if saved.get(key) != now.get(key):
            return key
    return None
