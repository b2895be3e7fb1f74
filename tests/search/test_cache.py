"""The score cache across runs: exact values back, keyed so that nothing leaks between contexts,
safe under concurrent appends and torn lines, and a search with a warm cache ends exactly as a cold
one without a forward pass."""
import json
import multiprocessing as mp
import os
import time

import numpy as np
import pytest
import torch

from longrope.search.cache import ScoreCache, open_cache, sample_hashes, scaling_key, weights_hash
from longrope.search.config import SearchConfig
from longrope.search.runner import run_search

from tests.helpers import save_tiny, write_texts


def test_values_round_trip_exactly_and_torn_lines_are_skipped(tmp_path):
    ctx = {"weights": "w", "dtype": "float32"}
    c = ScoreCache(tmp_path, ctx)
    vals = {("a", "s0"): 0.1 + 0.2, ("a", "s1"): float("inf"), ("b", "s0"): 1 / 3}
    for (k, s), v in vals.items():
        c.put(k, s, v)
    c.put("a", "s0", 99.0)  # already there: the first value stays, nothing appended
    with open(c.path, "a") as f:
        f.write('{"k": "c", "s": "s0", "nl')  # a writer killed mid-line
    again = ScoreCache(tmp_path, ctx)
    assert len(again) == 3 and again.get("c", "s0") is None
    assert all(again.get(k, s) == v for (k, s), v in vals.items())  # bit-exact, inf included
    assert again.hits == 3 and again.misses == 1
    assert ScoreCache(tmp_path, {**ctx, "dtype": "bfloat16"}).path != c.path  # another context, another file
    assert len(ScoreCache(tmp_path, {**ctx, "dtype": "bfloat16"})) == 0


def _writer(folder, ctx, worker, n):
    c = ScoreCache(folder, ctx)
    for i in range(n):
        c.put(f"k{worker}", f"s{i}", worker + i / 1000)


def test_concurrent_appends_lose_nothing(tmp_path):
    ctx = {"weights": "w"}
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"  # fork: no re-import, fast
    procs = [mp.get_context(method).Process(target=_writer, args=(tmp_path, ctx, w, 200)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        if p.is_alive():
            p.kill()
            pytest.fail("a writer hung")
    lines = ScoreCache(tmp_path, ctx).path.read_text().splitlines()
    assert len(lines) == 800 and all(json.loads(x) for x in lines)  # whole lines only
    c = ScoreCache(tmp_path, ctx)
    assert all(c.get(f"k{w}", f"s{i}") == w + i / 1000 for w in range(4) for i in range(200))


def test_keys_follow_weights_samples_and_scaling(tmp_path):
    from longrope.rope.scaling import Scaling

    folder = save_tiny(tmp_path / "m")
    from longrope.models import load_model
    model = load_model(str(folder))
    h = weights_hash(model, folder, tmp_path / "c")
    index = json.loads((tmp_path / "c" / "weights.json").read_text())
    assert len(index) == 1 and weights_hash(model, folder, tmp_path / "c") == h  # from the index now
    assert weights_hash(model, None, tmp_path / "c") != h  # no files: the state dict's bytes instead
    f = next(folder.glob("*.safetensors"))
    data = bytearray(f.read_bytes())
    data[-1] ^= 1  # one bit of the weights
    f.write_bytes(bytes(data))
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert weights_hash(model, folder, tmp_path / "c") != h
    a, b = torch.arange(10), torch.arange(10)
    assert sample_hashes([a, b])[0] == sample_hashes([b])[0] != sample_hashes([a + 1])[0]
    sc = Scaling(method="longrope", long_factor=[1.0, 2.0], n_hat=0, original_max_position=32,
                 target_length=64, factor=2.0)
    other = Scaling(method="longrope", long_factor=[1.0, 2.0], n_hat=4, original_max_position=32,
                    target_length=64, factor=2.0)
    assert scaling_key(sc) != scaling_key(other)
    sc.provenance = {"note": "not part of the key"}
    assert scaling_key(sc) == scaling_key(Scaling.from_dict({**sc.to_dict(), "provenance": {}}))


def test_warm_cache_gives_the_cold_result_without_forward_passes(tmp_path):
    model_dir, texts = save_tiny(tmp_path / "m"), write_texts(tmp_path / "t", n=3, words=200)
    cfg = SearchConfig(target_length=64, model=str(model_dir), data=str(texts), docs=2, seed=5,
                       population=6, parents=3, mutations=3, crossovers=3, iterations=2, patience=0)
    runs = {}
    for name, cache in (("off", None), ("cold", tmp_path / "c"), ("warm", tmp_path / "c")):
        runs[name] = run_search(cfg, tmp_path / name, progress=False, cache=cache)
    off, cold, warm = runs["off"], runs["cold"], runs["warm"]
    assert off["best"] == cold["best"] == warm["best"] and off["ppl"] == cold["ppl"] == warm["ppl"]
    hist = [(tmp_path / n / "history.jsonl").read_text() for n in ("off", "cold", "warm")]
    assert hist[0] == hist[1] == hist[2]
    assert cold["cache_hits"] == 0 and cold["forward_passes"] == off["forward_passes"] > 0
    assert warm["forward_passes"] == 0 and warm["cache_hits"] == off["forward_passes"]
    assert warm["cost"]["cache_hits"] == warm["cache_hits"] and off["cache"] is None
    # a longer search with the same seed re-scores nothing it shares with the shorter one
    longer = run_search(SearchConfig(**{**cfg.__dict__, "iterations": 3}), tmp_path / "longer",
                        progress=False, cache=tmp_path / "c")
    assert longer["cache_hits"] == off["forward_passes"] and longer["forward_passes"] > 0
    store = open_cache(tmp_path / "c", None, model_path=model_dir, dtype="torch.float32", device="cpu",
                       chunk=1024, objective="ppl", positions=None)
    assert len(store) == off["forward_passes"] + longer["forward_passes"]
