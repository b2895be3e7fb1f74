"""How stock runtimes spell each RoPE method: one `StockMapping` per registered method.

A mapping answers, for a `Scaling` of its method on a model with rotary dim `dim`, base `base` and
pre-trained window `original`:

- `rope_parameters`: the Hugging Face entry (transformers 5 `rope_parameters`, rope_theta included);
- `max_position`: the `max_position_embeddings` to write, chosen so that every runtime derives the
  intended window. vLLM multiplies it by `factor` for every type but longrope/su/llama3 (and uses
  `original_max_position_embeddings * factor` for yarn), so linear and dynamic write the original
  window; transformers' dynamic NTK also reads its window from it;
- `vllm_keys`: extra keys vLLM reads in `rope_scaling` (longrope: `short_mscale`/`long_mscale`,
  since vLLM ignores `attention_factor`);
- `gguf`: the GGUF keys (without the `{arch}.` prefix) and global tensors llama.cpp reads, or a
  LongRopeError for what GGUF cannot express;
- `runtimes`: a plain description of what each runtime does below and above the window;
- `plain_in_window`: whether the method is plain RoPE up to the window (then droppable for GGUF).

Add a method: write its function in methods.py and register it with a mapping from here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import LongRopeError
from . import registry
from .basis import attention_scale, factors_of, ntk_base

TRANSFORMERS, VLLM, LLAMA_CPP = "transformers", "vllm", "llama.cpp"


@dataclass
class GgufRope:
    """What a GGUF must hold for a scaling: keys under `{arch}.` and global F32 tensors."""
    keys: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    absent: tuple[str, ...] = ()        # keys under `{arch}.` that must not be written


def window(scaling, original: int) -> int:
    return int(scaling.original_max_position or original)


def scale(scaling, original: int) -> float:
    """s: the given factor, else target / original, else (longrope) the largest long factor."""
    if scaling.factor is not None:
        return float(scaling.factor)
    if scaling.target_length:
        return scaling.target_length / window(scaling, original)
    return float(max(scaling.long_factor)) if scaling.long_factor else 1.0


def target(scaling, original: int) -> int:
    return int(scaling.target_length or round(scale(scaling, original) * window(scaling, original)))


class StockMapping:
    hf_type: str | None = None
    # plain RoPE up to the original window (dynamic NTK): a runtime that cannot express the method
    # may export plain RoPE instead when the user accepts it (`--drop-dynamic`)
    plain_in_window: bool = False

    def rope_parameters(self, scaling, *, dim: int, base: float, original: int) -> dict[str, Any]:
        if self.hf_type is None:
            raise LongRopeError(f"the stock config format (transformers, vLLM) has no spelling for "
                                f"{scaling.method} scaling")
        return {"rope_type": self.hf_type, "rope_theta": base, "factor": scale(scaling, original),
                **scaling.params}

    def max_position(self, scaling, original: int) -> int | None:
        return target(scaling, original)

    def vllm_keys(self, scaling, *, dim: int, base: float, original: int, max_position: int) -> dict:
        return {}

    def gguf(self, scaling, *, dim: int, base: float, original: int) -> GgufRope:
        raise LongRopeError(f"GGUF (llama.cpp) has no spelling for {scaling.method} scaling")

    def runtimes(self, scaling, original: int) -> dict[str, dict[str, str]]:
        same = f"{scaling.describe()} at every length"
        return {r: {"below_window": same, "above_window": same} for r in (TRANSFORMERS, VLLM, LLAMA_CPP)}


class Default(StockMapping):
    hf_type = "default"

    def rope_parameters(self, scaling, *, dim, base, original):
        return {"rope_type": "default", "rope_theta": base}

    def max_position(self, scaling, original):
        return None

    def gguf(self, scaling, *, dim, base, original):
        return GgufRope(keys={"rope.freq_base": float(base)}, absent=("rope.scaling.factor",))


class FixedNtk(Default):
    """A fixed base change: stock RoPE with a larger theta, in every runtime."""
    hf_type = None

    def rope_parameters(self, scaling, *, dim, base, original):
        return {"rope_type": "default", "rope_theta": ntk_base(base, dim, scale(scaling, original))}

    def gguf(self, scaling, *, dim, base, original):
        theta = ntk_base(base, dim, scale(scaling, original))
        return GgufRope(keys={"rope.freq_base": float(theta)}, absent=("rope.scaling.factor",))


class Linear(StockMapping):
    hf_type = "linear"

    def max_position(self, scaling, original):
        return window(scaling, original)  # vLLM multiplies it by factor; transformers ignores it

    def gguf(self, scaling, *, dim, base, original):
        return GgufRope(keys={"rope.scaling.type": "linear", "rope.scaling.factor": scale(scaling, original)})


class Dynamic(StockMapping):
    hf_type = "dynamic"
    plain_in_window = True

    def max_position(self, scaling, original):
        return window(scaling, original)  # transformers' dynamic NTK reads the window from it

    def gguf(self, scaling, *, dim, base, original):
        raise LongRopeError("GGUF (llama.cpp) cannot express dynamic NTK scaling; pass --drop-dynamic "
                            "to export plain RoPE (the same inside the original window)")

    def runtimes(self, scaling, original):
        grows = "NTK base grown with the sequence length (recomputed per forward pass)"
        return {TRANSFORMERS: {"below_window": "plain RoPE", "above_window": grows},
                VLLM: {"below_window": "one NTK base for max_model_len at every length",
                       "above_window": "one NTK base for max_model_len at every length"},
                LLAMA_CPP: {"below_window": "not expressible in GGUF", "above_window": "not expressible in GGUF"}}


class Yarn(StockMapping):
    hf_type = "yarn"

    def rope_parameters(self, scaling, *, dim, base, original):
        out = super().rope_parameters(scaling, dim=dim, base=base, original=original)
        out["original_max_position_embeddings"] = window(scaling, original)
        return out

    def gguf(self, scaling, *, dim, base, original):
        odd = sorted(set(scaling.params) - {"beta_fast", "beta_slow"})
        if odd:
            raise LongRopeError(f"GGUF export of yarn supports beta_fast/beta_slow only, not {', '.join(odd)}")
        keys = {"rope.scaling.type": "yarn", "rope.scaling.factor": scale(scaling, original),
                "rope.scaling.original_context_length": window(scaling, original)}
        for name in ("beta_fast", "beta_slow"):
            if name in scaling.params:
                keys[f"rope.scaling.yarn_{name}"] = float(scaling.params[name])
        return GgufRope(keys=keys)


class Llama3(Yarn):
    """llama.cpp reads Llama-3 scaling as `rope_freqs.weight`: the divisors of theta_i."""
    hf_type = "llama3"

    def rope_parameters(self, scaling, *, dim, base, original):
        """transformers requires both frequency bounds: write the method's defaults when not given."""
        return {"low_freq_factor": 1.0, "high_freq_factor": 4.0,
                **super().rope_parameters(scaling, dim=dim, base=base, original=original)}

    def gguf(self, scaling, *, dim, base, original):
        inv, _ = registry.compute("llama3", dim=dim, base=base, original=window(scaling, original),
                                  factor=scale(scaling, original), **scaling.params)
        freqs = factors_of(inv, dim, base).numpy().astype(np.float32)
        return GgufRope(tensors={"rope_freqs.weight": freqs}, absent=("rope.scaling.factor",))


