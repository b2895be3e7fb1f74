"""Apply a RoPE scaling to a loaded Hugging Face causal LM, in place, for every RoPE family at once.

Modern transformers models compute RoPE in one module (`model.model.rotary_emb`) whose
`forward(x, position_ids)` returns `(cos, sin)` of shape [batch, seq, rotary_dim] that every
decoder layer consumes. We swap that module (or each of them, for models with one per layer)
for `ScaledRotaryEmbedding`, which has the same interface: no per-family code.

Short/long factors: the long factors apply when max(position_ids) + 1 exceeds the original
window. Keys cached while the sequence was short were rotated with the short factors, so when
`generate` first crosses the window we either drop the cache and re-prefill the whole sequence
(`boundary="reprefill"`, the default: exact, the stock Phi-3 remedy, here for every family) or
re-rotate the cached keys to the long factors (`boundary="rerotate"`, see kv_rerotate.py: no
re-encoding, exact for the rotation but it keeps deeper layers' short-factor hidden states).
"""
from __future__ import annotations

import contextlib
import types

import torch
from torch import nn

from .errors import LongRopeError
from .models import rope_config
from .rope.basis import base_inv_freq
from .rope.scaling import Scaling
from .rope.spec import parse_spec
from .rope.tables import rotary_tables

_STATE = "_longrope_state"


def rope_dims(model: nn.Module) -> tuple[int, float, int]:
    """(rotary_dim, base, original_window) of a loaded model; LongRopeError if it has no RoPE."""
    modules = _rotary_modules(model)
    if not modules:
        raise LongRopeError(f"{type(model).__name__} has no rotary embedding module: longrope "
                            "applies to models with rotary position embeddings (RoPE) only")
    original_module = getattr(model, _STATE, {}).get("modules", [(None, None, modules[0][2])])[0][2]
    dim = 2 * original_module.inv_freq.numel()  # the module knows partial rotary best
    _, base, original = rope_config(model.config)
    if base is None:
        raise LongRopeError(f"{type(model).__name__}: cannot find rope_theta in the config")
    return dim, float(base), original


class ScaledRotaryEmbedding(nn.Module):
    """Drop-in rotary module: forward(x, position_ids) -> (cos, sin) for a `Scaling`."""

    def __init__(self, scaling: Scaling, *, dim: int, base: float, original: int, config=None):
        super().__init__()
        self.scaling, self.dim, self.base = scaling, dim, base
        self.original = scaling.original_max_position or original
        self.config = config
        self.rope_type = scaling.method
        self.n_hat = scaling.n_hat
        inv_freq, self.attention_scaling = scaling.inv_freq(dim=dim, base=base, original=self.original)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("original_inv_freq", base_inv_freq(dim, base), persistent=False)
        if scaling.switches:
            long_inv, long_scale = scaling.inv_freq(dim=dim, base=base, original=self.original,
                                                    seq_len=self.original + 1)
            self.register_buffer("long_inv_freq", long_inv, persistent=False)
            self.register_buffer("scales", torch.tensor([self.attention_scaling, long_scale]),
                                 persistent=False)  # [short, long]
        self._dynamic_cache: tuple[int, torch.Tensor] | None = None
        self._float32 = {k: v.clone() for k, v in self._buffers.items()}  # masters, kept on the CPU

    def _apply(self, fn, recurse=True):
        """`model.to(bfloat16)` must not round the tables: buffers follow the device, stay float32."""
        super()._apply(fn, recurse)
        for name, buf in self._buffers.items():
            if buf is not None and buf.dtype != torch.float32:
                self._buffers[name] = self._float32[name].to(buf.device)
        self._dynamic_cache = None
        return self

    def _tables_for(self, position_ids: torch.Tensor):
        """(inv_freq, attention scale) for these positions."""
        if self.scaling.switches:  # a scalar choice, kept on device (no host sync)
            is_long = (position_ids.max() + 1) > self.original
            return (torch.where(is_long, self.long_inv_freq, self.inv_freq),
                    torch.where(is_long, self.scales[1], self.scales[0]))
        return self._inv_freq_for(position_ids), self.attention_scaling

    def _inv_freq_for(self, position_ids: torch.Tensor) -> torch.Tensor:
        if self.scaling.length_dependent:  # dynamic NTK: recomputed for the current length
            seq_len = int(position_ids.max()) + 1
            if self._dynamic_cache is None or self._dynamic_cache[0] != seq_len:
                inv, _ = self.scaling.inv_freq(dim=self.dim, base=self.base, original=self.original,
                                               seq_len=seq_len)
                self._dynamic_cache = (seq_len, inv.to(self.inv_freq.device))
            return self._dynamic_cache[1]
        return self.inv_freq

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, *args, **kwargs):
        inv_freq, scale = self._tables_for(position_ids)
        cos, sin = rotary_tables(position_ids.to(x.device), inv_freq.to(x.device), scale,
                                 n_hat=self.n_hat, start_inv_freq=self.original_inv_freq.to(x.device))
        return cos.to(x.dtype), sin.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.scaling.describe()}, dim={self.dim}, base={self.base:g}, original={self.original}"


BOUNDARIES = ("reprefill", "rerotate")


