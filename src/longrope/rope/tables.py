"""cos/sin tables from inverse frequencies, with LongRoPE's un-interpolated start positions.

Positions below `n_hat` rotate with the original theta_i, positions at or above it with the
rescaled theta_i / lambda_i. The attention scale multiplies cos and sin everywhere.

The angles position * theta_i are computed in float64, and so are their cos and sin, which are cast
to the caller's dtype once. In float32 the angle carries a relative error of 6e-8: 0.1 rad for the
second pair at position 2e6 (0.004 at 128k), enough to move logits by 0.39 at offset 2M, so that a
document scored at offset 2M lost more than at offset 0. The inverse frequencies themselves keep the
float32 values transformers builds (the rotation the model was trained with); only the product and
the trigonometry are widened.
"""
from __future__ import annotations

import torch


def rotary_tables(position_ids: torch.Tensor, inv_freq: torch.Tensor, attention_scale: "float | torch.Tensor" = 1.0,
                  *, n_hat: int = 0, start_inv_freq: torch.Tensor | None = None, dtype: torch.dtype = torch.float32):
    """(cos, sin), each `dtype` [batch, seq, 2 * len(inv_freq)], for integer `position_ids` [batch, seq].
    Angles, cos and sin are float64 until that one cast; gradients flow to a float32 `inv_freq`."""
    pos = position_ids[..., None].to(torch.float64)        # [b, n, 1]; exact below 2^53
    freqs = pos * inv_freq.to(torch.float64)               # [b, n, d/2]
    if n_hat > 0:
        start = pos * start_inv_freq.to(torch.float64)     # [b, n, d/2]
        freqs = torch.where(position_ids[..., None] < n_hat, start, freqs)
    if isinstance(attention_scale, torch.Tensor):
        attention_scale = attention_scale.to(torch.float64)
    # the half-width tables are cast before the rotate_half concatenation: the float64 copies never
    # reach the full width (at 2M positions and 128 channels that would be 2 GiB each)
    cos = (freqs.cos() * attention_scale).to(dtype)
    sin = (freqs.sin() * attention_scale).to(dtype)
    return torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