class LongRope(StockMapping):
    hf_type = "longrope"

    def rope_parameters(self, scaling, *, dim, base, original):
        orig, s = window(scaling, original), scale(scaling, original)
        out = {"rope_type": "longrope", "rope_theta": base,
               "short_factor": list(scaling.short_factor or scaling.long_factor),
               "long_factor": list(scaling.long_factor), "original_max_position_embeddings": orig,
               "factor": s}
        if scaling.attention != "su":
            out["attention_factor"] = attention_scale(scaling.attention, s, orig)
        return out

    def vllm_keys(self, scaling, *, dim, base, original, max_position):
        """vLLM ignores attention_factor and derives its default from max_position / original."""
        orig = window(scaling, original)
        ours = attention_scale(scaling.attention, scale(scaling, original), orig)
        ratio = max_position / orig
        theirs = 1.0 if ratio <= 1 else math.sqrt(1 + math.log(ratio) / math.log(orig))
        if abs(ours - theirs) <= 1e-7 * ours:
            return {}
        return {"short_mscale": ours, "long_mscale": ours}

    def gguf(self, scaling, *, dim, base, original):
        orig, s = window(scaling, original), scale(scaling, original)
        short = scaling.short_factor or scaling.long_factor
        return GgufRope(
            keys={"rope.scaling.type": "longrope", "rope.freq_base": float(base),
                  "rope.scaling.attn_factor": float(attention_scale(scaling.attention, s, orig)),
                  "rope.scaling.original_context_length": orig},
            tensors={"rope_factors_long.weight": np.asarray(scaling.long_factor, dtype=np.float32),
                     "rope_factors_short.weight": np.asarray(short, dtype=np.float32)},
            absent=("rope.scaling.factor",))  # a factor would add linear scaling on top

    def runtimes(self, scaling, original):
        orig = window(scaling, original)
        if not scaling.switches:
            return super().runtimes(scaling, original)
        return {
            TRANSFORMERS: {"below_window": f"short factors while max(position)+1 <= {orig} (per forward pass)",
                           "above_window": "long factors from the first forward pass longer than the window; "
                                           "stock transformers keeps stale short-factor keys in the cache "
                                           "(only Phi-3 re-prefills); longrope.apply re-rotates them"},
            VLLM: {"below_window": f"long factors whenever max_model_len > {orig}, short only if "
                                   f"max_model_len <= {orig}",
                   "above_window": "long factors"},
            LLAMA_CPP: {"below_window": f"long factors whenever n_ctx > {orig} (n_ctx is rounded up to a multiple "
                                        f"of 256), short only if the rounded n_ctx <= {orig}",
                        "above_window": "long factors"},
        }
