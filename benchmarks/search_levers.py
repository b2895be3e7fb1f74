"""Search levers on the built-in model at 8x: how well cheap scores rank candidates.

Takes 16 candidates spread over the score range of a finished (or partial) search's history.jsonl
(default: benchmarks/results/search_levers_candidates.jsonl, the 16 measured there), scored on all
its documents in float32, and scores each on the first sample alone (the `fast`
preset's screen) in float32 and in bfloat16, and on the first sample's first half; prints the
Spearman rank correlation of each with the full score, bf16 against fp32, and the wall times.

    python benchmarks/search_levers.py --history runs/paper-8x/history.jsonl --first 352 --json levers.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from longrope.models import load_model, load_tokenizer
from longrope.search.objective import Objective
from longrope.search.config import SearchConfig
from longrope.search.setup import load_samples
from longrope.search.space import Candidate


def spearman(a, b) -> float:
    """Spearman's rho (average ranks for ties)."""
    def ranks(x):
        x = np.asarray(x, dtype=np.float64)
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):  # ties share their mean rank
            r[x == v] = r[x == v].mean()
        return r
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--history", default=str(Path(__file__).parent / "results" / "search_levers_candidates.jsonl"),
                   help="history.jsonl of a search at --target-length (default: the 16 candidates measured "
                        "in results/search_levers_builtin.txt)")
    p.add_argument("--target-length", type=int, default=2048)
    p.add_argument("--candidates", type=int, default=16)
    p.add_argument("--first", type=int, default=None, help="only the history's first N full evaluations")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    ev = [json.loads(x) for x in Path(a.history).read_text().splitlines()]
    ev = [e for e in ev if e.get("fidelity", "full") == "full"][:a.first]
    ev = sorted((e for e in ev if np.isfinite(float(e["ppl"]))), key=lambda e: float(e["ppl"]))
    pick = [ev[int(i)] for i in np.linspace(0, len(ev) - 1, a.candidates)]
    full = [float(e["ppl"]) for e in pick]
    cands = [Candidate(tuple(e["factors"]), e["n_hat"], e["attn"]) for e in pick]
    model, tok = load_model("builtin"), load_tokenizer("builtin")
    cfg = SearchConfig(target_length=a.target_length, docs=1).resolved()
    sample = load_samples(cfg, tok, model, 1)[0][0]
    out = {"full": full}
    rungs = (("doc0_fp32", torch.float32, None), ("doc0_bf16", torch.bfloat16, None),
             ("doc0_first_half", torch.float32, a.target_length // 2))
    for name, dtype, n in rungs:
        obj = Objective(model.to(dtype), [sample[:n]], original=model.config.max_position_embeddings,
                        target=a.target_length)
        t0 = time.time()
        sc = obj.fitness()(cands)
        out[name] = {"scores": sc, "spearman_vs_full": spearman(full, sc), "seconds": time.time() - t0}
        print(f"{name}: Spearman vs full {out[name]['spearman_vs_full']:.3f}, {out[name]['seconds']:.1f} s", flush=True)
    model.to(torch.float32)
    f32, b16 = out["doc0_fp32"]["scores"], out["doc0_bf16"]["scores"]
    out["bf16_vs_fp32"] = {"spearman": spearman(f32, b16),
                           "max_rel_diff": max(abs(x / y - 1) for x, y in zip(b16, f32))}
    print(f"bf16 vs fp32 (doc 0): Spearman {out['bf16_vs_fp32']['spearman']:.4f}, "
          f"max relative difference {out['bf16_vs_fp32']['max_rel_diff']:.4%}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
