"""Cost of SmolLM2-135M forward passes on this CPU, and whether bfloat16 ranks RoPE scalings like
float32. Appends one JSON line per measurement to OUT (default docs/results/smollm2/cost.jsonl), so a
partial run keeps what it measured.

    nice -n 10 python scripts/smollm2_cost.py [--out FILE] [--steps cost,rank]
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from longrope import patch
from longrope.data import load_tokenized
from longrope.eval.compare import make_samples
from longrope.eval.perplexity import perplexity
from longrope.models import load_model, load_tokenizer

RANK = ["none", "pi:2", "ntk:2", "dynamic:2", "yarn:2", "yarn:4"]


def record(out: str, row: dict) -> None:
    row["threads"] = torch.get_num_threads()
    row["loadavg_1min"] = os.getloadavg()[0]
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def timed_ppl(model, sample, scaling):
    patch.remove(model)
    if scaling != "none":
        patch.apply(model, scaling)
    c0, w0 = time.process_time(), time.perf_counter()
    r = perplexity(model, [sample])
    return r.ppl, time.process_time() - c0, time.perf_counter() - w0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/results/smollm2/cost.jsonl")
    ap.add_argument("--steps", default="cost,rank")
    ap.add_argument("--rank-length", type=int, default=16384)
    ap.add_argument("--split", default="validation")
    args = ap.parse_args()
    tok = load_tokenizer("smollm2")
    ids = load_tokenized(tok, "pydocs", args.split).ids
    sample = make_samples(ids, tok, 16384, 1, seed=0).tensors[0]
    models = {}
    for dtype in ("float32", "bfloat16"):
        c0, w0 = time.process_time(), time.perf_counter()
        models[dtype] = load_model("smollm2", dtype=dtype)
        record(args.out, {"step": "load", "dtype": dtype, "cpu_s": time.process_time() - c0,
                          "wall_s": time.perf_counter() - w0})
    if "cost" in args.steps:  # the 16k passes of `none` double as the first rows of the ranking
        for n in (8192, 16384):
            for dtype in ("float32", "bfloat16"):
                ppl, cpu, wall = timed_ppl(models[dtype], sample[:n], "none")
                record(args.out, {"step": "forward", "length": n, "dtype": dtype, "scaling": "none",
                                  "ppl": ppl, "cpu_s": cpu, "wall_s": wall})
    if "rank" in args.steps:
        n = args.rank_length
        for scaling in RANK[1:] if ("cost" in args.steps and n == 16384) else RANK:
            for dtype in ("bfloat16", "float32"):
                ppl, cpu, wall = timed_ppl(models[dtype], sample[:n], scaling)
                record(args.out, {"step": "rank", "length": n, "dtype": dtype, "scaling": scaling,
                                  "ppl": ppl, "cpu_s": cpu, "wall_s": wall})


if __name__ == "__main__":
    main()
