"""Name -> RoPE scaling method: the table only. Methods register themselves in methods.py, which
the package `longrope.rope` imports on load, so this module imports no method (no import circle).

    compute("yarn", dim=64, base=1e4, original=4096, factor=8) -> (inv_freq, attention_scale)

Each method carries its stock mapping (`Method.stock`, see stock.py): the Hugging Face
`rope_parameters`, the `max_position_embeddings` to write, the vLLM keys and the GGUF keys/tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import LongRopeError


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable[..., tuple[torch.Tensor, float]]
    params: tuple[str, ...]      # keyword parameters the method accepts
    length_dependent: bool       # reads seq_len (tables change with the sequence length)
    stock: Any                   # a stock.StockMapping: how stock runtimes spell this method
    # searched per-pair factors (long/short, n_hat, a short attention scale), read from a factor
    # file: its spec is `NAME:PATH` (longrope); otherwise a scale factor, `NAME:8`
    factors: bool = False
    spelling: str | None = None  # how help texts show it (default NAME:8, NAME:PATH or NAME)

    @property
    def scaled(self) -> bool:
        """Takes a scale factor s (every method but the plain rotation)."""
        return "factor" in self.params

    @property
    def example(self) -> str:
        if self.spelling:
            return self.spelling
        return f"{self.name}:PATH" if self.factors else f"{self.name}:8" if self.scaled else self.name


METHODS: dict[str, Method] = {}
ALIASES: dict[str, str] = {}


def register(name: str, *, stock, aliases: tuple[str, ...] = (), params: tuple[str, ...] = (),
             length_dependent: bool = False, factors: bool = False, spelling: str | None = None):
    def deco(fn):
        METHODS[name] = Method(name, fn, params, length_dependent, stock, factors, spelling)
        for alias in (name, *aliases):
            ALIASES[alias] = name
        return fn
    return deco


def get(name: str) -> Method:
    try:
        return METHODS[ALIASES[name.lower()]]
    except KeyError:
        raise LongRopeError(f"unknown scaling method {name!r}; known: {', '.join(names())}") from None


def names() -> list[str]:
    return sorted(ALIASES)


def spellings() -> str:
    """'none, pi:8, ntk:8, ...': every method as a spec, for help texts."""
    return ", ".join(m.example for m in METHODS.values())


def compute(name: str, *, dim: int, base: float, original: int, seq_len: int | None = None,
            **params) -> tuple[torch.Tensor, float]:
    method = get(name)
    unknown = set(params) - set(method.params)
    if unknown:
        raise LongRopeError(f"{method.name} takes no parameter(s) {', '.join(sorted(unknown))}")
    return method.fn(dim, base, original, seq_len=seq_len, **params)
