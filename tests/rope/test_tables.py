"""The rotary tables: float64 angles, cast once, so that far positions rotate exactly."""
import math

import pytest
import torch
from tests.helpers import make_tiny

import longrope
from longrope.rope.methods import base_inv_freq
from longrope.rope.tables import rotary_tables

FAR = 2_000_000


def test_angles_at_2m_are_exact_to_float64():
    inv = base_inv_freq(64, 10000.0)
    pos = torch.tensor([[FAR]])
    cos, sin = rotary_tables(pos, inv, dtype=torch.float64)
    want = [math.cos(FAR * float(t)) for t in inv.double()]
    assert max(abs(a - b) for a, b in zip(cos[0, 0, :32].tolist(), want)) < 1e-9
    # the float32 product is off by ~0.1 rad in the second pair here: the error the tables remove
    f32 = (pos[..., None].float() * inv)[0, 0, 1]
    assert abs(float(f32) - FAR * float(inv.double()[1])) > 1e-2


def test_tables_cast_once_to_the_requested_dtype():
    inv = base_inv_freq(16, 10000.0)
    pos = torch.arange(300)[None]
    cos16, _ = rotary_tables(pos, inv, 1.3, dtype=torch.bfloat16)
    cos64, _ = rotary_tables(pos, inv, 1.3, dtype=torch.float64)
    assert cos16.dtype == torch.bfloat16
    assert torch.equal(cos16, cos64.to(torch.bfloat16))  # one rounding, from float64


def _logits(model, ids, offset):
    pos = torch.arange(offset, offset + ids.shape[1])[None]
    with torch.no_grad():
        return model(ids, position_ids=pos).logits


def test_logits_at_offset_2m_equal_offset_0_on_a_tiny_model():
    model = make_tiny("llama", head_dim=64, heads=2, kv_heads=2, window=256)
    ids = torch.randint(3, 128, (1, 256), generator=torch.Generator().manual_seed(0))
    stock = (_logits(model, ids, 0) - _logits(model, ids, FAR)).abs().max()
    longrope.apply(model, "none")
    ours = (_logits(model, ids, 0) - _logits(model, ids, FAR)).abs().max()
    assert ours < 2e-6 < 1e-4 < stock  # RoPE is relative: only rounding may tell the offsets apart


def test_builtin_loss_at_offset_2m_equals_offset_0():
    from longrope.models import load_model, load_tokenizer

    model, tok = load_model("builtin", dtype=torch.float32).eval(), load_tokenizer("builtin")
    ids = torch.tensor([tok(longrope.patch.__doc__ * 4)["input_ids"][:256]])

    def loss(offset):
        pos = torch.arange(offset, offset + ids.shape[1])[None]
        with torch.no_grad():
            return float(model(ids, position_ids=pos, labels=ids).loss)

    stock = abs(loss(0) - loss(FAR))
    longrope.apply(model, "none")
    assert abs(loss(0) - loss(FAR)) < 1e-5 < 1e-4 < stock


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_patched_module_returns_the_activation_dtype(dtype):
    model = make_tiny("llama")
    longrope.apply(model, "yarn:4")
    cos, sin = model.model.rotary_emb(torch.zeros(1, dtype=dtype), torch.arange(40)[None])
    assert cos.dtype == sin.dtype == dtype
