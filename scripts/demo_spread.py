"""The demo's figures with their spread: `builtin-8x` over search seeds and torch thread counts.

    python scripts/demo_spread.py --seeds 0,1,2 --threads 1,2 --runs runs/spread \
        --out docs/results/builtin-8x-spread

Each (seed, threads) pair is one `longrope extend --recipe builtin-8x` run with the recipe's seed
replaced (the search, the samples and the passkeys all follow it), OMP_NUM_THREADS set and a score
cache of its own (no run reuses another's scores); a run folder that exists is resumed (finished
runs are skipped). The summary gives, per method and length,
the median and range of perplexity over the runs, and passkey accuracy pooled over the runs with its
95% Wilson interval next to the range of the per-run accuracies. `expected.json` holds the ranges
`make demo` compares a new run against (`scripts/demo_check.py`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of k successes in n trials."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def run_one(recipe: str, seed: int, threads: int, folder: Path) -> Path:
    """One extend run of `recipe` with its seed replaced; returns its compare results.json."""
    doc = yaml.safe_load((ROOT / "src/longrope/recipes" / f"{recipe}.yaml").read_text(encoding="utf-8"))
    doc["seed"] = seed
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.parent / f"{folder.name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    results = next(folder.glob("*-compare/results.json"), None) if folder.is_dir() else None
    if results is None:
        # a cache of its own: a score cached by a run at another thread count would hide exactly the
        # float differences this spread measures (the cache keys a candidate, not how it was computed)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "LONGROPE_CACHE_DIR": str(folder.parent / f"{folder.name}.cache")}
        cmd = [sys.executable, "-m", "longrope", "extend", "--recipe", str(path), "--out", str(folder)]
        if folder.exists():
            cmd.append("--resume")
        print(" ".join(cmd), f"(OMP_NUM_THREADS={threads})", flush=True)
        subprocess.run(cmd, env=env, check=True)
        results = next(folder.glob("*-compare/results.json"))
    return results


def summarize(runs: dict[str, dict]) -> dict:
    """{metric: {method: {length: {...}}}} over the runs' results.json documents."""
    first = next(iter(runs.values()))
    out: dict = {"runs": sorted(runs), "ppl": {}, "passkey": {}, "search": {}}
    for m in first["ppl"]:
        out["ppl"][m] = {}
        for n in first["ppl"][m]:
            vals = [r["ppl"][m][n] for r in runs.values() if n in r["ppl"].get(m, {})]
            out["ppl"][m][n] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": len(vals)}
    for m, by_n in (first.get("passkey") or {}).items():
        out["passkey"][m] = {}
        for n in by_n:
            per = [r["passkey"][m][n] for r in runs.values() if n in r["passkey"].get(m, {})]
            trials = [r["meta"]["passkey_trials"] * len(r["meta"]["depths"]) for r in runs.values()]
            k = sum(round(a * t) for a, t in zip(per, trials))
            total = sum(trials[:len(per)])
            lo, hi = wilson(k, total)
            out["passkey"][m][n] = {"pooled": k / total, "found": k, "prompts": total, "ci95": [lo, hi],
                                    "run_min": min(per), "run_max": max(per), "prompts_per_run": trials[0]}
    for name, r in runs.items():
        out["search"][name] = r.get("search_best")
    return out


def markdown(s: dict) -> str:
    lines = [f"Runs: {', '.join(s['runs'])} (seed and OMP_NUM_THREADS).", "",
             "| perplexity: median [min, max] | " + " | ".join(next(iter(s["ppl"].values()))) + " |",
             "|---|" + "---|" * len(next(iter(s["ppl"].values())))]
    for m, by_n in s["ppl"].items():
        lines.append(f"| {m} | " + " | ".join(f"{v['median']:.3f} [{v['min']:.3f}, {v['max']:.3f}]"
                                               for v in by_n.values()) + " |")
    if s["passkey"]:
        first = next(iter(s["passkey"].values()))
        per_run = next(iter(first.values()))["prompts_per_run"]
        lines += ["", f"| passkey: pooled over the runs (95% interval; per-run range, {per_run} prompts a run) | "
                  + " | ".join(first) + " |", "|---|" + "---|" * len(first)]
        for m, by_n in s["passkey"].items():
            lines.append(f"| {m} | " + " | ".join(
                f"{v['pooled']:.0%} ({v['ci95'][0]:.0%}-{v['ci95'][1]:.0%}; {v['run_min']:.0%}-{v['run_max']:.0%})"
                for v in by_n.values()) + " |")
    return "\n".join(lines) + "\n"


def expected(s: dict) -> dict:
    """The ranges a new demo run is checked against: per-run min/max of every figure."""
    out = {"ppl": {m: {n: [v["min"], v["max"]] for n, v in by_n.items()} for m, by_n in s["ppl"].items()},
           "passkey": {m: {n: [v["run_min"], v["run_max"]] for n, v in by_n.items()}
                       for m, by_n in s["passkey"].items()},
           "runs": s["runs"]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="builtin-8x")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", default="runs/spread", help="folder of the run folders")
    ap.add_argument("--out", default="docs/results/builtin-8x-spread")
    ap.add_argument("--pairs", default=None, help="SEED:THREADS,... instead of every seed at every thread "
                    "count, e.g. 0:1,0:2,1:1,2:1")
    a = ap.parse_args()
    pairs = ([tuple(int(v) for v in p.split(":")) for p in a.pairs.split(",")] if a.pairs else
             [(int(s), int(t)) for s in a.seeds.split(",") for t in a.threads.split(",")])
    runs = {}
    for seed, threads in pairs:
        name = f"seed{seed}-threads{threads}"
        folder = Path(a.runs) / name
        doc = json.loads(run_one(a.recipe, seed, threads, folder).read_text(encoding="utf-8"))
        state = next(folder.glob("*-search/state.json"), None)
        if state is not None:
            doc["search_best"] = json.loads(state.read_text())["evolution"]["history"][-1]["best_score"]
        runs[name] = doc
    s = summarize(runs)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spread.json").write_text(json.dumps(s, indent=1) + "\n", encoding="utf-8")
    (out / "spread.md").write_text(markdown(s), encoding="utf-8")
    (out / "expected.json").write_text(json.dumps(expected(s), indent=1) + "\n", encoding="utf-8")
    print(markdown(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
