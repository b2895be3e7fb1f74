"""Seeds, critical dimension and the needle objective of the search on real numbers."""
import math

import numpy as np
import pytest
import torch

from longrope.errors import LongRopeError
from longrope.search.longrope2 import critical_dim, critical_values, objective_terms, resolve_critical, wide_seeds
from longrope.search.objective import carry_factors, needle_samples, seed_factors

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


def test_critical_sweep_starts_at_the_theoretical_value_and_lists_are_checked():
    # builtin geometry: d 64, b 1e4, L 256 -> d_tcd 26 (13 pairs); the sweep: 26, 22, 18, 30
    assert critical_values("sweep", 64, 10000.0, 256) == [26, 22, 18, 30]
    assert critical_values("auto", 64, 10000.0, 256) == [26] and critical_values(None, 64, 1e4, 256) is None
    assert critical_values("20,24", 64, 10000.0, 256) == [20, 24]
    assert critical_values("sweep", 16, 10000.0, 32) == [4, 8]  # only values inside (0, dim)
    for bad, msg in (("20,20", "twice"), ("20,x", "comma-separated"), ("20,21", "even"), (",", "no value")):
        with pytest.raises(LongRopeError, match=msg):
            critical_values(bad, 64, 10000.0, 256)
    with pytest.raises(LongRopeError, match="sweep runs one search per value"):
        resolve_critical("sweep", 64, 10000.0, 256)


def test_wide_seeds_are_ntk_ramps_at_two_to_3_4_times_the_scale():
    seeds = wide_seeds(8, 3, 4.0)
    assert list(seeds) == [f"ntk-ramp:{m:g}s" for m in (2.0, 2.2, 2.4, 2.6, 2.8, 3.0, 3.2, 3.4)]
    v = seeds["ntk-ramp:3s"]
    np.testing.assert_allclose(v[:3], 12.0 ** (np.arange(3) / 3))
    np.testing.assert_allclose(v[3:], 12.0 + 0.1 * np.arange(5))


def needle_texts(tok, n=4, length=300):
    text = tok.encode("the river runs north and the stone stays " * 20, add_special_tokens=False)
    return [torch.tensor([1] + text[i:i + length - 1]) for i in range(n)]


def test_needle_samples_plant_a_key_at_spread_depths_and_ask_for_it_at_the_end():
    tok = char_tokenizer()
    texts = needle_texts(tok)
    samples, a = needle_samples(texts, tok, bos_id=1, seed=0)
    assert len(samples) == 4 and all(s.shape == (300,) for s in samples)
    where = []
    for s, t in zip(samples, texts):
        text = tok.decode(s.tolist())
        key = tok.decode(s[a:].tolist()).strip()
        assert key.isdigit() and len(key) == 5 and s[0].item() == 1
        assert text.rstrip().endswith(f"What is the pass key? The pass key is {key}")
        where.append(text.index(f"The pass key is {key}. Remember it."))
        # around the needle, the document itself, in order
        assert text.startswith(tok.decode(t[:where[-1] - 2].tolist()))
    assert where[0] == len("<s>") and where == sorted(where) and where[-1] > 140  # depths 0, 1/4, 1/2, 3/4
    again, _ = needle_samples(texts, tok, bos_id=1, seed=0)
    assert all(torch.equal(x, y) for x, y in zip(samples, again))
    with pytest.raises(LongRopeError, match="too short"):
        needle_samples([texts[0][:40]], tok, bos_id=1)
    assert objective_terms("ppl", 300, a) is None
    assert objective_terms("needle", 300, a) == ((a, 300, 1.0),)
    assert objective_terms("combined", 300, a, 0.5) == ((1, a, 1.0), (a, 300, 0.5))
    with pytest.raises(LongRopeError, match="answer range"):
        objective_terms("needle", 300, None)


def test_needle_and_combined_scores_are_the_range_nlls_of_one_forward_pass():
    from longrope import patch
    from longrope.eval.perplexity import perplexity
    from longrope.search.objective import Objective
    from longrope.search.space import Space
    from tests.helpers import make_tiny

    tok = char_tokenizer()
    samples, a = needle_samples(needle_texts(tok, 2, 120), tok, bos_id=1, seed=0)
    model = make_tiny("llama")
    c = Space.paper(8, 4.0, window=32).snap(np.linspace(1, 4, 8))
    needle = Objective(model, samples, original=32, target=120, terms=objective_terms("needle", 120, a))
    both = Objective(model, samples, original=32, target=120, terms=objective_terms("combined", 120, a, 0.5))
    sn, sb = needle.fitness()([c])[0], both.fitness()([c])[0]
    patch.apply(model, needle.scaling(c))
    parts = [perplexity(model, [s], positions=[(1, a), (a, 120)]).by_range for s in samples]
    patch.remove(model)
    ans = [p[f"{a}-120"]["nll"] for p in parts]
    text = [p[f"1-{a}"]["nll"] for p in parts]
    assert sn == pytest.approx(math.exp(sum(ans) / 2), rel=1e-9)
    assert sb == pytest.approx(math.exp(sum(t + 0.5 * x for t, x in zip(text, ans)) / 2), rel=1e-9)
    assert needle.forward_passes == 2 and both.forward_passes == 2  # one pass per sample, whatever the terms


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
