"""The issue-13 ablation table from the arm runs (`longrope extend --recipe .../short-ARM.yaml --out R/ARM`)
and the extra evaluations (R/short256/*.json, R/long4096/*.json; commands in docs/finetune.md).
Usage: python docs/results/short-ablation/make_table.py R > docs/results/short-ablation/table.md"""
import json
import sys
from pathlib import Path

ARMS = [("plain", "plain fine-tuning"), ("mixed", "mixed window 0.25 (LongRoPE2)"),
        ("short", "short-factor search"), ("mixed-short", "mixed window + short factors"),
        ("distill", "distill 1.0"), ("distill-short", "distill 1.0 + short factors")]


def first(obj):
    """The single number inside a nested one-length result dict."""
    while isinstance(obj, dict):
        obj = next(iter(obj.values()))
    return obj


def ppl(path):
    doc = json.loads(Path(path).read_text())
    return first(doc.get("ppl", doc))


def main(root: Path) -> None:
    base = ppl(root / "short256" / "base.json")
    print(f"Base model at 256 tokens (64 test documents, unscaled): ppl {base:.2f}.\n")
    print("| arm | ppl 256 deployed | vs base | ppl 256 weights unscaled | vs base | ppl 4,096 (8 docs) | "
          "passkey 4,096 (50) | ppl 4,096 / passkey (compare: 2 docs, 20) | fine-tune s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arm, label in ARMS:
        run = root / arm
        if not run.is_dir():
            continue
        dep, raw = ppl(root / "short256" / f"{arm}-deployed.json"), ppl(root / "short256" / f"{arm}-unscaled.json")
        long_ppl = ppl(root / "long4096" / f"{arm}-ppl.json")
        pk = first(json.loads((root / "long4096" / f"{arm}-passkey.json").read_text())["passkey"])
        cmp = json.loads(next(run.glob("*-compare/results.json")).read_text())
        ft = json.loads((run / "01-finetune" / "model" / "finetune.json").read_text())["seconds"]
        print(f"| {label} | {dep:.2f} | {100 * (dep / base - 1):+.1f}% | {raw:.2f} | {100 * (raw / base - 1):+.1f}% | "
              f"{long_ppl:.2f} | {100 * pk:.0f}% | {cmp['ppl']['longrope']['4096']:.2f} / "
              f"{100 * cmp['passkey']['longrope']['4096']:.0f}% | {ft:.0f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
