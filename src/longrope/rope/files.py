"""Factor files: our JSON (`Scaling.to_dict`), a Hugging Face config.json or model folder whose
rope entry is longrope/su, and the public LongRoPE code's plain-text factors.

The scale s of a public factor file (it holds only the factors) is, in this order: `factor=S`; else
`target_length / original_max_position` (the original defaults to the model's window, resolved
when the scaling meets a model); else the largest factor, but only when it is a whole number: the
public search lets factors reach 1 + s, so a largest factor of 8.62 says nothing exact about s and
is refused with a hint. A known s whose file holds a factor above 1 + s draws a warning.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..errors import LongRopeError, warn
from .scaling import FORMAT, Scaling

def load_scaling(path: str | Path, *, factor: float | None = None, target_length: int | None = None,
                 original_max_position: int | None = None) -> Scaling:
    """Read our JSON, a Hugging Face config.json (rope type longrope/su), or the public LongRoPE
    code's plain-text factors (one float per line, or one comma-separated row per layer). The
    keyword arguments override the file's values (for public factors they give the scale)."""
    path = Path(path).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        path = path / "config.json"
    if not path.is_file():
        raise LongRopeError(f"factor file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LongRopeError(f"cannot read factor file {path}: {e}") from None
    if not text.strip():
        raise LongRopeError(f"factor file is empty: {path}")
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise LongRopeError(f"bad JSON in {path}: {e.msg} at line {e.lineno}") from None
        scaling = Scaling.from_dict(data) if data.get("format") == FORMAT else _from_hf_config(data, path)
        overrides = dict(factor=factor, target_length=target_length, original_max_position=original_max_position)
        for key, value in overrides.items():
            if value is not None:
                setattr(scaling, key, value)
        scaling.__post_init__()
        return scaling
    return _from_public_csv(text, path, factor, target_length, original_max_position)


def _from_public_csv(text: str, path: Path, factor: float | None, target_length: int | None,
                     original_max_position: int | None) -> Scaling:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            rows.append([float(v) for v in re.split(r"[,\s]+", line) if v])
        except ValueError:
            raise LongRopeError(f"{path}:{n}: not a number in {line[:40]!r}") from None
    if all(len(r) == 1 for r in rows):
        factors = [r[0] for r in rows]
    elif all(r == rows[0] for r in rows):
        factors = rows[0]
    else:
        raise LongRopeError(f"{path} holds {len(rows)} different per-layer rows; per-layer factors "
                            "are not supported (one vector for all layers)")
    if not factors:
        raise LongRopeError(f"{path} holds no factors")
    largest = max(factors)
    if factor is None and not target_length:
        if abs(largest - round(largest)) > 1e-6 * largest:
            raise LongRopeError(f"{path}: the scale s is unknown and the largest factor {largest:g} is not a whole "
                                "number (public search factors reach 1 + s); pass :factor=S or :target_length=N")
        factor, note = largest, "scale s taken as the (whole) largest factor"
    else:
        note = "scale s from factor=" if factor is not None else "scale s = target_length / original window"
    scaling = Scaling("longrope", long_factor=factors, factor=factor, target_length=target_length,
                      original_max_position=original_max_position,
                      provenance={"source": str(path), "format": "LongRoPE public factors", "note": note})
    if scaling.factor is not None and largest > 1 + scaling.factor + 1e-6:
        warn(f"{path}: largest factor {largest:g} is above 1 + s = {1 + scaling.factor:g}; is the scale right?")
    return scaling


def _from_hf_config(cfg: dict[str, Any], path: Path) -> Scaling:
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling")
    if not isinstance(rope, dict):
        raise LongRopeError(f"{path} has no rope_scaling / rope_parameters entry")
    kind = rope.get("rope_type", rope.get("type"))
    if kind not in ("longrope", "su"):
        raise LongRopeError(f"{path}: rope type {kind!r} is not longrope/su")
    original = cfg.get("original_max_position_embeddings") or rope.get("original_max_position_embeddings")
    target = cfg.get("max_position_embeddings")
    for name, v in (("max_position_embeddings", target), ("original_max_position_embeddings", original)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise LongRopeError(f"{path}: {name} must be a positive integer, got {v!r}")
    if not original:
        original = target
    if not original:
        raise LongRopeError(f"{path}: a longrope rope entry needs the window: the config has neither "
                            "original_max_position_embeddings nor max_position_embeddings")
    factor = rope.get("factor")
    if factor is None:  # as transformers: the ratio of the extended window to the original one
        if not target:
            raise LongRopeError(f"{path}: the rope entry has no factor and the config no max_position_embeddings "
                                "to derive it from")
        factor = target / original
    if isinstance(factor, bool) or not isinstance(factor, (int, float)):
        raise LongRopeError(f"{path}: the rope entry's factor must be a number, got {factor!r}")
    attention = rope.get("attention_factor")
    if attention is not None and (isinstance(attention, bool) or not isinstance(attention, (int, float))):
        raise LongRopeError(f"{path}: attention_factor must be a number, got {attention!r}")
    return Scaling("longrope", long_factor=rope.get("long_factor"), short_factor=rope.get("short_factor"),
                   factor=float(factor), original_max_position=int(original),
                   target_length=target,
                   attention=float(attention) if attention is not None else "su",
                   provenance={"source": str(path), "format": "Hugging Face config"})
