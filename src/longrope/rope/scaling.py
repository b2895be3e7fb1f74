"""`Scaling`: one RoPE scaling, validated, with its spec string, our JSON format, the public
LongRoPE factor file and Hugging Face configs.

Our factor file (JSON, `"format": "longrope-scaling", "version": 1`):

    {"format": "longrope-scaling", "version": 1, "method": "longrope",
     "long_factor": [...], "short_factor": [...] | null, "n_hat": 0,
     "original_max_position": 256, "target_length": 2048, "factor": 8.0,
     "attention": "su" | "yarn" | 1.17, "short_attention": null | 1.0,
     "params": {}, "provenance": {...}}

`original_max_position` null means "the model's own window"; `factor` is s = target / original.
`short_attention` (null: same as `attention`) is the attention scale while the short factors are
in use; stock runtimes apply one scale to both, so a different value does not export exactly.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LongRopeError
from . import registry

FORMAT = "longrope-scaling"
VERSION = 1


@dataclass
class Scaling:
    method: str = "none"
    factor: float | None = None
    long_factor: list[float] | None = None
    short_factor: list[float] | None = None
    n_hat: int = 0
    original_max_position: int | None = None
    target_length: int | None = None
    attention: str | float = "su"
    short_attention: str | float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.method = registry.get(self.method).name
        if self.method == "longrope":
            if not self.long_factor:
                raise LongRopeError("a longrope scaling needs long factors")
            self.long_factor = _check_factors(self.long_factor, "long_factor")
            if self.short_factor is not None:
                self.short_factor = _check_factors(self.short_factor, "short_factor")
                if len(self.short_factor) != len(self.long_factor):
                    raise LongRopeError(f"short_factor has {len(self.short_factor)} values, "
                                        f"long_factor {len(self.long_factor)}")
            if self.factor is None and self.target_length and self.original_max_position:
                self.factor = self.target_length / self.original_max_position
        elif self.method != "none" and self.factor is None:
            raise LongRopeError(f"{self.method} needs a factor, e.g. '{self.method}:8'")
        for name in ("original_max_position", "target_length"):  # wrong JSON types: one line, not a traceback
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise LongRopeError(f"{name} must be a positive integer (or null), got {v!r}")
        if self.factor is not None and (isinstance(self.factor, bool) or not isinstance(self.factor, (int, float))):
            raise LongRopeError(f"scale factor must be a positive number, got {self.factor!r}")
        if not isinstance(self.params, dict) or not isinstance(self.provenance, dict):
            raise LongRopeError("params and provenance must be JSON objects")
        if self.factor is not None and not (math.isfinite(self.factor) and self.factor > 0):
            raise LongRopeError(f"scale factor must be a positive number, got {self.factor}")
        if not isinstance(self.n_hat, int) or self.n_hat < 0:
            raise LongRopeError(f"n_hat must be a non-negative integer, got {self.n_hat!r}")
        if self.n_hat and self.method != "longrope":
            raise LongRopeError("n_hat (un-interpolated start positions) applies to longrope only")
        self.attention = _check_attention(self.attention, "attention")
        if self.short_attention is not None:
            if self.method != "longrope" or self.short_factor is None:
                raise LongRopeError("short_attention needs a longrope scaling with short factors")
            self.short_attention = _check_attention(self.short_attention, "short_attention")

    # -- the math --------------------------------------------------------------------------
    @property
    def switches(self) -> bool:
        """True when short and long factors differ, so the tables depend on the sequence length."""
        return (self.method == "longrope" and self.short_factor is not None
                and (self.short_factor != self.long_factor or self.short_attention is not None))

    @property
    def length_dependent(self) -> bool:
        return self.switches or (registry.get(self.method).length_dependent and self.method != "longrope")

    def method_params(self) -> dict[str, Any]:
        if self.method == "none":
            return {}
        if self.method == "longrope":
            return dict(long_factor=self.long_factor, short_factor=self.short_factor,
                        factor=self.factor, attention=self.attention, short_attention=self.short_attention)
        return dict(factor=self.factor, **self.params)

    def inv_freq(self, *, dim: int, base: float, original: int, seq_len: int | None = None):
        """(inv_freq [dim/2] float32, attention_scale) for this scaling on a model of these dims."""
        self.check_pairs(dim // 2)
        return registry.compute(self.method, dim=dim, base=base, original=original,
                                seq_len=seq_len, **self.method_params())

    def check_pairs(self, pairs: int) -> None:
        if self.long_factor is not None and len(self.long_factor) != pairs:
            raise LongRopeError(f"the scaling has {len(self.long_factor)} factors but the model has "
                                f"{pairs} rotary pairs")

    # -- files -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["original_max_position"] = self.original_max_position
        return {"format": FORMAT, "version": VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scaling":
        if d.get("format") != FORMAT:
            raise LongRopeError("not a longrope scaling file (missing \"format\": \"longrope-scaling\")")
        if d.get("version", 0) > VERSION:
            raise LongRopeError(f"scaling file version {d.get('version')} is newer than this longrope "
                                f"reads ({VERSION}); upgrade longrope")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})

    def save(self, path: str | Path) -> None:
        from ..io import write_json
        write_json(path, self.to_dict())

    def describe(self) -> str:
        if self.method == "none":
            return "none"
        if self.method != "longrope":
            return f"{self.method}:{self.factor:g}"
        parts = [f"longrope s={self.factor:g}" if self.factor else "longrope"]
        if self.short_factor is not None:
            parts.append("short/long")
        if self.n_hat:
            parts.append(f"n_hat={self.n_hat}")
        return " ".join(parts)

    # -- Hugging Face configs ------------------------------------------------------------
    def to_hf(self, *, dim: int, base: float, original: int) -> dict[str, Any]:
        """The `rope_parameters` dict stock runtimes read for this scaling (rope_theta included).
        Raises for what the stock format cannot express (n_hat > 0)."""
        if self.n_hat:
            raise LongRopeError(f"the stock longrope format cannot express n_hat={self.n_hat}")
        if self.short_attention is not None:
            raise LongRopeError("the stock longrope format has one attention scale for short and long "
                                f"factors; it cannot express short_attention={self.short_attention}")
        orig = self.original_max_position or original
        if self.method == "none":
            return {"rope_type": "default", "rope_theta": base}
        if self.method == "ntk":  # a fixed base change: stock RoPE with a larger theta
            from .methods import _ntk_base
            return {"rope_type": "default", "rope_theta": _ntk_base(base, dim, self.factor)}
        hf_type = registry.get(self.method).hf_type
        out: dict[str, Any] = {"rope_type": hf_type, "rope_theta": base}
        if self.method == "longrope":
            out.update(short_factor=list(self.short_factor or self.long_factor),
                       long_factor=list(self.long_factor), original_max_position_embeddings=orig,
                       factor=self.factor if self.factor is not None else max(self.long_factor))
            if self.attention != "su":
                from .methods import attention_scale
                out["attention_factor"] = attention_scale(self.attention, out["factor"], orig)
            return out
        out["factor"] = self.factor
        if self.method in ("yarn", "llama3"):
            out["original_max_position_embeddings"] = orig
        out.update(self.params)
        return out


def _check_attention(value, name: str) -> str | float:
    if isinstance(value, str) and value in ("su", "yarn"):
        return value
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise LongRopeError(f"{name} must be 'su', 'yarn' or a number, got {value!r}") from None
    if not (math.isfinite(out) and out > 0):
        raise LongRopeError(f"{name} must be a positive number, got {out}")
    return out


def _check_factors(values, name: str) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise LongRopeError(f"{name} must be a list of numbers") from None
    bad = [v for v in out if not (math.isfinite(v) and v > 0)]
    if bad:
        raise LongRopeError(f"{name} values must be finite and positive, got {bad[0]}")
    return out


# -- spec strings -------------------------------------------------------------------------
_KV = re.compile(r"^(\w+)=(.+)$")


def _value(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_spec(spec: str | Scaling | None, default_factor: float | None = None) -> Scaling:
    """`none`, `pi:8`, `ntk:8`, `dynamic:8`, `yarn:8[:beta_fast=16]`, `llama3:8`,
    `longrope:PATH[:factor=8][:n_hat=4]`; a bare method name takes `default_factor`."""
    if isinstance(spec, Scaling):
        return spec
    if spec is None or str(spec).strip() in ("", "none", "default"):
        return Scaling("none")
    name, _, rest = str(spec).strip().partition(":")
    method = registry.get(name).name
    segments = rest.split(":") if rest else []
    extras: dict[str, Any] = {}
    while segments and _KV.match(segments[-1]):
        k, v = _KV.match(segments.pop()).groups()
        extras[k] = _value(v)
    arg = ":".join(segments)
    if method == "longrope":
        if not arg:
            raise LongRopeError("longrope needs a factor file: 'longrope:PATH'")
        scaling = load_scaling(arg)
        for k, v in extras.items():
            if k not in Scaling.__dataclass_fields__ or k in ("method", "params", "provenance"):
                raise LongRopeError(f"unknown longrope option {k!r}")
            setattr(scaling, k, v)
        scaling.__post_init__()
        return scaling
    if arg:
        try:
            factor = float(arg)
        except ValueError:
            raise LongRopeError(f"bad scale factor in {spec!r}: {arg!r}") from None
    elif "factor" in extras:
        factor = _option(method, "factor", extras.pop("factor"))
    elif default_factor is not None:
        factor = float(default_factor)
    else:
        factor = None
    unknown = set(extras) - set(registry.get(method).params)
    if unknown:
        raise LongRopeError(f"{method} takes no option(s) {', '.join(sorted(unknown))}")
    extras = {k: _option(method, k, v) for k, v in extras.items()}
    return Scaling(method, factor=factor if method != "none" else None, params=extras)


def _option(method: str, key: str, value: Any) -> Any:
    """A `key=value` option of a spec, checked: `truncate` is true/false, every other one a
    finite positive number."""
    if key == "truncate":
        if not isinstance(value, bool):
            raise LongRopeError(f"{method} option truncate must be true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise LongRopeError(f"{method} option {key} must be a positive number, got {value!r}")
    return value


# -- factor files ---------------------------------------------------------------------------
def load_scaling(path: str | Path) -> Scaling:
    """Read our JSON, a Hugging Face config.json (rope type longrope/su), or the public LongRoPE
    code's plain-text factors (one float per line, or one comma-separated row per layer)."""
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
        if data.get("format") == FORMAT:
            return Scaling.from_dict(data)
        return _from_hf_config(data, path)
    return _from_public_csv(text, path)


