"""The search space: grid, bounds, monotone moves, seeding; all randomness from a seeded Generator."""
import math

import numpy as np
import pytest

from longrope.errors import LongRopeError
from longrope.search.space import N_HATS, Candidate, Space, allowed_n_hats


def monotone(c):
    return all(a <= b for a, b in zip(c.factors, c.factors[1:]))


def on_grid(x, step=0.01):
    return abs(x / step - round(x / step)) < 1e-9


def test_paper_space_bounds_and_n_hats():
    sp = Space.paper(8, 8.0, window=256)
    assert sp.pairs == 8 and sp.lo.tolist() == [1.0] * 8 and sp.hi.tolist() == [10.0] * 8
    assert sp.n_hats == tuple(n for n in N_HATS if n < 256) and 256 not in sp.n_hats
    assert allowed_n_hats(32) == (0, 1, 2, 4, 8, 12, 16, 20, 24, 28)
    assert Space.paper(4, 2.0, window=32, search_n_hat=False).n_hats == (0,)


def test_candidate_is_hashable_and_json_round_trips():
    a = Candidate((1.0, 1.5, 2.25), 4, 1.1)
    b = Candidate.from_json(a.to_json())
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1


def test_snap_rounds_clips_and_makes_monotone():
    sp = Space.paper(5, 2.0, window=64)
    c = sp.snap([0.5, 1.234, 1.2, 9.0, float("nan")], n_hat=5)
    assert c.factors == (1.0, 1.23, 1.23, 2.5, 2.5)
    assert c.n_hat in (4, 8) and sp.is_valid(c)


def test_is_valid_rejects_each_violation():
    sp = Space.paper(3, 2.0, window=64)
    assert sp.is_valid(Candidate((1.0, 1.5, 2.5), 0, 1.0))
    assert not sp.is_valid(Candidate((1.5, 1.4, 2.0), 0, 1.0))  # decreasing
    assert not sp.is_valid(Candidate((1.0, 1.505, 2.0), 0, 1.0))  # off grid
    assert not sp.is_valid(Candidate((1.0, 1.5, 2.51), 0, 1.0))  # above 1.25*s
    assert not sp.is_valid(Candidate((1.0, 1.5, 2.0), 3, 1.0))  # n_hat not allowed
    assert not sp.is_valid(Candidate((1.0, 1.5, 2.0), 64, 1.0))  # n_hat at the window
    assert not sp.is_valid(Candidate((1.0, 1.5), 0, 1.0))  # wrong length


@pytest.mark.parametrize("p", [0.3, 1.0])
def test_mutation_keeps_every_invariant(p):
    sp = Space.paper(16, 4.0, window=128, mutation_prob=p)
    rng = np.random.default_rng(1)
    c = sp.snap(np.linspace(1.0, 4.0, 16))
    changed = 0
    for _ in range(2000):
        m = sp.mutate(c, rng)
        assert sp.is_valid(m) and monotone(m) and all(on_grid(x) for x in m.factors)
        changed += m != c
        c = m
    assert changed > 1000  # it does move


def test_mutation_probability_zero_changes_nothing():
    sp = Space.paper(8, 4.0, window=128, mutation_prob=0.0)
    c = sp.snap(np.linspace(1.0, 4.0, 8), n_hat=8)
    rng = np.random.default_rng(0)
    assert all(sp.mutate(c, rng) == c for _ in range(50))


def test_mutation_changes_about_p_of_the_pairs():
    sp = Space.paper(64, 8.0, window=256, mutation_prob=0.3, search_n_hat=False)
    rng = np.random.default_rng(3)
    c = sp.snap(np.linspace(1.0, 10.0, 64))  # wide gaps: a drawn value rarely equals the old one
    frac = np.mean([np.mean(np.array(sp.mutate(c, rng).factors) != np.array(c.factors)) for _ in range(300)])
    assert 0.2 < frac < 0.32


def test_crossover_mixes_parents_and_rejects_non_monotone():
    sp = Space.paper(6, 4.0, window=64)
    a = Candidate((1.0, 1.0, 1.0, 1.0, 1.0, 1.0), 0, 1.0)
    b = Candidate((1.1, 1.2, 1.3, 1.4, 1.5, 1.6), 8, 1.0)
    rng = np.random.default_rng(0)
    kids = [sp.crossover(a, b, rng) for _ in range(200)]
    ok = [k for k in kids if k is not None]
    assert ok and all(sp.is_valid(k) and monotone(k) for k in ok)
    assert all(all(x in (ai, bi) for x, ai, bi in zip(k.factors, a.factors, b.factors)) for k in ok)
    # a pair from b followed by a pair from a decreases: those children must be rejected
    assert any(k is None for k in kids)
    c = Candidate((2.0, 2.0, 2.0, 2.0, 2.0, 2.0), 0, 1.0)  # every mix of a and c is monotone only if sorted
    assert all(k is None or monotone(k) for k in (sp.crossover(c, a, rng) for _ in range(100)))


