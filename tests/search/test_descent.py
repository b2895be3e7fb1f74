"""The descent phase: the model-free optimiser, the factor gradient on a tiny model, and the phase
inside a search (seed, cost, resume after a kill)."""
import json
import math

import numpy as np
import pytest
import torch

from longrope.errors import LongRopeError
from longrope.search.descent import descend, lr_at, project
from longrope.search.space import Space

from tests.helpers import save_tiny, torch_threads, write_texts


def bowl(target):
    """log-space quadratic bowl around `target`: value exp(|u - log target|^2), gradient of its log."""
    t = np.log(np.asarray(target, dtype=np.float64))

    def f(factors):
        u = np.log(factors)
        return math.exp(float(np.sum((u - t) ** 2))), 2 * (u - t)
    return f


def test_projection_keeps_bounds_fixed_pairs_and_order():
    sp = Space([1.0, 1.0, 2.0, 2.0], [1.0, 4.0, 4.0, 4.0])  # pair 0 fixed at 1.0
    u = project(np.log([3.0, 3.0, 1.5, 9.0]), sp)
    np.testing.assert_allclose(np.exp(u), [1.0, 3.0, 3.0, 4.0])


def test_descent_finds_the_minimum_and_keeps_the_best_point():
    sp = Space([1.0] * 4, [10.0] * 4)
    r = descend(bowl([1.5, 2.0, 6.0, 8.0]), sp, [2.0] * 4, steps=150, lr=0.1, lr_end=0.001)
    np.testing.assert_allclose(r.best, [1.5, 2.0, 6.0, 8.0], rtol=0.02)
    assert r.value == min(h["value"] for h in r.history) and len(r.history) == 150
    assert lr_at(0, 150, 0.1, 0.001) == 0.1 and lr_at(149, 150, 0.1, 0.001) == pytest.approx(0.001)
    # an unreachable (non-monotone) minimum: the answer stays in the space
    r = descend(bowl([5.0, 2.0]), Space([1.0] * 2, [10.0] * 2), [1.0, 1.0], steps=100, lr=0.1)
    assert r.best[0] <= r.best[1] + 1e-12 and r.best[0] == pytest.approx(r.best[1], rel=1e-6)
    with pytest.raises(LongRopeError, match="steps >= 1"):
        descend(bowl([2.0]), Space([1.0], [4.0]), [2.0], steps=0)


def test_held_pairs_stay_at_the_start_and_the_rest_descends():
    from longrope.search.gradient import held

    sp = Space([1.0] * 6, [10.0] * 6)
    start = [1.0, 1.3, 1.5, 2.0, 3.0, 4.0]
    same, k = held(sp, start, 0.0)
    assert same is sp and k == 0
    h, k = held(sp, start, 1 / 3)  # the first 2 of 6 pairs
    assert k == 2
    np.testing.assert_array_equal(h.lo[:2], [1.0, 1.3])
    np.testing.assert_array_equal(h.hi[:2], [1.0, 1.3])
    assert list(h.fixed) == [True, True, False, False, False, False] and np.all(h.lo[2:] == 1.3)
    r = descend(bowl([1.1, 1.1, 2.0, 3.0, 5.0, 8.0]), h, start, steps=150, lr=0.1, lr_end=0.001)
    assert list(r.best[:2]) == [1.0, 1.3]  # held exactly, although the bowl pulls pair 1 to 1.1
    np.testing.assert_allclose(r.best[2:], [2.0, 3.0, 5.0, 8.0], rtol=0.02)


def test_descent_on_a_ramp_space_moves_the_low_pairs_only_through_the_critical_factor():
    from longrope.search.gradient import held

    sp = Space.critical(None, 3, 4.0, pairs=6, window=64)
    assert held(sp, [1.0] * 6, 0.25) == (sp, 0)  # nothing to hold: the low pairs follow pair 3
    # the bowl's low pairs sit exactly on the ramp of 6.0; the chain rule must find the 6.0
    target = [6.0 ** (i / 3) for i in range(3)] + [6.0, 6.5, 7.0]
    r = descend(bowl(target), sp, [1.0, 1.5, 2.0, 4.0, 4.0, 4.0], steps=200, lr=0.05, lr_end=0.001)
    np.testing.assert_allclose(r.best, target, rtol=0.01)
    u = np.log(r.best)
    np.testing.assert_allclose(u[:3], np.arange(3) / 3 * u[3], rtol=1e-12, atol=1e-15)


