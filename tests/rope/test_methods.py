"""Our pure RoPE methods against transformers' modeling_rope_utils, on many shapes."""
import math

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from longrope.rope import registry
from longrope.rope.methods import yarn_ramp
from longrope.rope.basis import attention_scale, base_inv_freq, factors_of

HEADS = (32, 64, 96, 128)
BASES = (10000.0, 500000.0)
FACTORS = (2.0, 8.0, 32.0)
PARTIAL = (1.0, 0.5)


def hf_config(head_dim, base, partial, original, rope):
    return LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2, head_dim=head_dim,
                       max_position_embeddings=original, partial_rotary_factor=partial,
                       rope_parameters={"rope_theta": base, "partial_rotary_factor": partial, **rope})


def assert_rel(ours, theirs, tol=1e-6):
    torch.testing.assert_close(ours, theirs.float(), rtol=tol, atol=0)


CASES = [(h, b, f, p) for h in HEADS for b in BASES for f in FACTORS for p in PARTIAL]


@pytest.mark.parametrize("head,base,factor,partial", CASES)
def test_linear_dynamic_yarn_llama3_match_transformers(head, base, factor, partial):
    original, dim = 4096, int(head * partial)
    checks = {
        "linear": ({"rope_type": "linear", "factor": factor}, {"factor": factor}, None),
        "dynamic": ({"rope_type": "dynamic", "factor": factor}, {"factor": factor}, int(original * factor)),
        "yarn": ({"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": original},
                 {"factor": factor}, None),
        "llama3": ({"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                    "original_max_position_embeddings": original}, {"factor": factor}, None),
    }
    for name, (hf_rope, params, seq_len) in checks.items():
        cfg = hf_config(head, base, partial, original, hf_rope)
        theirs, their_scale = ROPE_INIT_FUNCTIONS[hf_rope["rope_type"]](cfg, "cpu", seq_len=seq_len)
        ours, our_scale = registry.compute(name, dim=dim, base=base, original=original, seq_len=seq_len, **params)
        assert ours.dtype == torch.float32 and ours.shape == (dim // 2,)
        assert_rel(ours, theirs)
        assert our_scale == pytest.approx(their_scale, rel=1e-6), name


@pytest.mark.parametrize("head,base,factor,partial", CASES[::3])
@pytest.mark.parametrize("seq_len", [None, 100, 4097, 100000])
def test_longrope_matches_transformers(head, base, factor, partial, seq_len):
    original, dim = 4096, int(head * partial)
    g = torch.Generator().manual_seed(head + int(factor))
    long = (1 + torch.rand(dim // 2, generator=g) * factor).sort().values.tolist()
    short = (1 + torch.rand(dim // 2, generator=g) * 0.2).sort().values.tolist()
    cfg = hf_config(head, base, partial, original,
                    {"rope_type": "longrope", "long_factor": long, "short_factor": short, "factor": factor,
                     "original_max_position_embeddings": original})
    theirs, their_scale = ROPE_INIT_FUNCTIONS["longrope"](cfg, "cpu", seq_len=seq_len)
    ours, our_scale = registry.compute("longrope", dim=dim, base=base, original=original, seq_len=seq_len,
                                       long_factor=long, short_factor=short, factor=factor)
    assert_rel(ours, theirs)
    assert our_scale == pytest.approx(their_scale, rel=1e-6)


def test_ntk_is_a_base_change():
    dim, base, s = 64, 10000.0, 8.0
    ours, scale = registry.compute("ntk", dim=dim, base=base, original=256, factor=s)
    assert_rel(ours, base_inv_freq(dim, base * s ** (dim / (dim - 2))))
    assert scale == 1.0
    lam = factors_of(ours, dim, base)
    assert lam[0].item() == pytest.approx(1.0) and lam[-1].item() == pytest.approx(s ** ((dim - 2) / (dim - 2)), rel=1e-5)


def test_dynamic_is_unscaled_inside_the_window():
    ours, _ = registry.compute("dynamic", dim=64, base=1e4, original=256, factor=8, seq_len=100)
    assert_rel(ours, base_inv_freq(64, 1e4))


def test_yarn_factors_blend_in_frequency():
    dim, base, s, L = 64, 1e4, 8.0, 256
    inv, scale = registry.compute("yarn", dim=dim, base=base, original=L, factor=s)
    ramp = yarn_ramp(dim, base, L)
    lam = factors_of(inv, dim, base).float()
    torch.testing.assert_close(lam, 1 / (ramp / s + 1 - ramp), rtol=1e-6, atol=0)
    assert lam[0] == pytest.approx(1.0) and lam[-1] == pytest.approx(s)
    assert scale == pytest.approx(0.1 * math.log(s) + 1)


def test_attention_policies():
    assert attention_scale("su", 8, 4096) == pytest.approx(math.sqrt(1 + math.log(8) / math.log(4096)))
    assert attention_scale("yarn", 8, 4096) == pytest.approx(0.1 * math.log(8) + 1)
    assert attention_scale(1.25, 8, 4096) == 1.25
    assert attention_scale("su", 1.0, 4096) == 1.0


def test_unknown_method_and_params_are_errors():
    from longrope.errors import LongRopeError
    with pytest.raises(LongRopeError, match="unknown scaling method"):
        registry.get("rotary9000")
    with pytest.raises(LongRopeError, match="takes no parameter"):
        registry.compute("linear", dim=64, base=1e4, original=256, factor=2, beta_fast=3)
    with pytest.raises(LongRopeError, match="rotary pairs"):
        registry.compute("longrope", dim=64, base=1e4, original=256, long_factor=[1.0] * 31)
