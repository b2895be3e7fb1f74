"""Shared fixtures: tiny random models of each supported family, built in memory (no downloads)."""
from __future__ import annotations

import pytest
import torch

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "phi3")


@pytest.fixture(autouse=True)
def _private_score_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own search score cache (the default one is under ~/.cache)."""
    monkeypatch.setenv("LONGROPE_CACHE_DIR", str(tmp_path_factory.mktemp("scores")))


def tiny_config(family: str = "llama", *, head_dim: int = 16, heads: int = 4, kv_heads: int = 2,
                layers: int = 2, vocab: int = 128, window: int = 32, rope_scaling: dict | None = None,
                partial_rotary_factor: float | None = None, **extra):
    """A small config of `family` whose pre-trained window (max_position_embeddings) is `window`."""
    from transformers import AutoConfig

    kw = dict(hidden_size=head_dim * heads, num_attention_heads=heads, num_key_value_heads=kv_heads,
              num_hidden_layers=layers, intermediate_size=2 * head_dim * heads, vocab_size=vocab,
              max_position_embeddings=window, rope_theta=10000.0, tie_word_embeddings=False,
              bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if family in ("mistral", "qwen3", "llama"):
        kw["head_dim"] = head_dim
    if family == "phi3":
        kw["original_max_position_embeddings"] = window
    if partial_rotary_factor is not None:
        kw["partial_rotary_factor"] = partial_rotary_factor
    if rope_scaling is not None:
        kw["rope_scaling"] = rope_scaling
    kw.update(extra)
    return AutoConfig.for_model(family, **kw)


def make_tiny(family: str = "llama", seed: int = 0, **kw):
    """A tiny randomly initialised causal LM in float32 eval mode, with SDPA attention."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = tiny_config(family, **kw)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=torch.float32)
    return model.eval()


@pytest.fixture
def tiny_llama():
    return make_tiny("llama")
