"""models.full_attention and models.with_window: a model-wide sliding window loads as full attention
(so positions further back than the window reach the output, what an extension is for), per-layer
local attention stays, and a recipe's original_window is a base-model copy whose config states it."""
from __future__ import annotations

import json

import torch

from longrope import models
from tests.helpers import char_tokenizer, make_tiny


def _beyond_window_effect(lm, window: int) -> float:
    """How much the last position's logits move when a token `window`+ positions back changes."""
    ids = torch.randint(4, 100, (1, 4 * window), generator=torch.Generator().manual_seed(0))
    other = ids.clone()
    other[0, 1] = 4 + (int(ids[0, 1]) + 1) % 96
    with torch.no_grad():
        return float((lm(ids).logits[0, -1] - lm(other).logits[0, -1]).abs().max())


def test_a_model_wide_sliding_window_loads_as_full_attention(tmp_path):
    from transformers import AutoModelForCausalLM

    make_tiny("mistral", window=64, sliding_window=8).save_pretrained(tmp_path)
    char_tokenizer().save_pretrained(tmp_path)
    stock = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert _beyond_window_effect(stock, 8) == 0.0  # 2 layers of an 8-token window cannot see position 1
    ours = models.load_model(tmp_path)
    assert ours.config.sliding_window is None and models.load_config(tmp_path).sliding_window is None
    assert _beyond_window_effect(ours, 8) > 1e-4
    # the saved folder says so too: stock transformers then computes what longrope did
    ours.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["sliding_window"] is None


def test_per_layer_local_attention_is_the_architecture_and_stays():
    cfg = make_tiny("qwen2", use_sliding_window=True, sliding_window=8, max_window_layers=1).config
    assert cfg.layer_types is not None and models.full_attention(cfg) is None
    assert cfg.sliding_window == 8
    mistral = make_tiny("mistral", sliding_window=16).config
    assert models.full_attention(mistral) == 16 and mistral.sliding_window is None


def test_with_window_states_the_pre_trained_window(tmp_path):
    src = tmp_path / "src"
    make_tiny("mistral", window=64, sliding_window=8).save_pretrained(src)
    char_tokenizer().save_pretrained(src)
    copy = models.with_window(src, 16, tmp_path / "copy")
    assert models.with_window(src, 16, tmp_path / "copy") == copy  # idempotent (a resumed run)
    assert models.rope_config(models.load_config(copy))[2] == 16
    assert models.rope_config(models.load_config(src))[2] == 64  # the model's own folder is untouched
    assert (copy / "model.safetensors").resolve() == (src / "model.safetensors").resolve()
    ids = torch.randint(4, 100, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the same weights and attention: only the stated window differs
        torch.testing.assert_close(models.load_model(copy)(ids).logits, models.load_model(src)(ids).logits)
