"""cos/sin tables from inverse frequencies, with LongRoPE's un-interpolated start positions.

Positions below `n_hat` rotate with the original theta_i, positions at or above it with the
rescaled theta_i / lambda_i. The attention scale multiplies cos and sin everywhere.
"""
from __future__ import annotations

import torch


def rotary_tables(position_ids: torch.Tensor, inv_freq: torch.Tensor, attention_scale: "float | torch.Tensor" = 1.0,
                  *, n_hat: int = 0, start_inv_freq: torch.Tensor | None = None):
    """(cos, sin), each float32 [batch, seq, 2 * len(inv_freq)], for integer `position_ids` [batch, seq]."""
    pos = position_ids[..., None].float()                  # [b, n, 1]
    freqs = pos * inv_freq.float()                         # [b, n, d/2]
    if n_hat > 0:
        start = pos * start_inv_freq.float()               # [b, n, d/2]
        freqs = torch.where(position_ids[..., None] < n_hat, start, freqs)
    emb = torch.cat((freqs, freqs), dim=-1)                # [b, n, d]  (rotate_half layout)
    return emb.cos() * attention_scale, emb.sin() * attention_scale
