"""`Scaling`: one RoPE scaling, validated, and its own JSON form. The spec strings live in
spec.py (`parse_spec`), the other file formats (public LongRoPE factors, Hugging Face configs) in
files.py (`load_scaling`), the stock runtimes' spelling of each method in stock.py. Nothing here
names a method: what a method takes is read from its registry entry (`factors`, `scaled`, `params`).

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

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LongRopeError
from . import registry, stock

FORMAT = "longrope-scaling"
VERSION = 1
# Sanity bounds of a factor file's numbers: beyond them a value is a mistake, not a setting (the
# papers' scales reach 512, their per-pair factors about 1 + s; windows a few million tokens).
FACTOR_RANGE = (1e-3, 1e6)
MAX_FACTOR = 1e6
MAX_LENGTH = 2 ** 31 - 1


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
        m = registry.get(self.method)
        self.method = m.name
        if m.factors:
            if not self.long_factor:
                raise LongRopeError(f"a {m.name} scaling needs long factors")
            self.long_factor = _check_factors(self.long_factor, "long_factor")
            if self.short_factor is not None:
                self.short_factor = _check_factors(self.short_factor, "short_factor")
                if len(self.short_factor) != len(self.long_factor):
                    raise LongRopeError(f"short_factor has {len(self.short_factor)} values, "
                                        f"long_factor {len(self.long_factor)}")
            if self.factor is None and self.target_length and self.original_max_position:
                self.factor = self.target_length / self.original_max_position
        elif m.scaled and self.factor is None:
            raise LongRopeError(f"{self.method} needs a factor, e.g. '{self.method}:8'")
        for name in ("original_max_position", "target_length"):  # wrong JSON types: one line, not a traceback
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_LENGTH):
                raise LongRopeError(f"{name} must be a positive integer up to {MAX_LENGTH:,} (or null), got {v!r}")
        if self.factor is not None and (isinstance(self.factor, bool) or not isinstance(self.factor, (int, float))):
            raise LongRopeError(f"scale factor must be a number >= 1, got {self.factor!r}")
        if not isinstance(self.params, dict) or not isinstance(self.provenance, dict):
            raise LongRopeError("params and provenance must be JSON objects")
        if self.factor is not None and not (math.isfinite(self.factor) and 1 <= self.factor <= MAX_FACTOR):
            below = (f" (target_length {self.target_length} is below the original window "
                     f"{self.original_max_position})" if self.target_length and self.original_max_position
                     and self.target_length < self.original_max_position else "")
            raise LongRopeError(f"scale factor must be a number from 1 to {MAX_FACTOR:g} (s = target / original "
                                f"window), got {self.factor:g}{below}")
        if isinstance(self.n_hat, bool) or not isinstance(self.n_hat, int) or self.n_hat < 0:
            raise LongRopeError(f"n_hat must be a non-negative integer, got {self.n_hat!r}")
        window = self.original_max_position or MAX_LENGTH
        if self.n_hat > window:
            what = "the original window" if self.original_max_position else "any window longrope takes"
            raise LongRopeError(f"n_hat {self.n_hat:,} is above {what} ({window:,}): the start positions kept "
                                "un-interpolated lie inside the window")
        if self.n_hat and not m.factors:
            raise LongRopeError("n_hat (un-interpolated start positions) applies to longrope only")
        self.attention = _check_attention(self.attention, "attention")
        if self.short_attention is not None:
            if not m.factors or self.short_factor is None:
                raise LongRopeError("short_attention needs a longrope scaling with short factors")
            self.short_attention = _check_attention(self.short_attention, "short_attention")

    # -- the math --------------------------------------------------------------------------
    @property
    def switches(self) -> bool:
        """True when short and long factors differ, so the tables depend on the sequence length."""
        return (registry.get(self.method).factors and self.short_factor is not None
                and (self.short_factor != self.long_factor or self.short_attention is not None))

    @property
    def length_dependent(self) -> bool:
        """Whether the tables depend on the sequence length: a per-pair method only when it switches
        between short and long factors."""
        m = registry.get(self.method)
        return self.switches if m.factors else m.length_dependent

    def method_params(self) -> dict[str, Any]:
        """The keyword arguments of the method's function: its parameters that are fields here
        (factors, factor, attention scales), then `params` (e.g. YaRN's beta_fast)."""
        fields = self.__dataclass_fields__
        return {**{k: getattr(self, k) for k in registry.get(self.method).params if k in fields}, **self.params}

    def inv_freq(self, *, dim: int, base: float, original: int, seq_len: int | None = None):
        """(inv_freq [dim/2] float32, attention_scale) for this scaling on a model of these dims."""
        self.check_pairs(dim // 2)
        params = self.method_params()
        if "factor" in params:  # s may come from target_length and the model's window
            params["factor"] = stock.scale(self, original)
        return registry.compute(self.method, dim=dim, base=base, original=original,
                                seq_len=seq_len, **params)

    def check_pairs(self, pairs: int, original: int | None = None) -> None:
        """The scaling fits a model with `pairs` rotary pairs (and, when given, this window)."""
        if self.long_factor is not None and len(self.long_factor) != pairs:
            raise LongRopeError(f"the scaling has {len(self.long_factor)} factors but the model has "
                                f"{pairs} rotary pairs")
        window = self.original_max_position or original
        if window and self.n_hat > window:
            raise LongRopeError(f"n_hat {self.n_hat:,} is above the model's window ({window:,})")
        if window and self.target_length and self.factor is None and self.target_length < window:
            raise LongRopeError(f"target_length {self.target_length} is below the model's window ({window}): "
                                "a scaling extends the window, it cannot shrink it")

    # -- files -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["original_max_position"] = self.original_max_position
        return {"format": FORMAT, "version": VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scaling":
        if d.get("format") != FORMAT:
            raise LongRopeError("not a longrope scaling file (missing \"format\": \"longrope-scaling\")")
        version = d.get("version", 0)
        if isinstance(version, bool) or not isinstance(version, int):
            raise LongRopeError(f"scaling file version must be a whole number, got {version!r}")
        if version > VERSION:
            raise LongRopeError(f"scaling file version {d.get('version')} is newer than this longrope "
                                f"reads ({VERSION}); upgrade longrope")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})

    def save(self, path: str | Path) -> None:
        from ..io import write_json
        write_json(path, self.to_dict())

    def describe(self) -> str:
        if not registry.get(self.method).factors:
            return self.method if self.factor is None else f"{self.method}:{self.factor:g}"
        parts = [f"{self.method} s={self.factor:g}" if self.factor else self.method]
        if self.short_factor is not None:
            parts.append("short/long")
        if self.n_hat:
            parts.append(f"n_hat={self.n_hat}")
        return " ".join(parts)

    # -- stock runtimes ------------------------------------------------------------------
    def stock(self):
        """This method's stock mapping (rope/stock.py)."""
        return registry.get(self.method).stock

    def to_hf(self, *, dim: int, base: float, original: int) -> dict[str, Any]:
        """The `rope_parameters` dict stock runtimes read for this scaling (rope_theta included).
        Raises for what the stock format cannot express (n_hat > 0, a short attention scale)."""
        if self.n_hat:
            raise LongRopeError(f"the stock longrope format cannot express n_hat={self.n_hat}")
        if self.short_attention is not None:
            raise LongRopeError("the stock longrope format has one attention scale for short and long "
                                f"factors; it cannot express short_attention={self.short_attention}")
        return self.stock().rope_parameters(self, dim=dim, base=base, original=original)


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
    """A list of numbers (not strings or booleans, which float() would accept) within FACTOR_RANGE."""
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
        raise LongRopeError(f"{name} must be a list of numbers, got {values!r}")
    values = [v.item() if hasattr(v, "item") and not isinstance(v, (int, float)) else v for v in values]
    wrong = next((v for v in values if isinstance(v, bool) or not isinstance(v, (int, float))), None)
    if wrong is not None:
        raise LongRopeError(f"{name} must be a list of numbers, got {wrong!r} in it")
    out = [float(v) for v in values]
    lo, hi = FACTOR_RANGE
    bad = [v for v in out if not (math.isfinite(v) and lo <= v <= hi)]
    if bad:
        raise LongRopeError(f"{name} values must be numbers from {lo:g} to {hi:g}, got {bad[0]:g}")
    return out


__all__ = ["Scaling", "FORMAT", "VERSION"]
