"""`longrope.apply` against stock transformers, n_hat, short/long switching and the KV-cache boundary."""
import pytest
import torch
from tests.helpers import FAMILIES, make_tiny, tiny_config

import longrope
from longrope.errors import LongRopeError
from longrope.patch import rope_dims
from longrope.rope.scaling import Scaling

WINDOW = 32
PAIRS = 8


def long_short(seed=0, s=4.0):
    g = torch.Generator().manual_seed(seed)
    long = (1 + torch.rand(PAIRS, generator=g) * (s - 1)).sort().values.tolist()
    short = (1 + torch.rand(PAIRS, generator=g) * 0.3).sort().values.tolist()
    return long, short


SCALINGS = {
    "linear": Scaling("linear", factor=4.0),
    "dynamic": Scaling("dynamic", factor=4.0),
    "yarn": Scaling("yarn", factor=4.0),
    "longrope": Scaling("longrope", long_factor=long_short()[0], short_factor=long_short()[1], factor=4.0),
}


def stock_model(family, scaling, weights_from):
    """Stock transformers with the equivalent rope config and the same weights."""
    from transformers import AutoModelForCausalLM
    rope = scaling.to_hf(dim=2 * PAIRS, base=10000.0, original=WINDOW)
    cfg = tiny_config(family, rope_parameters=rope)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=torch.float32).eval()
    model.load_state_dict(weights_from.state_dict())
    return model


# stock Phi-3 configs accept only the longrope type, so Phi-3 is compared on longrope alone
PARITY = [(f, m) for f in FAMILIES for m in SCALINGS if f != "phi3" or m == "longrope"]


@pytest.mark.parametrize("family,method", PARITY)
def test_logits_match_stock_transformers(family, method):
    ours = make_tiny(family, seed=1)
    stock = stock_model(family, SCALINGS[method], ours)
    longrope.apply(ours, SCALINGS[method])
    for length in (WINDOW // 2, WINDOW * 3):
        ids = torch.randint(3, 128, (2, length), generator=torch.Generator().manual_seed(length))
        with torch.no_grad():
            torch.testing.assert_close(ours(ids).logits, stock(ids).logits, rtol=1e-5, atol=1e-5)


def test_patch_changes_logits_and_remove_restores(tiny_llama):
    ids = torch.randint(3, 128, (1, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = tiny_llama(ids).logits
        longrope.apply(tiny_llama, "yarn:4")
        patched = tiny_llama(ids).logits
        longrope.remove(tiny_llama)
        after = tiny_llama(ids).logits
    assert (patched - before).abs().max() > 1e-3
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert longrope.patch.current(tiny_llama) is None


def test_nhat_rows_use_original_rotation_below_and_scaled_at_or_above():
    model = make_tiny("llama")
    long, _ = long_short()
    n_hat = 5
    longrope.apply(model, Scaling("longrope", long_factor=long, factor=4.0, n_hat=n_hat))
    rot = model.model.rotary_emb
    pos = torch.arange(48)[None]
    cos, sin = rot(torch.zeros(1, dtype=torch.float32), pos)
    theta = 1.0 / (10000.0 ** (torch.arange(0, 16, 2).float() / 16))
    scale = rot.attention_scaling
    plain = pos[0, :, None].float() * theta
    scaled = pos[0, :, None].float() * theta / torch.tensor(long)
    torch.testing.assert_close(cos[0, :n_hat, :8], plain[:n_hat].cos() * scale)
    torch.testing.assert_close(sin[0, n_hat:, :8], scaled[n_hat:].sin() * scale)
    assert not torch.allclose(cos[0, n_hat:, :8], plain[n_hat:].cos() * scale)


def test_nhat_changes_logits_only_through_positions_at_or_above_it():
    long, _ = long_short()
    a, b = make_tiny("llama"), make_tiny("llama")
    longrope.apply(a, Scaling("longrope", long_factor=long, factor=4.0, n_hat=0))
    longrope.apply(b, Scaling("longrope", long_factor=long, factor=4.0, n_hat=8))
    unscaled = make_tiny("llama")
    ids = torch.randint(3, 128, (1, 64), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        la, lb, lu = a(ids).logits, b(ids).logits, unscaled(ids).logits
    scale = a.model.rotary_emb.attention_scaling
    # the first n_hat tokens see only positions < n_hat: b rotates them like the unscaled model
    # (up to the attention scale, which multiplies q.k by scale^2 -> compare with a scaled copy)
    assert (la[:, 8:] - lb[:, 8:]).abs().max() > 1e-4
    ref = make_tiny("llama")
    longrope.apply(ref, Scaling("longrope", long_factor=[1.0] * PAIRS, factor=4.0))  # scale only
    with torch.no_grad():
        lr = ref(ids).logits
    torch.testing.assert_close(lb[:, :8], lr[:, :8], rtol=1e-5, atol=1e-5)
    assert scale > 1 and (lu[:, :8] - lb[:, :8]).abs().max() > 0


def test_short_factors_inside_window_long_beyond():
    long, short = long_short()
    model = make_tiny("mistral")
    longrope.apply(model, Scaling("longrope", long_factor=long, short_factor=short, factor=4.0))
    short_only, long_only = make_tiny("mistral"), make_tiny("mistral")
    longrope.apply(short_only, Scaling("longrope", long_factor=short, factor=4.0))
    longrope.apply(long_only, Scaling("longrope", long_factor=long, factor=4.0))
    with torch.no_grad():
        for length, ref in ((WINDOW, short_only), (WINDOW + 1, long_only)):
            ids = torch.randint(3, 128, (1, length), generator=torch.Generator().manual_seed(length))
            torch.testing.assert_close(model(ids).logits, ref(ids).logits, rtol=1e-5, atol=1e-5)


def _generate_vs_recompute(model, prompt_len=28, new=12, seed=1):
    ids = torch.randint(3, 128, (1, prompt_len), generator=torch.Generator().manual_seed(seed))
    out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                         output_logits=True, return_dict_in_generate=True)
    seq, worst = ids, 0.0
    with torch.no_grad():
        for k in range(new):  # logits of each cached step against a full recompute of its prefix
            full = model(out.sequences[:, :prompt_len + k], use_cache=False).logits[:, -1]
            worst = max(worst, (out.logits[k] - full).abs().max().item())
            step = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, step], dim=1)  # greedy decoding that recomputes the whole prefix
    return out.sequences, seq, worst


@pytest.mark.parametrize("family", FAMILIES)
def test_kv_cache_generation_across_the_window_equals_recompute(family):
    long = [1.0 + 3 * i for i in range(PAIRS)]
    model = make_tiny(family, initializer_range=0.2)
    longrope.apply(model, Scaling("longrope", long_factor=long, short_factor=[1.0] * PAIRS, factor=16.0))
    cached, recomputed, worst = _generate_vs_recompute(model)
    assert cached.shape[1] > WINDOW + 2  # the generation crossed the window
    assert worst < 1e-4
    assert torch.equal(cached, recomputed)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "phi3"])  # phi3 has its own remedy
