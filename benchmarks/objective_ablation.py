"""Ablation of the search objective (issue 26): the default search run with each objective --
`ppl` (LongRoPE), `needle` (LongRoPE2's answer-token loss) and `combined` (text + weight x answer)
-- for several search seeds, then every searched factor file and the baselines scored on held-out
documents: perplexity (`compare`, test split), passkey (`--passkey-trials` prompts per depth and
length, 5 depths, with the 95% Wilson interval) and RULER tasks through lm-evaluation-harness.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/objective_ablation.py --target-length 2048 \\
        --seeds 0,1,2 --out benchmarks/results/objective_ablation_builtin_8x

Resumable: a finished search (OUT/search/<objective>-s<seed>/factors.json) is reused, an unfinished
one continues; `--reuse OBJECTIVE:SEED=DIR` takes a finished `longrope search` output made with the
same settings instead of running it. Writes OUT/ablation.json and OUT/ablation.md (per objective:
median and range over seeds, passkey pooled over seeds with its Wilson interval) and OUT/compare.json
(the full `compare` result). The recommendation: the objective with the best pooled passkey at the
target length whose median held-out perplexity is within 1% of the `ppl` objective's, adopted only
where its interval lies above the `ppl` objective's.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from longrope.errors import LongRopeError, script_main

BASELINES = ("pi", "ntk", "dynamic", "yarn")


def _search(cfg, out: Path, model, tok, reuse: Path | None) -> dict:
    """Run (or continue, or reuse) one search; returns its summary from state.json."""
    from longrope.io import prepare_output
    from longrope.search.runner import run_search
    from longrope.search.state import load_state

    if reuse is not None and not (out / "factors.json").is_file():
        saved = load_state(reuse)["config"]
        mine = {k: v for k, v in vars(cfg.resolved()).items() if k not in ("device", "trust_remote_code")}
        # (a search from before the LongRoPE2 options reads critical_low "ntk": moot without a critical dim)
        moot = {"critical_low"} if mine["critical_dim"] is None else set()
        diff = [k for k in mine if k not in moot and saved.get(k) != mine[k]
                and not (k == "data" and not saved.get(k) and not mine[k])]
        if diff or not (reuse / "factors.json").is_file():
            raise LongRopeError(f"--reuse {reuse}: not a finished search with these settings ({', '.join(diff)})")
        shutil.copytree(reuse, out, dirs_exist_ok=False)
    if not (out / "factors.json").is_file():
        again = (out / "state.json").is_file() or (out / "descent.json").is_file()
        t0 = time.process_time()
        with prepare_output(out, kind="search", resume=again, adopt="state.json"):
            run_search(cfg, out, resume=again, progress=False, model=model, tokenizer=tok, cache=None)
        print(f"  {out.name}: {time.process_time() - t0:.0f} CPU s", file=sys.stderr, flush=True)
    state = load_state(out)
    hist = state["evolution"]["history"][-1]
    return {"score": float(hist["best_score"]), "generations": state["evolution"]["generation"],
            "seconds": state["seconds"], "factors": str(out / "factors.json")}


def _tasks(model, tok, methods: dict, args) -> dict:
    """{label: {task: {length: accuracy}}} for each method patched in turn."""
    from longrope import patch
    from longrope.eval.compare import original_window, resolve_methods
    from longrope.eval.tasks import run_tasks_at_lengths

    out = {}
    scalings = resolve_methods(list(methods.values()), args.target_length / original_window(model))
    for label, spec in methods.items():
        patch.remove(model)
        patch.apply(model, scalings[spec])
        try:
            res = run_tasks_at_lengths(model, tok, args.tasks, args.task_lengths, limit=args.task_limit,
                                       seed=0, log=lambda m: None)
        finally:
            patch.remove(model)
        out[label] = {t: {str(n): v for n, v in row.items()} for t, row in res.items()}
        print(f"  tasks {label}: {out[label]}", file=sys.stderr, flush=True)
    return out


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def summarize(runs: dict, result, tasks: dict, args) -> dict:
    """Per objective: held-out ppl and passkey over seeds; per baseline its single values."""
    from longrope.eval.passkey import wilson

    target = args.target_length
    rows = {}
    groups = {obj: [f"{obj}-s{s}" for s in args.seeds] for obj in args.objectives}
    groups.update({b: [b] for b in BASELINES})
    for name, labels in groups.items():
        r = {"ppl": _spread([result.methods[lb].ppl[target] for lb in labels]), "passkey": {}}
        if name in args.objectives:
            r["search_score"] = _spread([runs[lb]["score"] for lb in labels])
        for n in args.passkey_lengths:
            acc = [result.methods[lb].passkey[n] for lb in labels]
            k = round(sum(acc) * args.passkey_trials * 5)
            total = args.passkey_trials * 5 * len(labels)
            r["passkey"][str(n)] = {**_spread(acc), "pooled": k / total, "correct": k, "trials": total,
                                    "interval": list(wilson(k, total))}
        if labels[0] in tasks:
            r["tasks"] = {t: {str(n): statistics.mean(tasks[lb][t][str(n)] for lb in labels)
                              for n in args.task_lengths} for t in args.tasks}
        rows[name] = r
    ref = rows["ppl"]["ppl"]["median"] if "ppl" in rows else None
    for r in rows.values():
        r["ppl_vs_ppl_objective"] = None if ref is None else r["ppl"]["median"] / ref - 1
    return {"rows": rows, "recommendation": recommend(rows, args)}


def recommend(rows: dict, args) -> dict:
    """The objective that wins retrieval (pooled passkey at the target length, interval above the
    ppl objective's) without losing more than 1% median held-out perplexity; else ppl."""
    n = str(args.target_length)
    base = rows.get("ppl")
    if base is None:
        return {"objective": None, "why": "the ppl objective was not run"}
    best, why = "ppl", "no objective beat the ppl objective's passkey interval within 1% perplexity"
    for obj in args.objectives:
        r = rows[obj]
        if obj == "ppl" or r["ppl_vs_ppl_objective"] > 0.01:
            continue
        if r["passkey"][n]["interval"][0] > base["passkey"][n]["interval"][1] and \
                r["passkey"][n]["pooled"] > rows[best]["passkey"][n]["pooled"]:
            best, why = obj, (f"passkey at {n} {r['passkey'][n]['pooled']:.0%} vs {base['passkey'][n]['pooled']:.0%} "
                              f"(intervals apart), median ppl {r['ppl_vs_ppl_objective']:+.2%}")
    return {"objective": best, "why": why}


def markdown(summary: dict, args, command: str) -> str:
    rows = summary["rows"]
    lengths = [str(n) for n in args.passkey_lengths]
    head = ["objective / method", f"held-out ppl @ {args.target_length} (median, range)", "vs ppl objective",
            *[f"passkey @ {n} pooled (95% CI); per seed" for n in lengths]]
    if any("tasks" in r for r in rows.values()):
        head += [f"{t} @ {n}" for t in args.tasks for n in args.task_lengths]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        p = r["ppl"]
        cells = [name, f"{p['median']:.3f} ({p['min']:.3f}-{p['max']:.3f})",
                 "-" if r["ppl_vs_ppl_objective"] is None else f"{r['ppl_vs_ppl_objective']:+.2%}"]
        for n in lengths:
            k = r["passkey"][n]
            cells.append(f"{k['pooled']:.0%} ({k['interval'][0]:.0%}-{k['interval'][1]:.0%}); "
                         + " / ".join(f"{v:.0%}" for v in k["values"]))
        if len(head) > len(cells):
            cells += [f"{r['tasks'][t][str(n)]:.0%}" if "tasks" in r else "-" for t in args.tasks
                      for n in args.task_lengths]
        lines.append("| " + " | ".join(cells) + " |")
    rec = summary["recommendation"]
    seeds = ", ".join(map(str, args.seeds))
    return "\n".join([
        f"# Search objective ablation: {args.model}, target {args.target_length}, search seeds {seeds}", "",
        f"Searches: default preset, {args.docs} validation documents, objectives {', '.join(args.objectives)} "
        f"(combined weight {args.needle_weight:g}). Held-out: {args.test_docs} test documents; passkey "
        f"{args.passkey_trials * 5} prompts per length and method (5 depths), pooled over seeds for the "
        f"objectives; RULER: {args.task_limit} samples per task and length.", "",
        *lines, "", f"Recommendation: **{rec['objective']}** ({rec['why']}).", "", "```", command, "```", ""])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--data", default=None)
    ap.add_argument("--target-length", type=int, default=2048)
    ap.add_argument("--docs", type=int, default=4, help="validation documents of each search")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--objectives", default="ppl,needle,combined")
    ap.add_argument("--needle-weight", type=float, default=1.0)
    ap.add_argument("--test-docs", type=int, default=8)
    ap.add_argument("--passkey-lengths", default="1024,2048")
    ap.add_argument("--passkey-trials", type=int, default=20, help="prompts per depth (5 depths)")
    ap.add_argument("--tasks", default="niah_single_1,niah_multikey_2", help="'' to skip RULER")
    ap.add_argument("--task-lengths", default=None, help="default: the target length")
    ap.add_argument("--task-limit", type=int, default=10)
    ap.add_argument("--reuse", action="append", default=[], metavar="OBJECTIVE:SEED=DIR")
    ap.add_argument("--searches-only", action="store_true", help="run (or continue) the searches, then stop")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.objectives = [o for o in args.objectives.split(",") if o]
    args.passkey_lengths = [int(n) for n in args.passkey_lengths.split(",")]
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.task_lengths = [int(n) for n in (args.task_lengths or str(args.target_length)).split(",")]
    reuse = dict(r.split("=", 1) for r in args.reuse)

    from longrope.eval.compare import CompareConfig, compare
    from longrope.models import load_model, load_tokenizer
    from longrope.search.runner import SearchConfig

    out = Path(args.out)
    (out / "search").mkdir(parents=True, exist_ok=True)
    model, tok = load_model(args.model), load_tokenizer(args.model)
    base = SearchConfig(target_length=args.target_length, model=args.model, data=args.data, docs=args.docs,
                        needle_weight=args.needle_weight)
    runs = {}
    for seed in args.seeds:
        for obj in args.objectives:
            label = f"{obj}-s{seed}"
            ref = reuse.get(f"{obj}:{seed}")
            runs[label] = _search(replace(base, seed=seed, objective=obj), out / "search" / label, model, tok,
                                  Path(ref) if ref else None)
            print(f"{label}: search score {runs[label]['score']:.4f}", file=sys.stderr, flush=True)
    if args.searches_only:
        return 0
    methods = {**{b: b for b in BASELINES}, **{lb: f"longrope:{r['factors']}" for lb, r in runs.items()}}
    cfg = CompareConfig(methods=list(methods.values()), lengths=sorted({*args.passkey_lengths, args.target_length}),
                        docs=args.test_docs, passkey_trials=args.passkey_trials, data=args.data, split="test",
                        plots=False)  # bare baselines take the factor longest length / window: the target's
    t0 = time.process_time()
    result = compare(model, tok, cfg, progress=False, log=lambda m: print(m, file=sys.stderr, flush=True))
    result.methods = {lb: result.methods[spec] for lb, spec in methods.items()}
    (out / "compare.json").write_text(json.dumps(result.to_json(), indent=1) + "\n")
    print(f"compare: {time.process_time() - t0:.0f} CPU s", file=sys.stderr, flush=True)
    tasks = {}
    if args.tasks:
        t0 = time.process_time()
        names = [f"{o}-s{s}" for o in args.objectives for s in args.seeds]
        tasks = _tasks(model, tok, {lb: methods[lb] for lb in ("yarn", *names)}, args)
        print(f"tasks: {time.process_time() - t0:.0f} CPU s", file=sys.stderr, flush=True)
    summary = summarize(runs, result, tasks, args)
    summary.update(runs=runs, tasks=tasks, settings={k: v for k, v in vars(args).items() if k != "reuse"})
    (out / "ablation.json").write_text(json.dumps(summary, indent=1) + "\n")
    command = "PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/objective_ablation.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    (out / "ablation.md").write_text(markdown(summary, args, command))
    print((out / "ablation.md").read_text())
    return 0


if __name__ == "__main__":
    script_main(main, "objective_ablation")
