"""`make demo`'s last step: this run's figures next to the range the README states.

    python scripts/demo_check.py demo-out [--expected docs/results/builtin-8x-spread/expected.json]

The expected ranges are the per-run minimum and maximum over the seeds and thread counts of
`scripts/demo_spread.py`. A figure outside its range is marked; the exit status is 0 either way
(a different machine may land outside: the mark says so plainly).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rows(results: dict, expected: dict):
    for kind, fmt in (("ppl", "{:.3f}"), ("passkey", "{:.0%}")):
        for m, by_n in expected.get(kind, {}).items():
            for n, (lo, hi) in by_n.items():
                v = results.get(kind, {}).get(m, {}).get(n)
                if v is None:
                    continue
                inside = lo - 1e-9 <= v <= hi + 1e-9
                yield (f"{kind} {m} @ {n}", fmt.format(v), f"{fmt.format(lo)} - {fmt.format(hi)}", inside)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="the demo's output folder")
    ap.add_argument("--expected", default=str(ROOT / "docs/results/builtin-8x-spread/expected.json"))
    a = ap.parse_args()
    found = sorted(Path(a.out).glob("*-compare/results.json"))
    if not found or not Path(a.expected).is_file():
        print(f"demo_check: nothing to compare ({a.out} has no compare results or {a.expected} is missing)")
        return 0
    results = json.loads(found[-1].read_text(encoding="utf-8"))
    expected = json.loads(Path(a.expected).read_text(encoding="utf-8"))
    table = list(rows(results, expected))
    print(f"\nThis run against the README's range ({len(expected.get('runs', []))} runs: "
          f"{', '.join(expected.get('runs', []))}):")
    print(f"{'figure':32} {'this run':>9}  {'expected range':>19}")
    for name, v, rng, inside in table:
        print(f"{name:32} {v:>9}  {rng:>19}  {'' if inside else 'OUTSIDE the range'}")
    out = sum(not r[3] for r in table)
    print(f"{len(table) - out} of {len(table)} figures inside their range" + (
        "; the ones marked landed outside on this machine" if out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