def test_descent_resumed_from_any_step_ends_exactly_as_uninterrupted():
    sp = Space([1.0] * 3, [10.0] * 3)
    f = bowl([1.2, 3.0, 7.0])
    states = []
    full = descend(f, sp, [2.0] * 3, steps=12, on_step=lambda s: states.append(json.loads(json.dumps(s))))
    for k in (0, 5, 11):
        again = descend(f, sp, [2.0] * 3, steps=12, state=states[k])
        assert again.best.tolist() == full.best.tolist() and again.value == full.value
        assert again.history == full.history
    with pytest.raises(LongRopeError, match="different settings"):
        descend(f, sp, [2.0] * 3, steps=13, state=states[3])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("descent")
    return save_tiny(root / "model"), write_texts(root / "texts")


def test_factor_gradient_is_the_objectives_ppl_and_its_derivative(files, monkeypatch):
    from longrope.models import load_model, load_tokenizer
    from longrope.search.gradient import FactorGradient
    from longrope.search.objective import Objective
    from longrope.search.config import SearchConfig
    from longrope.search.setup import load_samples
    from longrope.search.space import Candidate

    model, tok = load_model(str(files[0])), load_tokenizer(str(files[0]))
    cfg = SearchConfig(model=str(files[0]), data=str(files[1]), target_length=128, docs=2).resolved()
    with torch_threads(1):
        samples, _, _ = load_samples(cfg, tok, model, 2)
        x = np.linspace(1.0, 5.0, 8)
        g = FactorGradient(model, samples, attn=1.1)
        value, grad = g(x)
        obj = Objective(model, samples, original=32, target=128)
        ref = obj.score_many([(obj.scaling(Candidate(tuple(x), 0, 1.1)), "x")])[0]
        assert value == pytest.approx(ref, rel=1e-5)  # the same number the evolution scores
        assert g.passes == 2 and not any(p.requires_grad is False for p in model.parameters())
        # central differences of log ppl in log factors, pair by pair
        for i in (1, 4, 7):
            h = 1e-2
            up, dn = np.log(x).copy(), np.log(x).copy()
            up[i] += h
            dn[i] -= h
            fd = (math.log(g(np.exp(up))[0]) - math.log(g(np.exp(dn))[0])) / (2 * h)
            assert grad[i] == pytest.approx(fd, rel=0.05, abs=1e-4)
        assert np.any(np.abs(grad) > 1e-4)  # the gradient is not identically zero
        # long samples run their layers under activation checkpointing: the same value and gradient
        import torch.utils.checkpoint as ckpt
        real, seen = ckpt.checkpoint, []
        monkeypatch.setattr(ckpt, "checkpoint", lambda *a, **k: seen.append(1) or real(*a, **k))
        v2, g2 = FactorGradient(model, samples, attn=1.1, checkpoint_from=1)(x)
        assert len(seen) == 2 * len(model.model.layers)  # every layer of both samples was checkpointed
        assert v2 == pytest.approx(value, rel=1e-6)
        torch.testing.assert_close(torch.from_numpy(g2), torch.from_numpy(grad), rtol=1e-4, atol=1e-7)
        assert "forward" not in model.model.layers[0].__dict__  # the layers are restored


@pytest.mark.parametrize("objective", ["needle", "combined"])
def test_factor_gradient_of_the_needle_objectives_is_their_score_and_its_derivative(files, objective):
    from longrope.models import load_model, load_tokenizer
    from longrope.search.gradient import FactorGradient
    from longrope.search.objective import Objective
    from longrope.search.config import SearchConfig
    from longrope.search.setup import load_samples
    from longrope.search.space import Candidate

    model, tok = load_model(str(files[0])), load_tokenizer(str(files[0]))
    cfg = SearchConfig(model=str(files[0]), data=str(files[1]), target_length=128, docs=2, objective=objective,
                       needle_weight=0.5).resolved()
    with torch_threads(1):
        samples, terms, _ = load_samples(cfg, tok, model, 2)
        assert len(terms) == (1 if objective == "needle" else 2)
        x = np.linspace(1.0, 5.0, 8)
        g = FactorGradient(model, samples, attn=1.1, terms=terms)
        value, grad = g(x)
        obj = Objective(model, samples, original=32, target=128, terms=terms)
        assert value == pytest.approx(obj.score_many([(obj.scaling(Candidate(tuple(x), 0, 1.1)), "x")])[0], rel=1e-5)
        h, i = 1e-2, int(np.argmax(np.abs(grad)))
        up, dn = np.log(x).copy(), np.log(x).copy()
        up[i] += h
        dn[i] -= h
        fd = (math.log(g(np.exp(up))[0]) - math.log(g(np.exp(dn))[0])) / (2 * h)
        assert grad[i] == pytest.approx(fd, rel=0.05, abs=1e-4) and abs(grad[i]) > 1e-4


def _cfg(files, **kw):
    from longrope.search.config import SearchConfig
    return SearchConfig(model=str(files[0]), data=str(files[1]), target_length=128, population=6, parents=3,
                        mutations=2, crossovers=2, iterations=2, docs=2, descent_steps=4, descent_lr=0.2, **kw)


