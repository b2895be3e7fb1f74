"""Seeds, critical dimension and the needle objective of the search on real numbers."""
import math

import numpy as np
import pytest
import torch

from longrope.errors import LongRopeError
from longrope.search.objective import carry_factors, critical_dim, needle_samples, resolve_critical, seed_factors

from tests.helpers import char_tokenizer


def test_seed_factors_are_the_exact_factors_each_method_implies():
    d, b, L, s = 64, 10000.0, 256, 8.0
    f = seed_factors(d, b, L, s)
    i = np.arange(d // 2)
    assert np.allclose(f["pi"], s, rtol=1e-6)
    assert np.allclose(f["ntk"], (s ** (d / (d - 2))) ** (2 * i / d), rtol=1e-5)
    # YaRN blends linearly in frequency: lambda = 1 / (ramp/s + 1 - ramp), not 1 - ramp + s*ramp
    lo = math.floor(d * math.log(L / (32 * 2 * math.pi)) / (2 * math.log(b)))
    hi = math.ceil(d * math.log(L / (1 * 2 * math.pi)) / (2 * math.log(b)))
    ramp = np.clip((i - max(lo, 0)) / (min(hi, d - 1) - max(lo, 0)), 0, 1)
    assert np.allclose(f["yarn"], 1 / (ramp / s + 1 - ramp), rtol=1e-5)
    assert not np.allclose(f["yarn"], 1 - ramp + s * ramp)
    assert all(np.all(np.diff(v) >= -1e-9) for v in f.values())  # all non-decreasing


def test_carried_factors_keep_each_pairs_blend_so_yarn_and_pi_carry_exactly():
    d, b, L = 64, 10000.0, 256
    two, four = seed_factors(d, b, L, 2.0), seed_factors(d, b, L, 4.0)
    np.testing.assert_allclose(carry_factors(two["yarn"], 2.0, 4.0), four["yarn"], rtol=1e-6)
    np.testing.assert_allclose(carry_factors(two["pi"], 2.0, 4.0), four["pi"], rtol=1e-12)
    np.testing.assert_allclose(carry_factors(np.ones(4), 2.0, 4.0), np.ones(4))
    # a pair searched past the old scale lands past the new one; one that would flip sign is +inf
    out = carry_factors([1.0, 1.5, 2.0, 2.2, 3.5], 2.0, 4.0)
    assert out[2] == pytest.approx(4.0) and out[3] > 4.0 and np.isinf(out[4])
    assert np.all(np.diff(out) >= 0)  # order is kept
    with pytest.raises(LongRopeError, match="cannot carry"):
        carry_factors([1.0], 1.0, 4.0)


def test_critical_dimension_formula():
    # d_tcd = 2*ceil((d/2) log_b(L/(2 pi))): LLaMA2-7B (d 128, b 1e4, L 4096) -> 92;
    # LLaMA3-8B (b 5e5, L 8192) -> 70
    assert critical_dim(128, 10000.0, 4096) == 92
    assert critical_dim(128, 500000.0, 8192) == 70
    assert resolve_critical("auto", 128, 10000.0, 4096) == 92
    assert resolve_critical("64", 128, 10000.0, 4096) == 64 and resolve_critical(None, 128, 1e4, 4096) is None
    for bad in ("63", "0", "128", "x"):
        with pytest.raises(LongRopeError):
            resolve_critical(bad, 128, 10000.0, 4096)


def test_needle_samples_put_the_key_early_and_score_only_the_answer():
    tok = char_tokenizer()
    ids = [tok.encode("the river runs north " * 20, add_special_tokens=False) for _ in range(3)]
    samples, (a, b), used = needle_samples(ids, tok, 300, 4, bos_id=1, seed=0)
    assert len(samples) == 4 and all(s.shape == (300,) for s in samples) and b == 300
    for s in samples:
        text = tok.decode(s.tolist())
        key = text[-(b - a):].strip()
        assert key.isdigit() and len(key) == 5
        assert text.startswith(f"<s>The pass key is {key}.")  # planted at the start
        assert text.rstrip().endswith(f"The pass key is {key}")
        assert s[0].item() == 1
    assert used == [0, 1, 2]  # 4 x ~240 text tokens from 3 documents of 420, in turn
    again, _, _ = needle_samples(ids, tok, 300, 4, bos_id=1, seed=0)
    assert all(torch.equal(x, y) for x, y in zip(samples, again))
    with pytest.raises(LongRopeError, match="too few tokens"):
        needle_samples([ids[0][:50]], tok, 300, 1, bos_id=1)


def test_objective_reuses_screened_documents_and_matches_perplexity():
    from longrope import patch
    from longrope.eval.perplexity import perplexity
    from longrope.search.objective import Objective
    from tests.helpers import make_tiny
    from longrope.search.space import Space

    model = make_tiny("llama")
    g = torch.Generator().manual_seed(0)
    samples = [torch.randint(3, 128, (96,), generator=g) for _ in range(3)]
    obj = Objective(model, samples, original=32, target=96)
    sp = Space.paper(8, 3.0, window=32)
    a, b = sp.snap(np.linspace(1, 3, 8)), sp.snap(np.full(8, 3.0), n_hat=4)
    cheap, full = obj.fitness(1), obj.fitness()
    s1 = cheap([a, b])
    assert obj.forward_passes == 2
    s3 = full([a, b])
    assert obj.forward_passes == 6  # two more documents each, not three
    patch.apply(model, obj.scaling(a))
    assert s3[0] == pytest.approx(perplexity(model, samples).ppl, rel=1e-9)
    assert s1[0] == pytest.approx(perplexity(model, samples[:1]).ppl, rel=1e-9)
    patch.remove(model)
    assert full([b, a]) == [s3[1], s3[0]] and obj.forward_passes == 6  # cached, order-independent


def test_screen_pick_spread_chooses_the_most_factor_sensitive_sample():
    from types import SimpleNamespace

    from longrope.search.fidelity import pick_screen

    nll = {("pi", 0): 3.0, ("ntk", 0): 2.9, ("yarn", 0): 2.8,  # spread 0.2
           ("pi", 1): 2.5, ("ntk", 1): 0.9, ("yarn", 1): 0.5,  # spread 2.0
           ("pi", 2): float("inf"), ("ntk", 2): 1.0, ("yarn", 2): 0.2}  # 0.8 (inf ignored)
    obj = SimpleNamespace(samples=[0, 1, 2], nll=nll, world=1)
    assert pick_screen(obj, ["pi", "ntk", "yarn"], 1, "spread") == [1]
    assert pick_screen(obj, ["pi", "ntk", "yarn"], 2, "spread") == [1, 2]
    assert pick_screen(obj, ["pi", "ntk", "yarn"], 2, "first") == [0, 1]
    with pytest.raises(LongRopeError, match="screen pick"):
        pick_screen(obj, ["pi"], 1, "random")


def test_screening_on_a_chosen_sample_keeps_the_full_score():
    from longrope.search.objective import Objective
    from longrope.search.space import Space
    from tests.helpers import make_tiny

    model = make_tiny("llama")
    g = torch.Generator().manual_seed(1)
    samples = [torch.randint(3, 128, (96,), generator=g) for _ in range(3)]
    sp = Space.paper(8, 3.0, window=32)
    a = sp.snap(np.linspace(1, 3, 8))
    plain = Objective(model, samples, original=32, target=96)
    picked = Objective(model, samples, original=32, target=96)
    picked.screen_samples = [2]
    s_plain, s_pick = plain.fitness(1)([a])[0], picked.fitness(1)([a])[0]
    assert picked.forward_passes == 1 and list(picked.nll) == [(a, 2)] and s_pick != s_plain
    assert plain.fitness(1)([a])[0] == s_plain
    assert picked.fitness()([a]) == plain.fitness()([a]) and picked.forward_passes == 3
