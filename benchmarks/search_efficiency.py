"""Search efficiency: the default (`fast`) preset against `--preset paper` on the same model, data
and seed. Prints both final perplexities on the searched documents and on held-out test documents,
the cost in forward-pass equivalents (the load-independent cost: forward passes, plus 3 per
forward + backward pass of a descent phase, `search.cost.descent_pass`), tokens and wall times,
their ratios, and whether the default meets the goal (ppl within 1% of the paper preset's on both,
for at most a quarter of its cost).

    python benchmarks/search_efficiency.py                        # built-in model, 8x its window
    python benchmarks/search_efficiency.py --target-length 4096   # 16x
    python benchmarks/search_efficiency.py --reference runs/paper-8x   # reuse a finished paper search
    python benchmarks/search_efficiency.py --model DIR --target-length 4096 --docs 5 --json out.json

Both searches share one loaded model and one process. The score cache is off unless `--cache DIR`
is given, so the counts are those of a cold run. `--reference DIR` (`--default-run DIR`) takes the
paper (default) preset's result from a finished `longrope search` output with the same model,
length, docs, seed and settings (its seconds and passes as recorded there) instead of running it.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from longrope.errors import LongRopeError, script_main


def _reuse(ref: Path, cfg) -> dict:
    from longrope.search.state import load_state

    doc = load_state(ref)
    if not doc.get("done"):
        raise LongRopeError(f"{ref} holds an unfinished search")
    from longrope.search.cost import doc_cost
    from longrope.search.config import PRESET_FIELDS, SearchConfig

    saved = SearchConfig.from_saved(doc["config"]).resolved()
    for k in ("model", "data", "split", "target_length", "docs", "seed", "preset", "objective", "dtype",
              "screen_pick", "step", *PRESET_FIELDS, "descent_lr", "descent_lr_end"):
        mine, theirs = getattr(saved, k), getattr(cfg, k)
        if k == "data":  # no --data is the built-in corpus
            mine, theirs = mine or "builtin", theirs or "builtin"
        if mine != theirs:
            raise LongRopeError(f"{ref}: {k} is {getattr(saved, k)!r}, this benchmark needs {getattr(cfg, k)!r}")
    hist = doc["evolution"]["history"][-1]
    cost = doc_cost(doc)
    return {"ppl": float(hist["best_score"]), "seconds": doc["seconds"], "evaluations": hist["evaluations"],
            "screened": hist["screened"], "generations": doc["evolution"]["generation"],
            "stopped_early": doc["evolution"].get("stall", 0) >= (saved.patience or 10 ** 9),
            "forward_passes": cost["forward_passes"], "descent_passes": cost["descent_passes"],
            "pass_equivalents": cost["pass_equivalents"], "n_hat": hist["best"]["n_hat"],
            "baselines": doc["baselines"], "reused": str(ref)}


def _test_ppl(model, tok, cfg, factors: Path, docs: int, split: str) -> float:
    """Perplexity of the searched factors on `docs` documents of `split` at the target length."""
    import dataclasses

    from longrope.rope.files import load_scaling
    from longrope.search.objective import Objective
    from longrope.search.setup import load_samples

    tcfg = dataclasses.replace(cfg, split=split, docs=docs)
    samples, positions, _ = load_samples(tcfg, tok, model, docs)
    sc = load_scaling(factors)
    obj = Objective(model, samples, original=sc.original_max_position, target=cfg.target_length,
                    positions=positions, chunk=cfg.chunk)
    return obj.score_many([(sc, "test")])[0]


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="builtin")
    p.add_argument("--data", default=None, help="default: the built-in corpus")
    p.add_argument("--split", default="validation")
    p.add_argument("--target-length", type=int, default=None, help="default: 8x the model's window")
    p.add_argument("--docs", type=int, default=4)
    p.add_argument("--test-split", default="test")
    p.add_argument("--test-docs", type=int, default=8, help="held-out documents (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--order", choices=("paper-first", "fast-first"), default="paper-first")
    p.add_argument("--reference", default=None, help="a finished paper-preset search output to reuse")
    p.add_argument("--default-run", default=None, help="a finished default-preset search output to reuse")
    p.add_argument("--cache", default=None, help="score cache folder (default: off, cold counts)")
    p.add_argument("--out", default=None, help="folder for both searches' outputs (default: a temp dir)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    import torch

    from longrope.models import load_model, load_tokenizer
    from longrope.patch import rope_dims
    from longrope.search.config import SearchConfig
    from longrope.search.runner import run_search

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
                           docs=args.docs, seed=args.seed, preset=preset).resolved()
        where = out / preset
        reuse = args.reference if preset == "paper" else args.default_run
        if reuse:
            where = Path(reuse)
            r = _reuse(where, cfg)
        else:
            t0 = time.perf_counter()
            s = run_search(cfg, where, progress=True, model=model, tokenizer=tok, cache=args.cache)
            r = {"ppl": s["ppl"], "seconds": time.perf_counter() - t0, "evaluations": s["evaluations"],
                 "screened": s["screened"], "generations": s["generations"], "stopped_early": s["stopped_early"],
                 "forward_passes": s["forward_passes"], "descent_passes": s["cost"]["descent_passes"],
                 "pass_equivalents": s["cost"]["pass_equivalents"], "n_hat": s["best"]["n_hat"],
                 "baselines": s["baselines"]}
        r["tokens"] = int(r["pass_equivalents"] * target)
        if args.test_docs:
            r["test_ppl"] = _test_ppl(model, tok, cfg, where / "factors.json", args.test_docs, args.test_split)
        res[preset] = r
        test = f", test ppl {r['test_ppl']:.4f}" if args.test_docs else ""
        print(f"{preset:>5}: ppl {r['ppl']:.4f}{test}  {r['seconds']:8.1f} s  {r['evaluations']} full + "
              f"{r['screened']} screening evaluations, {r['forward_passes']} forward passes"
              f"{' + %d descent passes (x3)' % r['descent_passes'] if r['descent_passes'] else ''} = "
              f"{r['pass_equivalents']:.0f} pass equivalents ({r['tokens']:,} tokens), "
              f"{r['generations']} generations{' (early stop)' if r['stopped_early'] else ''}"
              f"{' (reused ' + r['reused'] + ')' if r.get('reused') else ''}", flush=True)
    return _report(args, res, target, window, torch.get_num_threads())


def _report(args, res, target, window, threads) -> int:
    f, q = res["fast"], res["paper"]
    ratios = {"ppl_ratio": f["ppl"] / q["ppl"], "pass_ratio": f["pass_equivalents"] / q["pass_equivalents"],
              "time_ratio": f["seconds"] / q["seconds"]}
    if args.test_docs:
        ratios["test_ppl_ratio"] = f["test_ppl"] / q["test_ppl"]
    ok = (ratios["ppl_ratio"] <= 1.01 and ratios.get("test_ppl_ratio", 1.0) <= 1.01
          and ratios["pass_ratio"] <= 0.25)
    base = ", ".join(f"{k} {v:.4f}" for k, v in q["baselines"].items())
    print(f"model {args.model}, target {target} tokens ({target // window}x window {window}), "
          f"{args.docs} docs of {args.split}, {args.test_docs} test docs of {args.test_split}, seed {args.seed}, "
          f"torch threads {threads}")
    print(f"baselines (exact, searched docs): {base}")
    test = f", test ppl ratio {ratios['test_ppl_ratio']:.4f}" if args.test_docs else ""
    print(f"default/paper: ppl ratio {ratios['ppl_ratio']:.4f}{test} (goal <= 1.01), cost ratio (pass equivalents) "
          f"{ratios['pass_ratio']:.3f} (goal <= 0.25), wall-time ratio {ratios['time_ratio']:.3f} "
          f"-> {'MEETS' if ok else 'MISSES'} the goal")
    if args.json:
        Path(args.json).write_text(json.dumps({"target_length": target, "window": window, "docs": args.docs,
                                               "test_docs": args.test_docs, "seed": args.seed, "threads": threads,
                                               "results": res, **ratios, "meets_goal": ok}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    script_main(main, "search_efficiency")
