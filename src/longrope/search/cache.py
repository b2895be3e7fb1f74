"""A score cache shared by searches: per-sample NLLs keyed by everything that decides them.

One entry is the NLL of one sample under one RoPE scaling, for one model's weights, dtype, device
type, loss chunking and objective. Entries live in append-only JSON-lines files, one per context
(model weights, dtype, device, chunk, objective), under the cache folder:

    DIR/<context hash>.jsonl    {"k": scaling hash, "s": sample hash, "nll": value}
    DIR/weights.json            {path: [size, mtime_ns, sha256]}   (file hashes, reused while unchanged)

An append is one `write` of one line to a file opened with O_APPEND under an exclusive `flock`,
so processes (torchrun ranks, concurrent searches) can share a folder; a torn last line (a process
killed mid-write) is skipped when read. A value read back is the exact float that was computed
(floats round-trip through JSON), so a search with a warm cache makes exactly the choices of a
cold one, only without the forward passes.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Sequence

from ..errors import LongRopeError
from ..io import write_json

try:  # POSIX; elsewhere appends rely on O_APPEND alone
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


def default_dir() -> Path:
    """`scores/` in longrope's cache folder (`$LONGROPE_CACHE_DIR`, else ~/.cache/longrope: io.cache_root)."""
    from ..io import cache_root
    return cache_root() / "scores"


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def weights_hash(model, folder: str | Path | None, cache_dir: Path) -> str:
    """sha256 over the model's safetensors files (each file's hash kept in DIR/weights.json while
    its size and mtime stay the same); without such files, over the loaded state dict's bytes."""
    files = sorted(Path(folder).glob("*.safetensors")) if folder and Path(folder).is_dir() else []
    if not files:
        return _state_hash(model)
    index_path = cache_dir / "weights.json"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = {}
    parts, changed = [], False
    for f in files:
        st = f.stat()
        key = str(f.resolve())
        got = index.get(key)
        if not (isinstance(got, list) and got[:2] == [st.st_size, st.st_mtime_ns]):
            got = [st.st_size, st.st_mtime_ns, _file_sha(f)]
            index[key], changed = got, True
        parts.append([f.name, got[2]])
    if changed:
        try:
            write_json(index_path, index)
        except OSError:  # a read-only cache still works, it only rehashes next time
            pass
    return _digest(parts)


def _state_hash(model) -> str:
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def sample_hashes(samples: Sequence) -> list[str]:
    """One hash per sample: its token ids (int64 bytes)."""
    import numpy as np

    return [hashlib.sha256(np.asarray(s.tolist(), dtype=np.int64).tobytes()).hexdigest()[:32] for s in samples]


def scaling_key(scaling) -> str:
    """The hash of everything a `Scaling` applies (its provenance excluded)."""
    d = dict(scaling.to_dict())
    d.pop("provenance", None)
    return _digest(d)[:32]


def _enc(x: float):
    return x if math.isfinite(x) else repr(x)


class ScoreCache:
    """Per-sample NLLs of one context, read once on open, appended as they are computed."""

    def __init__(self, folder: str | Path, context: dict):
        self.folder = Path(folder).expanduser()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LongRopeError(f"cannot create the score cache {self.folder}: {e}") from None
        self.context = context
        self.path = self.folder / f"{_digest(context)[:32]}.jsonl"
        self.hits = self.misses = 0
        self._mem: dict[tuple[str, str], float] = {}
        self._load()

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as e:
            raise LongRopeError(f"cannot read the score cache {self.path}: {e}") from None
        for line in text.splitlines():
            try:
                e = json.loads(line)
                self._mem[(e["k"], e["s"])] = float(e["nll"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn line from a killed writer

    def __len__(self) -> int:
        return len(self._mem)

    def get(self, key: str, sample: str) -> float | None:
        v = self._mem.get((key, sample))
        if v is None:
            self.misses += 1
        else:
            self.hits += 1
        return v

    def put(self, key: str, sample: str, nll: float) -> None:
        nll = float(nll)
        if (key, sample) in self._mem:
            return
        self._mem[(key, sample)] = nll
        line = (json.dumps({"k": key, "s": sample, "nll": _enc(nll)}) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
        finally:
            os.close(fd)  # closing releases the lock


def open_cache(folder, model, *, model_path, dtype: str, device: str, chunk: int, objective: str,
               positions) -> ScoreCache:
    """The cache of this model, dtype, device type, chunking and objective under `folder`."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LongRopeError(f"cannot create the score cache {folder}: {e}") from None
    context = {"format": "longrope-scores/1", "weights": weights_hash(model, model_path, folder),
               "dtype": str(dtype), "device": str(device).split(":")[0], "chunk": int(chunk),
               "objective": objective, "positions": list(positions) if positions else None}
    return ScoreCache(folder, context)


def for_search(cache, cfg, model, positions) -> ScoreCache | None:
    """The store a search uses: `cache` is a folder, "auto" (default_dir()) or None/False (off)."""
    if cache is None or cache is False:
        return None
    from ..models import resolve

    try:
        folder = resolve(cfg.model)
    except LongRopeError:
        folder = None
    dtype = next(iter(model.parameters())).dtype
    return open_cache(default_dir() if cache == "auto" else cache, model, model_path=folder,
                      dtype=str(dtype), device=cfg.device, chunk=cfg.chunk, objective=cfg.objective,
                      positions=positions)
