"""Spec strings: `none`, `pi:8`, `yarn:8:beta_fast=16`, `longrope:PATH:factor=8:n_hat=4`, ..."""
from __future__ import annotations

import math
import re
from typing import Any

from ..errors import LongRopeError
from . import registry
from .files import load_scaling
from .scaling import Scaling

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
    `longrope:PATH[:factor=8|:target_length=N][:n_hat=4]`; a bare method name takes `default_factor`."""
    if isinstance(spec, Scaling):
        return spec
    if spec is None:
        return Scaling("none")
    if not isinstance(spec, str):
        raise LongRopeError(f"a scaling is a spec string such as 'yarn:8' or a Scaling, got {type(spec).__name__}")
    if not spec.strip():
        raise LongRopeError("the scaling spec is empty; use e.g. none, yarn:8 or longrope:PATH")
    if spec.strip() in ("none", "default"):
        return Scaling("none")
    name, _, rest = spec.strip().partition(":")
    m = registry.get(name)
    method = m.name
    segments = rest.split(":") if rest else []
    extras: dict[str, Any] = {}
    while segments and _KV.match(segments[-1]):
        k, v = _KV.match(segments.pop()).groups()
        if k in extras:
            raise LongRopeError(f"option {k!r} is given twice in {spec!r}")
        extras[k] = _value(v)
    arg = ":".join(segments)
    if not m.factors and not m.params:  # a method that takes nothing (the plain rotation)
        if arg or extras:
            raise LongRopeError(f"{method} takes no factor or options, got {spec!r}")
        return Scaling(method)
    if m.factors:
        if not arg:
            raise LongRopeError(f"{method} needs a factor file: '{method}:PATH'")
        scale_keys = ("factor", "target_length", "original_max_position")
        scaling = load_scaling(arg, **{k: extras.pop(k) for k in scale_keys if k in extras})
        for k, v in extras.items():
            if k not in Scaling.__dataclass_fields__ or k in ("method", "params", "provenance"):
                raise LongRopeError(f"unknown {method} option {k!r}")
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
    unknown = set(extras) - set(m.params)
    if unknown:
        raise LongRopeError(f"{method} takes no option(s) {', '.join(sorted(unknown))}")
    extras = {k: _option(method, k, v) for k, v in extras.items()}
    return Scaling(method, factor=factor if m.scaled else None, params=extras)


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
