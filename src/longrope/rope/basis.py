"""The primitives every RoPE method builds on: base frequencies, implied factors, attention scales.

Kept apart from methods.py so that the stock mappings (stock.py) and the methods can both use them
without importing each other.
"""
from __future__ import annotations

import math

import torch

from ..errors import LongRopeError


def base_inv_freq(dim: int, base: float) -> torch.Tensor:
    """theta_i = base^(-2i/dim) for i = 0 .. dim/2 - 1, float32 [dim // 2]."""
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float32) / dim  # [dim/2]
    return 1.0 / (base ** exponents)


def factors_of(inv_freq: torch.Tensor, dim: int, base: float) -> torch.Tensor:
    """The per-pair factors lambda_i = theta_i / theta'_i that a method's inv_freq implies."""
    return base_inv_freq(dim, base).double() / inv_freq.double()


def attention_scale(policy: str | float, factor: float, original: int) -> float:
    """Attention scale of a LongRoPE scaling: 'su' = sqrt(1 + ln s / ln L), 'yarn' = 0.1 ln s + 1,
    or a number. No scaling (s <= 1) means scale 1 for the named policies."""
    if isinstance(policy, (int, float)) and not isinstance(policy, bool):
        return float(policy)
    if factor <= 1.0:
        return 1.0
    if policy == "su":
        return math.sqrt(1.0 + math.log(factor) / math.log(original))
    if policy == "yarn":
        return 0.1 * math.log(factor) + 1.0
    raise LongRopeError(f"unknown attention scale policy {policy!r}; use 'su', 'yarn' or a number")


def ntk_base(base: float, dim: int, scale: float) -> float:
    """Fixed NTK-aware scaling's new base: b * s^(d/(d-2))."""
    return base * scale ** (dim / (dim - 2))
