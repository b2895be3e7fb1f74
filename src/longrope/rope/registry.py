"""Name -> RoPE scaling method. Methods register themselves (see methods.py); look them up here.

    compute("yarn", dim=64, base=1e4, original=4096, factor=8) -> (inv_freq, attention_scale)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import LongRopeError


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable[..., tuple[torch.Tensor, float]]
    hf_type: str | None          # the `rope_type` stock transformers uses, None if it has none
    params: tuple[str, ...]      # keyword parameters the method accepts
    length_dependent: bool       # reads seq_len (tables change with the sequence length)


METHODS: dict[str, Method] = {}
ALIASES: dict[str, str] = {}


def register(name: str, *, aliases: tuple[str, ...] = (), hf_type: str | None = None,
             params: tuple[str, ...] = (), length_dependent: bool = False):
    def deco(fn):
        METHODS[name] = Method(name, fn, hf_type, params, length_dependent)
        for alias in (name, *aliases):
            ALIASES[alias] = name
        return fn
    return deco


def _ensure_loaded() -> None:
    from . import methods  # noqa: F401  (registers the built-in methods)


def get(name: str) -> Method:
    _ensure_loaded()
    try:
        return METHODS[ALIASES[name.lower()]]
    except KeyError:
        raise LongRopeError(f"unknown scaling method {name!r}; known: {', '.join(names())}") from None


def names() -> list[str]:
    _ensure_loaded()
    return sorted(ALIASES)


def compute(name: str, *, dim: int, base: float, original: int, seq_len: int | None = None,
            **params) -> tuple[torch.Tensor, float]:
    method = get(name)
    unknown = set(params) - set(method.params)
    if unknown:
        raise LongRopeError(f"{method.name} takes no parameter(s) {', '.join(sorted(unknown))}")
    return method.fn(dim, base, original, seq_len=seq_len, **params)
