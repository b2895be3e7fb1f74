"""Re-rotate a KV cache from the short to the long LongRoPE factors instead of dropping it.

Rotations compose per pair: R(p * theta_long) = R(p * (theta_long - theta_short)) R(p * theta_short),
so a key cached as a_s R(p theta_s) k becomes a_l R(p theta_l) k by one more rotation of angle
p * (theta_long - theta_short) scaled by a_l / a_s (the attention scales multiply cos and sin).
Positions below n_hat use the original theta in both modes: their angle difference is zero (only
the scale ratio applies). With partial rotary, only the first rotary_dim channels rotate.

What this is exact for: every cached key ends up rotated exactly as a long-factor prefill would
rotate it. What it is not: in a model with more than one layer, the keys and values of layers >= 1
were computed from hidden states that attended with the short factors, and a full recomputation
would recompute them with the long ones; re-rotation keeps them. So cached generation equals full
recomputation for one-layer models and approximates it otherwise (measured in
benchmarks/generate_boundary.py); re-prefill (the default) stays exact.
"""
from __future__ import annotations

import torch

from .rope.tables import rotary_tables


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rerotation_tables(rotary, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) [n, rotary_dim] turning short-factor keys at `positions` into long-factor keys,
    for a patched rotary module (ScaledRotaryEmbedding with short/long factors)."""
    delta = rotary.long_inv_freq.double() - rotary.inv_freq.double()
    ratio = rotary.scales[1] / rotary.scales[0]
    cos, sin = rotary_tables(positions[None], delta, ratio, n_hat=rotary.n_hat, start_inv_freq=torch.zeros_like(delta),
                             dtype=torch.float64)
    return cos[0], sin[0]


@torch.no_grad()
def rerotate_cache(cache, rotary) -> int:
    """Rotate every layer's cached keys in place from short to long factors; returns the layers done.
    Works on transformers' Cache objects whose layers hold `keys` [batch, kv_heads, seq, head_dim]."""
    past = cache.get_seq_length()
    done = 0
    for layer in cache.layers:
        keys = getattr(layer, "keys", None)
        if keys is None or keys.numel() == 0:
            continue
        n = keys.shape[-2]
        positions = torch.arange(past - n, past, device=keys.device)  # a sliding layer keeps the last n
        cos, sin = rerotation_tables(rotary, positions.to(rotary.inv_freq.device))
        cos, sin = cos.to(keys.device), sin.to(keys.device)
        rot = cos.shape[-1]
        part = keys[..., :rot].double()
        keys[..., :rot] = (part * cos + _rotate_half(part) * sin).to(keys.dtype)
        done += 1
    return done