def test_search_with_descent_seeds_the_evolution_and_counts_its_cost(files, tmp_path):
    from longrope.search.runner import run_search

    with torch_threads(1):
        s = run_search(_cfg(files, descent_hold=0.25), tmp_path / "o", progress=False, cache=None)
    d = s["descent"]
    assert d["steps"] == 4 and d["passes"] == 8 and len(d["history"]) == 4
    k = d["held_pairs"]
    assert k == round(0.25 * len(d["factors"])) >= 1  # the first quarter of the pairs
    seeds = json.loads((tmp_path / "o" / "state.json").read_text())["seeds"]
    start = seeds[min(s["baselines"], key=s["baselines"].get)]  # the descent starts from the best seed
    assert d["factors"][:k] == pytest.approx(start[:k], rel=1e-12) and d["factors"][k:] != pytest.approx(start[k:])
    # a state saved before the hold existed reads as a run without one (not as the resolved default)
    from longrope.search.state import load_state
    path = tmp_path / "o" / "state.json"
    doc = json.loads(path.read_text())
    del doc["config"]["descent_hold"]
    path.write_text(json.dumps(doc))
    assert load_state(tmp_path / "o")["config"]["descent_hold"] == 0.0
    assert d["ppl"] == min(h["value"] for h in d["history"])
    state = json.loads((tmp_path / "o" / "state.json").read_text())
    assert "descent" in state["evolution"]["seeds"] and state["info"]["descent"]["factors"] == d["factors"]
    assert s["cost"]["descent_passes"] == 8 and s["cost"]["pass_equivalents"] == s["cost"]["forward_passes"] + 24
    assert s["cost"]["bound"]["descent_passes"] == 8 and set(s["baselines"]) == {"pi", "ntk", "yarn"}
    assert s["ppl"] <= min(s["baselines"].values()) * 1.0001 or s["ppl"] <= d["ppl"] * 1.01


def test_a_search_killed_during_its_descent_resumes_exactly(files, tmp_path, monkeypatch):
    from longrope import cli
    from longrope.search import gradient

    def argv(out):
        return ["search", "--model", str(files[0]), "--data", str(files[1]), "--target-length", "128",
                "--population", "6", "--parents", "3", "--mutations", "2", "--crossovers", "2", "--iterations", "2",
                "--docs", "2", "--descent-steps", "4", "--descent-lr", "0.2", "--descent-hold", "0.25", "--no-cache",
                "--out", str(out)]

    with torch_threads(1):
        assert cli.main(argv(tmp_path / "ref")) == 0
        real = gradient.FactorGradient.__call__
        calls = []

        def dies_at_third(self, factors):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return real(self, factors)

        monkeypatch.setattr(gradient.FactorGradient, "__call__", dies_at_third)
        try:
            rc = cli.main(argv(tmp_path / "cut"))
        except KeyboardInterrupt:
            rc = 130
        assert rc != 0 and len(calls) == 3
        assert not (tmp_path / "cut" / "state.json").exists() and (tmp_path / "cut" / "descent.json").is_file()
        monkeypatch.setattr(gradient.FactorGradient, "__call__", real)
        assert cli.main(["search", "--out", str(tmp_path / "cut"), "--resume", "--no-cache"]) == 0
    ref = json.loads((tmp_path / "ref" / "factors.json").read_text())
    cut = json.loads((tmp_path / "cut" / "factors.json").read_text())
    assert cut["long_factor"] == ref["long_factor"] and cut["n_hat"] == ref["n_hat"]
    a = json.loads((tmp_path / "ref" / "state.json").read_text())["info"]["descent"]
    b = json.loads((tmp_path / "cut" / "state.json").read_text())["info"]["descent"]
    assert a == b


def test_descent_settings_are_checked(files, tmp_path):
    from longrope.search.config import SearchConfig

    with pytest.raises(LongRopeError, match="descent-steps must be >= 0"):
        SearchConfig(target_length=128, descent_steps=-1).resolved()
    with pytest.raises(LongRopeError, match="for long-factor searches"):
        SearchConfig(target_length=128, descent_steps=3, short_of="f.json").resolved()
    assert SearchConfig(target_length=128, short_of="f.json").resolved().descent_steps == 0
    # the needle and combined objectives are differentiable: the preset's descent applies
    assert SearchConfig(target_length=128, objective="needle").resolved().descent_steps == 40
    assert SearchConfig(target_length=128, objective="combined").resolved().descent_steps == 40
    with pytest.raises(LongRopeError, match="descent-hold in"):
        SearchConfig(target_length=128, descent_hold=1.0).resolved()
    assert SearchConfig(target_length=128).resolved().descent_hold == 0.0625
    assert SearchConfig(target_length=128, preset="paper").resolved().descent_hold == 0.0
    assert SearchConfig(target_length=128, descent_hold=0.25).resolved().descent_hold == 0.25
