"""`longrope search`: evolutionary search of LongRoPE rescale factors and start tokens."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import LongRopeError
from ._common import add_data_args, add_model_args

_SEARCH = ("screen_pick", "population", "iterations", "parents", "mutations", "crossovers", "mutation_prob", "step",
           "screen_docs", "promote", "patience", "docs", "seed", "preset", "objective", "critical_dim",
           "target_length", "data", "split", "model", "dtype", "sample_mode", "search_attention_scale",
           "search_n_hat", "short_of", "seed_from", "descent_steps", "descent_hold", "descent_lr", "descent_lr_end",
           "needle_weight", "critical_low", "critical_seeds")


HELP = {  # the defaults come from SearchConfig (and its preset); only the words live here
    "target_length": "context length to extend to (tokens, e.g. 32k)",
    "docs": "documents the fitness is measured on",
    "seed": "random seed of the search and the samples",
    "preset": "fast: 40 gradient-descent steps from the best seed (the first 1/16 of the pairs held), then "
              "population 16, 8 parents, 8 mutants + 8 crossovers, up to 25 generations, new candidates "
              "screened on 1 document and the best quarter scored on all, stop after 8 flat generations; "
              "paper: 64/40/32/16/16, p=0.3, every candidate on all documents, no descent",
    "population": "initial population size (default: the preset's)",
    "iterations": "generations after the initial one (default: the preset's)",
    "parents": "candidates kept each generation (default: the preset's)",
    "mutations": "mutants added each generation (default: the preset's)",
    "crossovers": "crossovers added each generation (default: the preset's)",
    "mutation_prob": "probability of changing each pair (default: the preset's)",
    "step": "grid step of the factors",
    "screen_docs": "score new candidates on this many documents first (0: off; default: the preset's)",
    "promote": "at most this fraction of screened candidates is scored on all documents (default: the preset's)",
    "patience": "stop after this many generations without improvement (0: never; default: the preset's)",
    "search_n_hat": "do not search the start-token window (n_hat stays 0)",
    "search_attention_scale": "search the attention scale too (default: fixed sqrt(1 + ln s / ln L))",
    "objective": "ppl: perplexity at the target length; needle (LongRoPE2): perplexity of the answer tokens "
                 "of a pass key planted in each document (depths spread over the documents) and asked for at "
                 "the end; combined: the text's NLL plus --needle-weight times the answer's",
    "needle_weight": "combined objective: weight of the needle answer's NLL next to the text's",
    "critical_dim": "LongRoPE2: 'auto' (theoretical d_tcd), an even dimension K, 'sweep' (d_tcd and d_tcd-4, "
                    "d_tcd-8, d_tcd+4: one search each into OUT/critical-K/, the best one's factors in OUT/), "
                    "or a list K1,K2,...; pairs from K/2 up are searched in [s, 2s]",
    "critical_low": "pairs below the critical pair: ramp (LongRoPE2's code: lambda_cd ** (i / cd), following "
                    "the searched critical factor) or ntk (fixed to the NTK factors)",
    "critical_seeds": "methods (PI, NTK, YaRN) or wide (also LongRoPE2's NTK ramps with critical factor 2.0, "
                      "2.2, ..., 3.4 x s; the space's top is raised to hold them)",
    "short_of": "search the short factors (used up to the original window) of this long-factor file, at "
                "--target-length <= the window; writes both into factors.json",
    "sample_mode": "select long documents, join short ones, or auto",
    "descent_steps": "gradient steps on the factors before the evolution: Adam on log factors from the best seed, "
                     "each step one forward + backward pass per document (0: none; default: the preset's)",
    "descent_hold": "share of the highest-frequency pairs the descent leaves at the start point, for the "
                    "evolution to move (default: the preset's; fast: 0.0625, 2 of 32 pairs)",
    "descent_lr": "the descent's learning rate on log factors, cosine-decayed to --descent-lr-end",
    "descent_lr_end": "the descent's final learning rate",
    "seed_from": "a factor file of an earlier stage (e.g. the 2x search before a 4x one): its long factors, "
                 "carried to this scale (each pair keeps its blend of interpolated and original frequency, "
                 "so yarn:2 becomes yarn:4), join the PI/NTK/YaRN seeds",
}
CHOICES = {"preset": ("fast", "paper"), "screen_pick": ("first", "spread"), "objective": ("ppl", "needle", "combined"),
           "sample_mode": ("auto", "select", "join"), "critical_low": ("ramp", "ntk"),
           "critical_seeds": ("methods", "wide")}
MAIN = ("target_length", "docs", "seed")
EVOLUTION = ("preset", "population", "iterations", "parents", "mutations", "crossovers", "mutation_prob", "step",
             "screen_docs", "screen_pick", "promote", "patience", "search_n_hat", "search_attention_scale",
             "seed_from", "descent_steps", "descent_hold", "descent_lr", "descent_lr_end")
LONGROPE2 = ("objective", "needle_weight", "critical_dim", "critical_low", "critical_seeds", "short_of", "sample_mode")


def register(sub) -> None:
    from ..schema import add_config_args
    from ..search.config import SearchConfig

    p = sub.add_parser("search", help="search per-pair RoPE rescale factors and n_hat for a target length",
                       description="Evolutionary search (LongRoPE) of per-pair rescale factors and the "
                                   "start-token window n_hat that minimise perplexity at --target-length. "
                                   "Run under `torchrun --nproc-per-node K` to score candidates on K processes.")
    add_model_args(p)
    add_data_args(p, split=SearchConfig.split)
    p.set_defaults(model=None, dtype=None, split=None)
    kw = {"suppress": True, "helps": HELP, "choices": CHOICES}
    add_config_args(p, SearchConfig, MAIN, **kw)
    p.add_argument("--out", required=True, help="output folder: factors.json, history.jsonl, state.json, search.png")
    p.add_argument("--resume", action="store_true", help="continue the search saved in --out/state.json")
    p.add_argument("--cache", default="auto", metavar="DIR",
                   help="score cache shared across runs: a candidate scored before (same weights, data, "
                        "length, dtype, objective) is not scored again (default: $LONGROPE_CACHE_DIR or "
                        "~/.cache/longrope/scores)")
    p.add_argument("--no-cache", dest="cache", action="store_const", const=None, help="no score cache")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a search longrope wrote in --out before (a folder it did not write is never touched)")
    add_config_args(p.add_argument_group("evolution"), SearchConfig, EVOLUTION,
                    rename={"search_n_hat": "--no-n-hat"}, **kw)
    add_config_args(p.add_argument_group("LongRoPE2"), SearchConfig, LONGROPE2,
                    rename={"short_of": "--short-of"}, **kw)
    p.set_defaults(func=run)


def _norm(key: str, value):
    return None if key in ("screen_docs", "patience") and value == 0 else value


def run(args) -> int:
    from ..io import prepare_output
    from ..search.config import SearchConfig
    from ..search.plot import have_matplotlib
    from ..search.longrope2 import is_sweep
    from ..search.runner import run_search
    from ..search.state import FILES, SWEEP_FILE, saved_config
    from ..search.sweep import run_sweep

    from ..schema import from_args
    given = {k: v for k, v in from_args(args, SearchConfig, _SEARCH).items() if v is not None}
    if args.resume:
        cfg = saved_config(args.out)
        for k, v in given.items():
            if _norm(k, getattr(cfg, k)) != _norm(k, v):
                raise LongRopeError(f"--{k.replace('_', '-')} {v} differs from the saved search "
                                    f"({getattr(cfg, k)}); drop it or start a new --out")
        cfg.device, cfg.trust_remote_code = args.device, args.trust_remote_code
    else:
        if "target_length" not in given:
            raise LongRopeError("--target-length is required (unless --resume)")
        if any((Path(args.out) / f).exists() for f in ("state.json", SWEEP_FILE)) and not args.overwrite:
            raise LongRopeError(f"{args.out} already holds a search; pass --resume to continue it, "
                                "--overwrite to replace it, or choose another --out")
        cfg = SearchConfig(**given, device=args.device, trust_remote_code=args.trust_remote_code)
        cfg.resolved()  # values checked before the output folder is made
    with prepare_output(args.out, kind="search", overwrite=args.overwrite, resume=args.resume,
                        clear=FILES + (SWEEP_FILE,),
                        adopt="state.json"):
        if not have_matplotlib():
            print("longrope search: note: matplotlib is not installed, so search.png will not be drawn "
                  "(pip install 'longrope[plot]'); the results are written as usual", file=sys.stderr)
        if is_sweep(cfg.critical_dim):
            summary = run_sweep(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=True,
                                cache=args.cache)
        else:
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
        if summary.get("sweep"):
            print("critical-dimension sweep: " + ", ".join(f"{r['critical_dim']}: {r['ppl']:.4f}"
                                                           for r in summary["sweep"])
                  + f"; best {summary['sweep_best']}, its factors in {args.out}/factors.json")
        if summary["cache"]:
            print(f"score cache: {summary['cache_hits']} hits, {summary['forward_passes']} forward passes run "
                  f"this time ({summary['cache']})")
    return 0