def apply(model: nn.Module, scaling: Scaling | str | None, *, default_factor: float | None = None,
          boundary: str = "reprefill") -> nn.Module:
    """Patch `model` in place with `scaling` (a Scaling or a spec such as 'yarn:8'); returns it.
    `boundary`: what `generate` does with a short-factor cache when it crosses the window
    ('reprefill' or 'rerotate'). Applying again replaces the previous patch; `remove(model)`
    restores the original."""
    if boundary not in BOUNDARIES:
        raise LongRopeError(f"unknown boundary mode {boundary!r}; use {' or '.join(BOUNDARIES)}")
    if scaling is None:
        raise LongRopeError("apply needs a scaling: a spec such as 'yarn:8' or 'longrope:PATH', a Scaling, or "
                            "'none' for the unscaled rotation (remove(model) undoes a patch)")
    if not isinstance(model, nn.Module):
        raise LongRopeError(f"apply takes a loaded torch model (e.g. longrope.models.load_model(PATH)), "
                            f"got {type(model).__name__}")
    scaling = parse_spec(scaling, default_factor=default_factor)
    dim, base, original = rope_dims(model)
    scaling.check_pairs(dim // 2, original)
    remove(model)
    state = {"modules": [], "scaling": scaling}
    device = next((b.device for _, _, m in _rotary_modules(model) for b in m.buffers()), None)
    for parent, name, module in _rotary_modules(model):
        new = ScaledRotaryEmbedding(scaling, dim=dim, base=base, original=original,
                                    config=getattr(module, "config", None))
        if device is not None:
            new.to(device)
        setattr(parent, name, new)
        state["modules"].append((parent, name, module))
    if scaling.switches:
        state["original_window"] = scaling.original_max_position or original
        state["boundary"] = boundary
        model.prepare_inputs_for_generation = types.MethodType(_prepare_across_window, model)
    model.__dict__[_STATE] = state
    return model


def remove(model: nn.Module) -> nn.Module:
    """Undo `apply`: the original rotary modules and generation behaviour come back."""
    state = model.__dict__.pop(_STATE, None)
    if state:
        for parent, name, module in state["modules"]:
            setattr(parent, name, module)
        model.__dict__.pop("prepare_inputs_for_generation", None)
    return model


def current(model: nn.Module) -> Scaling | None:
    """The scaling `apply` put on this model, or None."""
    state = model.__dict__.get(_STATE)
    return state["scaling"] if state else None


@contextlib.contextmanager
def rotary_override(model: nn.Module, make):
    """Within the block every rotary module of `model` is `make(dim, base, original)`, an
    `nn.Module` with the same `forward(x, position_ids) -> (cos, sin)` (the search's gradient
    descent puts a differentiable one there); the modules in place before come back on exit."""
    dim, base, original = rope_dims(model)
    swapped = []
    try:
        for parent, name, module in _rotary_modules(model):
            setattr(parent, name, make(dim, base, original))
            swapped.append((parent, name, module))
        yield model
    finally:
        for parent, name, module in swapped:
            setattr(parent, name, module)


@contextlib.contextmanager
def unscaled(model: nn.Module):
    """Within the block `model` runs with its own (original) rotation; on exit the patch is back.
    Two module swaps: the patch's tables are kept, not rebuilt (training swaps per micro-batch)."""
    state = model.__dict__.get(_STATE)
    if not state:
        yield model
        return
    scaled = [getattr(parent, name) for parent, name, _ in state["modules"]]
    for parent, name, module in state["modules"]:
        setattr(parent, name, module)
    try:
        yield model
    finally:
        for (parent, name, _), module in zip(state["modules"], scaled):
            setattr(parent, name, module)


def _prepare_across_window(self, input_ids, *args, **kwargs):
    """At the first generation step longer than the original window, a cache built with the short
    factors is dropped (re-prefill) or re-rotated to the long factors. transformers >= 5.24 passes
    the cache as `cache`, earlier releases as `past_key_values`."""
    state = self.__dict__[_STATE]
    window = state["original_window"]
    name = "cache" if "cache" in kwargs else "past_key_values"
    cache = kwargs.get(name)
    if cache is not None and input_ids.shape[1] > window:
        past = cache.get_seq_length()
        if 0 < past <= window:
            if state["boundary"] == "rerotate":
                from transformers.generation.utils import GenerationMixin

                from .kv_rerotate import rerotate_cache
                parent, attr, _ = state["modules"][0]
                rerotate_cache(cache, getattr(parent, attr))
                # the generic step: a family's own override (Phi-3) would drop the cache here
                return GenerationMixin.prepare_inputs_for_generation(self, input_ids, *args, **kwargs)
            kwargs[name] = None  # the model starts a fresh cache; generate keeps it from here
            kwargs["next_sequence_length"] = None
    return type(self).prepare_inputs_for_generation(self, input_ids, *args, **kwargs)


def _rotary_modules(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute name, module) of every rotary embedding module in `model`."""
    found = []
    for parent in model.modules():
        for name, child in parent.named_children():
            is_rotary = isinstance(child, ScaledRotaryEmbedding) or (
                type(child).__name__.endswith("RotaryEmbedding") and hasattr(child, "inv_freq"))
            if is_rotary:
                found.append((parent, name, child))
    return found
