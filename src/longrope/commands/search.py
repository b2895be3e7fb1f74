"""`longrope search`: evolutionary search of LongRoPE rescale factors and start tokens."""
from __future__ import annotations

from pathlib import Path

from ..errors import LongRopeError
from ._common import add_data_args, add_model_args

_SEARCH = ("screen_pick", "population", "iterations", "parents", "mutations", "crossovers", "mutation_prob", "step",
           "screen_docs", "promote", "patience", "docs", "seed", "preset", "objective", "critical_dim",
           "target_length", "data", "split", "model", "dtype", "sample_mode", "search_attention_scale",
           "search_n_hat", "short_of")


def register(sub) -> None:
    p = sub.add_parser("search", help="search per-pair RoPE rescale factors and n_hat for a target length",
                       description="Evolutionary search (LongRoPE) of per-pair rescale factors and the "
                                   "start-token window n_hat that minimise perplexity at --target-length. "
                                   "Run under `torchrun --nproc-per-node K` to score candidates on K processes.")
    add_model_args(p)
    add_data_args(p, split="validation")
    p.set_defaults(model=None, dtype=None, split=None)
    p.add_argument("--target-length", type=int, default=None, help="context length to extend to (tokens)")
    p.add_argument("--docs", type=int, default=None, help="documents the fitness is measured on (default 5)")
    p.add_argument("--out", required=True, help="output folder: factors.json, history.jsonl, state.json, search.png")
    p.add_argument("--seed", type=int, default=None, help="random seed of the search and the samples (default 0)")
    p.add_argument("--resume", action="store_true", help="continue the search saved in --out/state.json")
    p.add_argument("--cache", default="auto", metavar="DIR",
                   help="score cache shared across runs: a candidate scored before (same weights, data, "
                        "length, dtype, objective) is not scored again (default: $LONGROPE_CACHE_DIR or "
                        "~/.cache/longrope/scores)")
    p.add_argument("--no-cache", dest="cache", action="store_const", const=None, help="no score cache")
    g = p.add_argument_group("evolution")
    g.add_argument("--preset", choices=("fast", "paper"), default=None,
                   help="fast (default): population 16, 8 parents, 8 mutants + 8 crossovers, up to 40 "
                        "generations, new candidates screened on 1 document and the best quarter scored on "
                        "all, stop after 8 flat generations; paper: 64/40/32/16/16, p=0.3, every candidate "
                        "on all documents")
    g.add_argument("--population", type=int, default=None, help="initial population size")
    g.add_argument("--iterations", type=int, default=None, help="generations after the initial one")
    g.add_argument("--parents", type=int, default=None, help="candidates kept each generation")
    g.add_argument("--mutations", type=int, default=None, help="mutants added each generation")
    g.add_argument("--crossovers", type=int, default=None, help="crossovers added each generation")
    g.add_argument("--mutation-prob", type=float, default=None, help="probability of changing each pair")
    g.add_argument("--step", type=float, default=None, help="grid step of the factors (default 0.01)")
    g.add_argument("--screen-docs", type=int, default=None,
                   help="score new candidates on this many documents first (0: off)")
    g.add_argument("--screen-pick", choices=("first", "spread"), default=None,
                   help="screen on the first documents (default) or on those whose perplexity differs most "
                        "between PI, NTK and YaRN (the most factor-sensitive; no extra forward pass)")
    g.add_argument("--promote", type=float, default=None,
                   help="at most this fraction of screened candidates is scored on all documents")
    g.add_argument("--patience", type=int, default=None,
                   help="stop after this many generations without improvement (0: never)")
    g.add_argument("--no-n-hat", dest="search_n_hat", action="store_false", default=None,
                   help="do not search the start-token window (n_hat stays 0)")
    g.add_argument("--search-attention-scale", action="store_true", default=None,
                   help="search the attention scale too (default: fixed sqrt(1 + ln s / ln L))")
    g = p.add_argument_group("LongRoPE2")
    g.add_argument("--objective", choices=("ppl", "needle"), default=None,
                   help="ppl (default): perplexity at the target length; needle: perplexity of the "
                        "answer tokens of a pass key planted at the start")
    g.add_argument("--critical-dim", default=None,
                   help="'auto' (theoretical d_tcd) or an even dimension K: pairs below K/2 get NTK "
                        "factors, the rest are searched in [s, 2s]")
    g.add_argument("--short-of", default=None, metavar="FACTORS",
                   help="search the short factors (used up to the original window) of this long-factor "
                        "file, at --target-length <= the window; writes both into factors.json")
    g.add_argument("--sample-mode", choices=("auto", "select", "join"), default=None,
                   help="select long documents, join short ones, or auto (default)")
    p.set_defaults(func=run)


def _norm(key: str, value):
    return None if key in ("screen_docs", "patience") and value == 0 else value


def run(args) -> int:
    from ..search.runner import SearchConfig, load_state, run_search

    given = {k: getattr(args, k) for k in _SEARCH if getattr(args, k, None) is not None}
    if args.resume:
        cfg = SearchConfig(**load_state(args.out)["config"])
        for k, v in given.items():
            if _norm(k, getattr(cfg, k)) != _norm(k, v):
                raise LongRopeError(f"--{k.replace('_', '-')} {v} differs from the saved search "
                                    f"({getattr(cfg, k)}); drop it or start a new --out")
        cfg.device, cfg.trust_remote_code = args.device, args.trust_remote_code
    else:
        if "target_length" not in given:
            raise LongRopeError("--target-length is required (unless --resume)")
        if (Path(args.out) / "state.json").exists():
            raise LongRopeError(f"{args.out} already holds a search; pass --resume to continue it "
                                "or choose another --out")
        cfg = SearchConfig(**given, device=args.device, trust_remote_code=args.trust_remote_code)
    summary = run_search(cfg, args.out, resume=args.resume, progress=True, cache=args.cache)
    if summary["rank"] == 0:
        from ..search.cost import describe
        base = ", ".join(f"{k} {v:.3f}" for k, v in summary["baselines"].items())
        crit = f", critical dim {summary['critical_dim']}" if summary["critical_dim"] else ""
        print(f"best ppl {summary['ppl']:.4f} at {cfg.target_length} tokens (n_hat {summary['best']['n_hat']}"
              f"{crit}); baselines: {base}")
        print(f"{summary['generations']} generations{' (early stop)' if summary['stopped_early'] else ''}, "
              f"{summary['seconds']:.1f} s; wrote {args.out}/factors.json")
        print(f"cost: {describe(summary['cost'])}")
        if summary["cache"]:
            print(f"score cache: {summary['cache_hits']} hits, {summary['forward_passes']} forward passes run "
                  f"this time ({summary['cache']})")
    return 0