def test_without_the_remedy_the_cache_goes_stale(family):
    """Control: proves the test above can fail (stock behaviour of non-Phi-3 families)."""
    long = [1.0 + 3 * i for i in range(PAIRS)]
    model = make_tiny(family, initializer_range=0.2)
    longrope.apply(model, Scaling("longrope", long_factor=long, short_factor=[1.0] * PAIRS, factor=16.0))
    model.__dict__.pop("prepare_inputs_for_generation")
    _, _, worst = _generate_vs_recompute(model)
    assert worst > 1e-2


def test_partial_rotary_phi3_matches_stock():
    from transformers import AutoModelForCausalLM
    long, short = long_short()
    long, short = long[:4], short[:4]
    torch.manual_seed(0)
    cfg = tiny_config("phi3", partial_rotary_factor=0.5)
    ours = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").eval()
    assert rope_dims(ours)[0] == 8
    scaling = Scaling("longrope", long_factor=long, short_factor=short, factor=4.0)
    rope = scaling.to_hf(dim=8, base=1e4, original=WINDOW)
    rope["partial_rotary_factor"] = 0.5
    stock = AutoModelForCausalLM.from_config(tiny_config("phi3", partial_rotary_factor=0.5, rope_parameters=rope),
                                             attn_implementation="sdpa").eval()
    stock.load_state_dict(ours.state_dict())
    longrope.apply(ours, scaling)
    ids = torch.randint(3, 128, (1, 80), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, stock(ids).logits, rtol=1e-5, atol=1e-5)


def test_model_without_rope_is_a_clear_error():
    from transformers import GPT2Config, GPT2LMHeadModel
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64))
    with pytest.raises(LongRopeError, match="no rotary embedding"):
        longrope.apply(gpt2, "yarn:4")


def test_wrong_factor_count_is_a_clear_error(tiny_llama):
    with pytest.raises(LongRopeError, match="rotary pairs"):
        longrope.apply(tiny_llama, Scaling("longrope", long_factor=[1.0] * 5, factor=2.0))


def test_short_attention_applies_inside_the_window_only():
    long, short = long_short()
    model = make_tiny("llama")
    longrope.apply(model, Scaling("longrope", long_factor=long, short_factor=short, factor=4.0, short_attention=1.0))
    rot = model.model.rotary_emb
    x = torch.zeros(1)
    cos_short, _ = rot(x, torch.arange(WINDOW)[None])
    cos_long, _ = rot(x, torch.arange(WINDOW + 1)[None])
    theta = 1.0 / (10000.0 ** (torch.arange(0, 16, 2).float() / 16))
    su = (1 + torch.log(torch.tensor(4.0)) / torch.log(torch.tensor(float(WINDOW)))).sqrt()
    torch.testing.assert_close(cos_short[0, 5, :8], (5 * theta / torch.tensor(short)).cos())  # scale 1
    torch.testing.assert_close(cos_long[0, 5, :8], (5 * theta / torch.tensor(long)).cos() * su)
    # generation across the window still equals recomputation
    cached, recomputed, worst = _generate_vs_recompute(model)
    assert worst < 1e-4 and torch.equal(cached, recomputed)


def test_tables_stay_float32_when_the_model_is_cast():
    long, short = long_short()
    model = make_tiny("llama")
    longrope.apply(model, Scaling("longrope", long_factor=long, short_factor=short, factor=4.0))
    before = {k: v.clone() for k, v in model.model.rotary_emb.named_buffers()}
    model.to(torch.bfloat16)
    after = dict(model.model.rotary_emb.named_buffers())
    assert all(v.dtype == torch.float32 for v in after.values())
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    cos, _ = model.model.rotary_emb(torch.zeros(1, dtype=torch.bfloat16), torch.arange(8)[None])
    assert cos.dtype == torch.bfloat16