def test_critical_dim_space_fixes_low_pairs_and_bounds_the_rest():
    low = [1.0, 1.3, 1.7, 2.2, 2.9, 3.5]
    sp = Space.critical(low, 3, 4.0, window=64)
    assert sp.fixed.tolist() == [True] * 3 + [False] * 3
    rng = np.random.default_rng(0)
    c = sp.snap([1.0] * 6)
    assert c.factors[:3] == (1.0, 1.3, 1.7) and c.factors[3:] == (4.0, 4.0, 4.0)
    for _ in range(500):
        c = sp.mutate(c, rng)
        assert sp.is_valid(c) and c.factors[:3] == (1.0, 1.3, 1.7)
        assert all(4.0 <= x <= 8.0 for x in c.factors[3:])
    with pytest.raises(LongRopeError):
        Space.critical(low, 6, 4.0, window=64)


def ramp_of(c, cd, step=0.01):
    """LongRoPE2's low pairs from the critical factor, on the grid."""
    return tuple(round(round(c.factors[cd] ** (i / cd) / step) * step, 9) for i in range(cd))


def test_ramp_space_ties_low_pairs_to_the_critical_factor_after_every_move():
    sp = Space.critical(None, 4, 4.0, pairs=8, window=64)
    assert sp.ramp == 4 and sp.tied.tolist() == [True] * 4 + [False] * 4 and not sp.fixed.any()
    c = sp.snap([7.0] * 8)
    assert c.factors[4:] == (7.0,) * 4 and c.factors[:4] == ramp_of(c, 4) and c.factors[0] == 1.0
    assert sp.is_valid(c)
    rng = np.random.default_rng(0)
    tops = set()
    for _ in range(500):
        c = sp.mutate(c, rng)
        assert sp.is_valid(c) and monotone(c) and c.factors[:4] == ramp_of(c, 4)
        assert all(4.0 <= x <= 8.0 for x in c.factors[4:])
        tops.add(c.factors[4])
    assert len(tops) > 10  # the critical factor itself is searched
    a, b = sp.snap([5.0] * 8), sp.snap([5, 5, 5, 5, 7.5, 7.5, 7.9, 8.0])
    kids = [k for k in (sp.crossover(a, b, rng) for _ in range(200)) if k is not None]
    assert {k.factors[4] for k in kids} == {5.0, 7.5}
    assert all(sp.is_valid(k) and k.factors[:4] == ramp_of(k, 4) for k in kids)
    # a low pair off the ramp is not a point of the space
    assert not sp.is_valid(Candidate((1.0, 1.5) + c.factors[2:], c.n_hat, c.attn))
    assert "ramp" in sp.describe() and "ramp" not in Space.paper(8, 4.0, window=64).describe()
    with pytest.raises(LongRopeError):
        Space.critical(None, 0, 4.0, pairs=8, window=64)


def test_ramp_space_upper_bound_can_be_raised_for_wide_seeds():
    sp = Space.critical(None, 3, 4.0, pairs=6, top=13.6, window=64)
    assert sp.hi[3:].tolist() == [13.6] * 3 and math.isclose(sp.hi[2], 13.6 ** (2 / 3))
    assert sp.snap([13.6] * 6).factors[3] == 13.6


def test_attention_scale_search_stays_on_grid_within_bounds():
    sp = Space.paper(4, 4.0, window=64, attn=1.14, attn_bounds=(1.0, 1.3))
    rng = np.random.default_rng(0)
    c = sp.snap([1, 2, 3, 4])
    assert c.attn == 1.14
    values = set()
    for _ in range(500):
        c = sp.mutate(c, rng)
        assert sp.is_valid(c) and 1.0 <= c.attn <= 1.3 and on_grid(c.attn)
        values.add(c.attn)
    assert len(values) > 5
    fixed = Space.paper(4, 4.0, window=64, attn=1.2)
    assert all(fixed.mutate(fixed.snap([1, 2, 3, 4]), rng).attn == 1.2 for _ in range(50))


def test_initial_population_contains_seeds_then_unique_mutants():
    sp = Space.paper(8, 4.0, window=64)
    seeds = {"pi": np.full(8, 4.0), "ntk": np.geomspace(1.0, 4.0, 8), "yarn": np.linspace(1.0, 4.0, 8)}
    pop, named = sp.initial(seeds, 40, np.random.default_rng(0))
    assert len(pop) == 40 and len(set(pop)) == 40
    assert pop[:3] == [named["pi"], named["ntk"], named["yarn"]]
    assert all(sp.is_valid(c) for c in pop)
    again, _ = sp.initial(seeds, 40, np.random.default_rng(0))
    assert again == pop
    other, _ = sp.initial(seeds, 40, np.random.default_rng(1))
    assert other != pop


def test_rng_state_is_json_serialisable_and_restores_the_stream():
    import json

    rng = np.random.default_rng(5)
    rng.random(7)
    saved = json.loads(json.dumps(rng.bit_generator.state))
    a = rng.random(4)
    r2 = np.random.default_rng(0)
    r2.bit_generator.state = saved
    assert np.array_equal(a, r2.random(4))


@pytest.mark.parametrize("kw", [dict(lo=[1, 2], hi=[1]), dict(lo=[2, 1], hi=[3, 3]),
                                dict(lo=[1, 1], hi=[0.5, 2]), dict(lo=[1.001, 1.001], hi=[1.009, 1.009])])
def test_bad_bounds_are_one_line_errors(kw):
    with pytest.raises(LongRopeError) as e:
        Space(kw["lo"], kw["hi"])
    assert "\n" not in str(e.value)


def test_scale_must_exceed_one():
    with pytest.raises(LongRopeError):
        Space.paper(4, 1.0, window=64)
    assert math.isclose(Space.paper(4, 1.5, window=64).hi[0], 1.875)