def _from_public_csv(text: str, path: Path) -> Scaling:
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
    return Scaling("longrope", long_factor=factors, factor=max(factors),
                   provenance={"source": str(path), "format": "LongRoPE public factors",
                               "note": "factor (s) taken as the largest lambda; override with :factor=S"})


def _from_hf_config(cfg: dict[str, Any], path: Path) -> Scaling:
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling")
    if not isinstance(rope, dict):
        raise LongRopeError(f"{path} has no rope_scaling / rope_parameters entry")
    kind = rope.get("rope_type", rope.get("type"))
    if kind not in ("longrope", "su"):
        raise LongRopeError(f"{path}: rope type {kind!r} is not longrope/su")
    original = cfg.get("original_max_position_embeddings") or rope.get("original_max_position_embeddings")
    if not original:
        original = cfg.get("max_position_embeddings")
    factor = rope.get("factor")
    if factor is None:  # as transformers: the ratio of the extended window to the original one
        factor = cfg["max_position_embeddings"] / original
    attention = rope.get("attention_factor")
    return Scaling("longrope", long_factor=rope.get("long_factor"), short_factor=rope.get("short_factor"),
                   factor=float(factor), original_max_position=int(original),
                   target_length=cfg.get("max_position_embeddings"),
                   attention=float(attention) if attention is not None else "su",
                   provenance={"source": str(path), "format": "Hugging Face config"})


__all__ = ["Scaling", "parse_spec", "load_scaling", "FORMAT", "VERSION"]
