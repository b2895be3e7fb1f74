"""Generation time across the original window: re-rotating the KV cache vs re-prefilling it vs
generating without switching (long factors from the start, no boundary event), in one run.

    python benchmarks/generate_boundary.py [--out benchmarks/results/generate_boundary.json]

Two settings:
- builtin: the built-in model (window 256) with the builtin-8x short/long factors; a 250-token
  prompt generates 50 tokens (crossing 256 at the 7th);
- large: a randomly initialised Llama (window 8,192, 2 layers, hidden 256, head_dim 64) with
  searched-looking short/long factors; an 8,180-token prompt generates 24 tokens;
- large32k: the same Llama with a window of 32,768; a 32,760-token prompt generates 16 tokens
  (crossing 32,768 at the 9th). Random weights: the timings depend on the shapes, not the values.

Timings alternate the three modes (`--repeats` rounds) so machine noise hits all; medians of wall
time and of process CPU time (with `--threads 1`, the compute itself, whatever else the machine
runs) are reported with ratios to no-switching. Greedy agreement and the largest logit difference of each
mode against re-prefill (exact: equals full recomputation) say what re-rotation costs in accuracy.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import longrope
from longrope.io import write_json
from longrope.rope.scaling import Scaling
from longrope.rope.files import load_scaling

ROOT = Path(__file__).resolve().parents[1]
MODES = ("no-switching", "reprefill", "rerotate")


def builtin_setting():
    from longrope.models import load_model
    scaling = load_scaling(ROOT / "docs/results/builtin-8x-before-filter/factors-short-long.json")
    scaling.n_hat, scaling.short_attention = 0, None  # the exportable form: the modes differ only at the boundary
    return load_model("builtin", dtype="float32"), scaling, 250, 50


def large_setting(window: int = 8192, prompt: int = 8180, new: int = 24):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=256, num_attention_heads=4, head_dim=64, num_key_value_heads=4,
                      num_hidden_layers=2, intermediate_size=768, vocab_size=4096, max_position_embeddings=window,
                      attn_implementation="sdpa")  # SDPA's causal kernel: no [heads, n, n] scores at 32k
    model = LlamaForCausalLM(cfg).eval()
    pairs = torch.arange(32, dtype=torch.float32) / 31
    long = (1 + 7 * pairs ** 2).tolist()
    short = (1 + 0.2 * pairs ** 2).tolist()
    return model, Scaling("longrope", long_factor=long, short_factor=short, factor=8.0), prompt, new


def run_mode(model, scaling, mode, ids, new):
    if mode == "no-switching":
        longrope.apply(model, Scaling("longrope", long_factor=scaling.long_factor, factor=scaling.factor))
    else:
        longrope.apply(model, scaling, boundary=mode)
    start, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                             output_logits=True, return_dict_in_generate=True)
    took = time.perf_counter() - start, time.process_time() - cpu
    longrope.remove(model)
    return took, out.sequences, torch.stack(out.logits)


def measure(name, model, scaling, prompt, new, repeats):
    ids = torch.randint(3, model.config.vocab_size, (1, prompt), generator=torch.Generator().manual_seed(0))
    times, cpu = {m: [] for m in MODES}, {m: [] for m in MODES}
    seqs, logits = {}, {}
    for _ in range(repeats):
        for mode in MODES:
            (took, used), seqs[mode], logits[mode] = run_mode(model, scaling, mode, ids, new)
            times[mode].append(took)
            cpu[mode].append(used)
    med = {m: statistics.median(t) for m, t in times.items()}
    med_cpu = {m: statistics.median(t) for m, t in cpu.items()}
    ref = "reprefill"
    return {
        "setting": name, "prompt_tokens": prompt, "new_tokens": new, "window": scaling.original_max_position
        or model.config.max_position_embeddings, "repeats": repeats, "threads": torch.get_num_threads(),
        "median_s": med, "all_s": times,
        "ratio_to_no_switching": {m: med[m] / med["no-switching"] for m in MODES},
        "median_cpu_s": med_cpu, "all_cpu_s": cpu,  # process CPU time: robust to a loaded machine
        "cpu_ratio_to_no_switching": {m: med_cpu[m] / med_cpu["no-switching"] for m in MODES},
        "rerotate_over_reprefill": med["rerotate"] / med["reprefill"],
        "greedy_equal_to_reprefill": {m: bool(torch.equal(seqs[m], seqs[ref])) for m in MODES},
        "max_logit_delta_vs_reprefill": {m: float((logits[m] - logits[ref]).abs().max()) for m in MODES},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", default="builtin,large")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/generate_boundary.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    builders = {"builtin": builtin_setting, "large": large_setting,
                "large32k": lambda: large_setting(window=32768, prompt=32760, new=16)}
    results = []
    for name in args.settings.split(","):
        model, scaling, prompt, new = builders[name]()
        r = measure(name, model, scaling, prompt, new, args.repeats)
        results.append(r)
        print(f"{name}: prompt {prompt} + {new} new, window {r['window']}: " + ", ".join(
            f"{m} {r['median_s'][m]:.3f} s (x{r['ratio_to_no_switching'][m]:.2f})" for m in MODES)
            + "; CPU " + ", ".join(f"{m} {r['median_cpu_s'][m]:.2f} s (x{r['cpu_ratio_to_no_switching'][m]:.2f})"
                                   for m in MODES)
            + f"; rerotate/reprefill x{r['rerotate_over_reprefill']:.2f}; greedy = reprefill: "
            f"{r['greedy_equal_to_reprefill']}")
    command = "python benchmarks/generate_boundary.py " + " ".join(sys.argv[1:])
    write_json(args.out, {"command": command.strip(), "results": results})


if __name__ == "__main__":
    main()
