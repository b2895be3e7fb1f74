"""Seeds, critical dimension and the needle objective of the search on real numbers."""
import math

import numpy as np
import pytest
import torch

from longrope.errors import LongRopeError
from longrope.search.objective import critical_dim, needle_samples, resolve_critical, seed_factors

from _search_fixtures import char_tokenizer


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
    samples, (a, b) = needle_samples(ids, tok, 300, 4, bos_id=1, seed=0)
    assert len(samples) == 4 and all(s.shape == (300,) for s in samples) and b == 300
    for s in samples:
        text = tok.decode(s.tolist())
        key = text[-(b - a):].strip()
        assert key.isdigit() and len(key) == 5
        assert text.startswith(f"<s>The pass key is {key}.")  # planted at the start
        assert text.rstrip().endswith(f"The pass key is {key}")
        assert s[0].item() == 1
    again, _ = needle_samples(ids, tok, 300, 4, bos_id=1, seed=0)
    assert all(torch.equal(x, y) for x, y in zip(samples, again))
    with pytest.raises(LongRopeError, match="too few tokens"):
        needle_samples([ids[0][:50]], tok, 300, 1, bos_id=1)
