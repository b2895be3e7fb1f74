"""Cost reporting: the bound search_cost gives, against a run's counted forward passes."""
import pytest

from longrope.errors import LongRopeError
from longrope.search.cost import PAPER_SHAPE, describe, flops_per_pass, search_cost
from longrope.search.config import SearchConfig
from longrope.search.runner import run_search

from tests.helpers import save_tiny, write_texts


def cfg_of(preset="fast", length=2048, docs=4, **kw):
    return SearchConfig(target_length=length, docs=docs, preset=preset, **kw)


def test_paper_preset_counts_and_gpu_hours():
    c = search_cost(cfg_of("paper", 131072, 5))
    assert c["evaluations"] == 64 + 40 * 32 == 1344 and c["screened"] == 0
    assert c["forward_passes"] == (1344 + 3) * 5 and c["tokens"] == c["forward_passes"] * 131072
    per_pass = 131072 * (2 * 6.74e9 + 2 * 32 * 4096 * 131072)
    assert c["flops"] == pytest.approx(c["forward_passes"] * per_pass)
    assert c["gpu_hours"] == pytest.approx(c["flops"] / 1e14 / 3600)
    assert c["gpu_hours_at_paper_scale"] == pytest.approx(c["gpu_hours"])  # same setting
    assert 100 < c["gpu_hours"] < 200  # ~6.7k passes of ~6e15 FLOPs at 100 TFLOP/s
    assert flops_per_pass(PAPER_SHAPE, 1) == pytest.approx(2 * 6.74e9 + 2 * 32 * 4096)


def test_fast_preset_bound_and_overrides():
    fast = search_cost(cfg_of(), {"params": 1e6, "layers": 2, "hidden": 64})
    # 16 screened + 25 * 16; full: 8 parents + 25 * ceil(0.25 * 16); 1 + 3 docs; baselines on 4 docs
    assert fast["screened"] == 416 and fast["evaluations"] == 108
    assert fast["forward_passes"] == 416 * 1 + 108 * 3 + 3 * 4
    # 40 descent steps on 4 documents, each a forward + backward pass counted as 3 forward passes
    assert fast["descent_passes"] == 160 and fast["pass_equivalents"] == fast["forward_passes"] + 480
    assert fast["tokens"] == fast["pass_equivalents"] * 2048
    assert fast["gpu_hours_at_paper_scale"] < search_cost(cfg_of("paper"))["gpu_hours_at_paper_scale"] / 3
    # the bound the preset was sized by: under a quarter of the paper preset's on 4 documents
    assert fast["pass_equivalents"] == 1232 < 0.25 * search_cost(cfg_of("paper", 4096))["pass_equivalents"]
    cfg = SearchConfig(target_length=2048, docs=4, iterations=10, screen_docs=0).resolved()
    assert search_cost(cfg)["forward_passes"] == (16 + 10 * 16 + 3) * 4  # no screening
    assert search_cost(cfg_of(descent_steps=0))["descent_passes"] == 0
    long = search_cost(cfg_of(length=8192, docs=2))
    assert long["pass_equivalents"] == long["forward_passes"] + 4 * 80
    assert search_cost(cfg_of("paper", 8, 1, iterations=0))["evaluations"] == 64
    with pytest.raises(LongRopeError, match="unknown preset"):
        search_cost(cfg_of("slow"))
    with pytest.raises(LongRopeError, match="model_shape"):
        search_cost(cfg_of(), {"params": 1})


def test_a_run_reports_what_it_counted_within_the_bound(tmp_path):
    model_dir, texts = save_tiny(tmp_path / "m"), write_texts(tmp_path / "t", n=3, words=200)
    cfg = SearchConfig(target_length=64, model=str(model_dir), data=str(texts), docs=3, seed=1,
                       population=6, parents=3, mutations=3, crossovers=3, iterations=2, patience=0,
                       screen_docs=1, promote=0.5)
    s = run_search(cfg, tmp_path / "o", progress=False, cache=None)
    cost, bound = s["cost"], s["cost"]["bound"]
    assert cost["forward_passes"] == s["forward_passes"] and cost["descent_passes"] == 40 * 3
    assert cost["tokens"] == 64 * (s["forward_passes"] + 3 * 120)  # the fast preset's descent: 3 passes each
    assert cost["evaluations"] == s["evaluations"] and cost["screened"] == s["screened"]
    assert s["forward_passes"] <= bound["forward_passes"] and s["evaluations"] <= bound["evaluations"]
    assert f"{s['forward_passes']:,} forward passes" in describe(cost)
    assert (tmp_path / "o" / "search.png").stat().st_size > 0
