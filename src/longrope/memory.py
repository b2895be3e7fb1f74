"""Memory estimates, so a length the machine cannot hold is refused in one line before any work
(instead of running for a minute and then exhausting memory).

Each function estimates one thing, in bytes, from the model's config and the settings. The
inference estimates are lower bounds of what a forward pass at `length` tokens must hold at once
(the token ids, the hidden states a decoder layer works on, the key/value cache, one chunk of
logits); attention itself is not counted, since SDPA's memory-efficient kernels need no
length x length matrix. A refusal therefore never stops a run that would fit.
"""
from __future__ import annotations

import os

from .errors import LongRopeError


def _shape(config):
    from .models import text_config
    cfg = text_config(config)
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    inter = getattr(cfg, "intermediate_size", None) or 4 * cfg.hidden_size
    return cfg, cfg.num_hidden_layers, cfg.hidden_size, heads, head_dim, kv, inter


def weight_bytes(model) -> int:
    """Parameters and buffers of a loaded model."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def kv_cache_bytes(config, length: int, *, batch: int = 1, dtype_bytes: int = 4) -> int:
    """Keys and values of every layer for `length` positions (generation keeps them all)."""
    _, layers, _, _, head_dim, kv, _ = _shape(config)
    return 2 * layers * batch * length * kv * head_dim * dtype_bytes


def activation_bytes(config, length: int, *, batch: int = 1, dtype_bytes: int = 4) -> int:
    """What one decoder layer holds at once in an inference forward pass: the residual stream and its
    normed copy, queries/keys/values, the attention output and the MLP's intermediate activations,
    plus the rotary cos/sin tables (float32) and the int64 token and position ids."""
    _, _, hidden, heads, head_dim, kv, inter = _shape(config)
    per_token = (3 * hidden + (heads + 2 * kv) * head_dim + 2 * inter) * dtype_bytes
    return batch * length * (per_token + 2 * head_dim * 4 + 2 * 8)


def logits_bytes(config, positions: int, *, batch: int = 1) -> int:
    """float32 logits of `positions` positions (perplexity computes them a chunk at a time)."""
    cfg = _shape(config)[0]
    return batch * positions * cfg.vocab_size * 4


def inference_bytes(model, length: int, *, batch: int = 1, kv_cache: bool = False, chunk: int = 1024) -> int:
    """A lower bound of the memory one forward pass of `model` at `length` tokens needs: weights,
    activations, a chunk of logits, and the key/value cache when generation keeps one."""
    dtype_bytes = next(model.parameters()).element_size()
    total = weight_bytes(model) + activation_bytes(model.config, length, batch=batch, dtype_bytes=dtype_bytes)
    total += logits_bytes(model.config, min(length, chunk), batch=batch)
    if kv_cache:
        total += kv_cache_bytes(model.config, length, batch=batch, dtype_bytes=dtype_bytes)
    return total


def available_bytes(device) -> int | None:
    """Free memory on `device` now: CUDA's free memory, else the host's available memory (None when
    it cannot be read)."""
    import torch
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(dev)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{n:,.0f} B"
        n /= 1024
    return f"{n:.3g} EB"  # pragma: no cover


def check_lengths(model, lengths, *, what: str, batch: int = 1, kv_cache: bool = False, chunk: int = 1024,
                  option: str = "--lengths") -> None:
    """Refuse (one line) a length whose inference estimate exceeds the free memory of the model's device."""
    if not lengths:
        return
    device = next(model.parameters()).device
    free = available_bytes(device)
    if free is None:
        return
    longest = max(lengths)
    need = inference_bytes(model, longest, batch=batch, kv_cache=kv_cache, chunk=chunk)
    held = weight_bytes(model)  # already loaded: part of what is in use, not of what is free
    if need - held > free:
        raise LongRopeError(f"{what} at {longest:,} tokens needs at least {_size(need)} ({_size(held)} of weights "
                            f"plus {_size(need - held)} for one forward pass), but {device} has "
                            f"{_size(free)} free: choose a shorter {option}")
