"""RoPE scaling methods as pure functions of plain numbers and tensors.

Every method has the signature

    fn(dim, base, original, *, seq_len=None, **params) -> (inv_freq, attention_scale)

where `dim` is the rotary dimension (head_dim * partial_rotary_factor), `base` is rope_theta,
`original` the pre-trained context window and `seq_len` the current sequence length (only the
length-dependent methods read it). `inv_freq` is a float32 tensor of shape [dim // 2]; the
attention scale multiplies cos and sin. inv_freq is float32 whatever the model dtype (as in
transformers); the angles and their cos/sin are float64 (rope/tables.py), cast to the model's dtype once.

theta_i = base^(-2i/dim); a per-pair factor lambda_i means theta_i / lambda_i.
Methods are added by decorating them with `@register(...)` (see registry.py), never by if/elif.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import LongRopeError
from . import stock
from .basis import attention_scale, base_inv_freq, ntk_base
from .registry import register


@register("none", aliases=("default",), stock=stock.Default())
def none(dim: int, base: float, original: int, *, seq_len: int | None = None):
    return base_inv_freq(dim, base), 1.0


@register("linear", aliases=("pi",), stock=stock.Linear(), params=("factor",), spelling="pi:8")
def linear(dim: int, base: float, original: int, *, factor: float, seq_len: int | None = None):
    """Position interpolation: every frequency divided by s."""
    return base_inv_freq(dim, base) / factor, 1.0


@register("ntk", stock=stock.FixedNtk(), params=("factor",))
def ntk(dim: int, base: float, original: int, *, factor: float, seq_len: int | None = None):
    """Fixed NTK-aware scaling: the base becomes b * s^(d/(d-2))."""
    return base_inv_freq(dim, ntk_base(base, dim, factor)), 1.0


@register("dynamic", stock=stock.Dynamic(), params=("factor",), length_dependent=True)
def dynamic(dim: int, base: float, original: int, *, factor: float, seq_len: int | None = None):
    """Dynamic NTK: base b * ((s * len / L) - (s - 1))^(d/(d-2)), len = max(seq_len, L)."""
    length = max(seq_len or original, original)
    return base_inv_freq(dim, ntk_base(base, dim, factor * length / original - (factor - 1))), 1.0


def yarn_ramp(dim: int, base: float, original: int, beta_fast: float = 32, beta_slow: float = 1,
              truncate: bool = True) -> torch.Tensor:
    """Share of interpolation per pair: 0 for high frequencies (kept), 1 for low ones (divided by s)."""
    def corr(rotations: float) -> float:  # pair index that completes `rotations` turns within L
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = corr(beta_fast), corr(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = (torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)  # [dim/2]
    return ramp.clamp(0, 1)


@register("yarn", stock=stock.Yarn(),
          params=("factor", "beta_fast", "beta_slow", "attention_factor", "truncate"))
def yarn(dim: int, base: float, original: int, *, factor: float, beta_fast: float = 32,
         beta_slow: float = 1, attention_factor: float | None = None, truncate: bool = True,
         seq_len: int | None = None):
    """YaRN: blend theta_i (kept) and theta_i/s (interpolated) linearly in frequency along a ramp."""
    theta = base_inv_freq(dim, base)
    ramp = yarn_ramp(dim, base, original, beta_fast, beta_slow, truncate)
    inv_freq = theta / factor * ramp + theta * (1 - ramp)
    if attention_factor is None:
        attention_factor = attention_scale("yarn", factor, original)
    return inv_freq, float(attention_factor)


@register("llama3", stock=stock.Llama3(), params=("factor", "low_freq_factor", "high_freq_factor"))
def llama3(dim: int, base: float, original: int, *, factor: float, low_freq_factor: float = 1.0,
           high_freq_factor: float = 4.0, seq_len: int | None = None):
    """Llama-3: wavelengths above L/low kept interpolated by s, below L/high kept, smooth between."""
    theta = base_inv_freq(dim, base)
    wavelen = 2 * math.pi / theta
    low_wavelen, high_wavelen = original / low_freq_factor, original / high_freq_factor
    scaled = torch.where(wavelen > low_wavelen, theta / factor, theta)
    smooth = (original / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, blended, scaled), 1.0


@register("longrope", aliases=("su",), stock=stock.LongRope(),
          params=("long_factor", "short_factor", "factor", "attention", "short_attention"),
          length_dependent=True, factors=True)
def longrope(dim: int, base: float, original: int, *, long_factor: Sequence[float],
             short_factor: Sequence[float] | None = None, factor: float | None = None,
             attention: str | float = "su", short_attention: str | float | None = None,
             seq_len: int | None = None):
    """LongRoPE: theta_i / lambda_i with searched lambda_i. The long factors apply when the
    sequence is longer than the original window (or always, without short factors). The attention
    scale is `attention` in both modes (as stock runtimes do) unless `short_attention` is given."""
    use_long = short_factor is None or (seq_len is not None and seq_len > original)
    lam = torch.tensor(list(long_factor if use_long else short_factor), dtype=torch.float32)
    if lam.numel() != dim // 2:
        raise LongRopeError(f"longrope factors have {lam.numel()} values but the model has "
                            f"{dim // 2} rotary pairs (rotary dim {dim})")
    if factor is None:
        factor = float(lam.max())
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    policy = attention if use_long or short_attention is None else short_attention
    return 1.0 / (lam * base ** exponents), attention_scale(policy, factor, original)
