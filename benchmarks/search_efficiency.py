"""Search efficiency: the default (`fast`) preset against `--preset paper` on the same model, data
and seed, in one run. Prints both final perplexities, wall times and their ratios, and whether the
default meets the goal (final ppl within 1% of the paper preset's, in at most a quarter of its time).

    python benchmarks/search_efficiency.py                        # built-in model, 8x its window
    python benchmarks/search_efficiency.py --model DIR --target-length 4096 --docs 5 --json out.json

Both searches share one loaded model and one process; the paper preset runs first by default
(`--order fast-first` to swap). The outputs of each search go to OUT/fast and OUT/paper.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from longrope.errors import LongRopeError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="builtin")
    p.add_argument("--data", default=None, help="default: the built-in corpus")
    p.add_argument("--split", default="validation")
    p.add_argument("--target-length", type=int, default=None, help="default: 8x the model's window")
    p.add_argument("--docs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--order", choices=("paper-first", "fast-first"), default="paper-first")
    p.add_argument("--out", default=None, help="folder for both searches' outputs (default: a temp dir)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    import torch

    from longrope.models import load_model, load_tokenizer
    from longrope.patch import rope_dims
    from longrope.search.runner import SearchConfig, run_search

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_model(args.model), load_tokenizer(args.model)
    window = rope_dims(model)[2]
    target = args.target_length or 8 * window
    out = Path(args.out or tempfile.mkdtemp(prefix="search-efficiency-"))
    order = ("paper", "fast") if args.order == "paper-first" else ("fast", "paper")
    res = {}
    for preset in order:
        cfg = SearchConfig(model=args.model, data=args.data, split=args.split, target_length=target,
                           docs=args.docs, seed=args.seed, preset=preset)
        t0 = time.perf_counter()
        s = run_search(cfg, out / preset, progress=True, model=model, tokenizer=tok)
        res[preset] = {"ppl": s["ppl"], "seconds": time.perf_counter() - t0,
                       "evaluations": s["evaluations"], "screened": s["screened"],
                       "generations": s["generations"], "stopped_early": s["stopped_early"],
                       "forward_passes": s["forward_passes"], "n_hat": s["best"]["n_hat"],
                       "baselines": s["baselines"]}
        print(f"{preset:>5}: ppl {s['ppl']:.4f}  {res[preset]['seconds']:8.1f} s  "
              f"{s['evaluations']} full + {s['screened']} screening evaluations, "
              f"{s['forward_passes']} forward passes, "
              f"{s['generations']} generations{' (early stop)' if s['stopped_early'] else ''}", flush=True)
    f, q = res["fast"], res["paper"]
    ppl_ratio, time_ratio = f["ppl"] / q["ppl"], f["seconds"] / q["seconds"]
    pass_ratio = f["forward_passes"] / q["forward_passes"]  # independent of the machine's load
    ok = ppl_ratio <= 1.01 and time_ratio <= 0.25
    base = ", ".join(f"{k} {v:.4f}" for k, v in q["baselines"].items())
    print(f"model {args.model}, target {target} tokens ({target // window}x window {window}), "
          f"{args.docs} docs of {args.split}, seed {args.seed}, torch threads {torch.get_num_threads()}")
    print(f"baselines (exact, all docs): {base}")
    print(f"default/paper: ppl ratio {ppl_ratio:.4f} (goal <= 1.01), wall-time ratio {time_ratio:.3f} "
          f"(goal <= 0.25), speed-up {1 / time_ratio:.1f}x, forward-pass ratio {pass_ratio:.3f} "
          f"-> {'MEETS' if ok else 'MISSES'} the goal")
    if args.json:
        Path(args.json).write_text(json.dumps({"target_length": target, "window": window, "docs": args.docs,
                                               "seed": args.seed, "results": res, "ppl_ratio": ppl_ratio,
                                               "time_ratio": time_ratio, "pass_ratio": pass_ratio,
                                               "meets_goal": ok}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LongRopeError as e:
        print(f"search_efficiency: error: {e}", file=sys.stderr)
        sys.exit(2)
