"""Peak memory and throughput of `longrope.eval.perplexity` against the plain transformers forward.

    PYTHONPATH=src .venv/bin/python benchmarks/eval_memory.py [--lengths 8192,16384,32768] [--scale 65536]

Compared on the same model and the same random tokens:
- plain: `model(input_ids, labels=input_ids)` under `torch.no_grad()` (the usual way to get a loss);
- eval:  `perplexity(model, [input_ids])` (truncate mode, one forward pass, loss in 1024-token chunks).

Method. Every measurement runs in a fresh subprocess: it builds or loads the model, makes the input,
runs the same call on 64 tokens (so lazy imports and one-time initialisation are not counted), then
resets the kernel's peak-RSS counter (`echo 5 > /proc/self/clear_refs`, Linux) and records
RSS before; after the call it reads the peak (`VmHWM` in /proc/self/status). "Increase" = peak - RSS
before, i.e. everything the evaluation allocated beyond the loaded model and its input. Throughput
= scored tokens / wall seconds of the fastest of `--reps` identical calls (shared machine). Model FLOPs of a forward = 2 x (linear-layer
parameters incl. the LM head) x T + 2 x T^2 x (heads x head_dim) x layers (causal attention, QK and
AV); the machine's float32 matmul rate is measured in the same run (2048^3 matmuls).

Models: the built-in model (`src/longrope/assets/builtin`) when present, otherwise a random model of
the same shape as described in `BUILTIN_FALLBACK` (said in the output); and "llm32k", a random
Llama-shaped model of real-LLM proportions (vocab 32,000 as Llama 2, head_dim 128, MLP 2.6875 x
hidden) small enough for two CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# the built-in model's intended shape (window 256, 32 rotary pairs) for when it is not installed yet
BUILTIN_FALLBACK = dict(hidden_size=256, num_attention_heads=4, num_key_value_heads=4, head_dim=64,
                        num_hidden_layers=4, intermediate_size=768, vocab_size=4096,
                        max_position_embeddings=256)
LLM32K = dict(hidden_size=1024, num_attention_heads=8, num_key_value_heads=8, head_dim=128,
              num_hidden_layers=4, intermediate_size=2752, vocab_size=32000,
              max_position_embeddings=4096)


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _build(kind: str):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    if kind == "builtin":
        from longrope.models import BUILTIN_DIR, load_model
        if (BUILTIN_DIR / "config.json").is_file():
            return load_model("builtin"), "built-in model"
        cfg, what = BUILTIN_FALLBACK, "random model of the built-in's intended shape (built-in absent)"
    else:
        cfg, what = LLM32K, "random Llama-proportioned model, vocab 32000"
    torch.manual_seed(0)
    config = LlamaConfig(**cfg, tie_word_embeddings=False, rope_theta=10000.0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    return model.eval(), what


def _flops(model, T: int) -> float:
    import torch

    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    c = model.config
    attn = 2 * T * T * c.num_attention_heads * getattr(c, "head_dim", c.hidden_size // c.num_attention_heads)
    return 2 * linear * T + attn * c.num_hidden_layers


def _call(model, ids, method: str) -> tuple[float, float]:
    import torch

    from longrope.eval.perplexity import perplexity

    t0 = time.perf_counter()
    if method == "plain":
        with torch.no_grad():
            loss = float(model(ids[None], labels=ids[None]).loss)
    else:
        loss = perplexity(model, [ids]).nll
    return loss, time.perf_counter() - t0


def worker(kind: str, length: int, method: str, reps: int) -> dict:
    """method plain|eval: one call, peak-memory increase and time; method time: `reps` rounds of
    plain and eval alternated in one process (a shared machine's load then hits both alike)."""
    import torch

    model, what = _build(kind)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (length,), generator=g)
    ids[0] = 1
    info = {"kind": kind, "model": what, "length": length, "method": method,
            "flops": _flops(model, length), "params": sum(p.numel() for p in model.parameters())}
    if method == "time":
        times = {"plain": [], "eval": []}
        for i in range(reps):  # alternate which goes first
            for m in (("plain", "eval") if i % 2 == 0 else ("eval", "plain")):
                times[m].append(_call(model, ids, m)[1])
        return {**info, "times": times, "matmul_flops": max(matmul_rate() for _ in range(3))}
    _call(model, ids[:64], method)  # warm-up: lazy imports and one-time initialisation excluded
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status("VmRSS")
    loss, seconds = _call(model, ids, method)
    peak = _status("VmHWM")
    return {**info, "loss": loss, "increase_gb": (peak - before) / 1e9, "seconds": seconds}


def matmul_rate(n: int = 2048, reps: int = 10) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def measure(kind: str, length: int, method: str, reps: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, str(length), method, str(reps)]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {"kind": kind, "length": length, "method": method,
                "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="8192,16384,32768")
    ap.add_argument("--scale", type=int, default=65536, help="long eval-only run on the built-in (0: skip)")
    ap.add_argument("--models", default="builtin,llm32k")
    ap.add_argument("--out", default=None, help="also write all measurements to this JSON file")
    ap.add_argument("--reps", type=int, default=1, help="alternated plain/eval timing rounds (default 1)")
    ap.add_argument("--worker", nargs=4, metavar=("KIND", "LENGTH", "METHOD", "REPS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker[0], int(a.worker[1]), a.worker[2], int(a.worker[3]))))
        return 0
    lengths = [int(x) for x in a.lengths.split(",")]
    rate = matmul_rate()
    print(f"machine float32 matmul (2048^3): {rate / 1e9:.1f} GFLOP/s", flush=True)
    rows = []
    for kind in a.models.split(","):
        for T in lengths:
            pair = {m: measure(kind, T, m, a.reps if m == "time" else 1) for m in ("plain", "eval", "time")}
            rows += pair.values()
            p, e, tm = pair["plain"], pair["eval"], pair["time"]
            if "error" in p or "error" in e or "error" in tm:
                print(f"{kind} {T}: error plain={p.get('error')} eval={e.get('error')} "
                      f"time={tm.get('error')}", flush=True)
                continue
            for r, m in ((p, "plain"), (e, "eval")):  # fastest of all calls of that method
                r["seconds"] = min([r["seconds"]] + tm["times"][m])
                r["tok_per_s"] = (T - 1) / r["seconds"]
                r["matmul_flops"] = tm["matmul_flops"]
            print(f"{kind:8s} T={T:6d} [{e['model']}] increase eval {e['increase_gb']:.3f} GB vs plain "
                  f"{p['increase_gb']:.3f} GB (ratio {e['increase_gb'] / p['increase_gb']:.3f}); "
                  f"tok/s eval {e['tok_per_s']:.0f} vs plain {p['tok_per_s']:.0f} "
                  f"(ratio {e['tok_per_s'] / p['tok_per_s']:.2f}); |dloss| {abs(e['loss'] - p['loss']):.1e}",
                  flush=True)
            if T == min(lengths):
                fps = e["flops"] / e["seconds"]
                mm = e["matmul_flops"]
                print(f"{'':8s} T={T}: eval reaches {fps / 1e9:.1f} GFLOP/s of model FLOPs; float32 matmul "
                      f"in the same process {mm / 1e9:.1f} GFLOP/s; ratio {fps / mm:.2f}", flush=True)
    if a.scale and "builtin" in a.models:
        big = measure("builtin", a.scale, "eval", 1)
        rows.append(big)
        ref = next((r for r in rows if r.get("kind") == "builtin" and r.get("length") == 16384
                    and r.get("method") == "eval" and "error" not in r), None)
        if "error" in big:
            print(f"builtin T={a.scale}: error {big['error']}")
        else:
            msg = f"builtin  T={a.scale}: eval completed in {big['seconds']:.0f} s, increase {big['increase_gb']:.3f} GB"
            if ref:
                msg += f"; increase({a.scale})/increase(16384) = {big['increase_gb'] / ref['increase_gb']:.2f} (target <= 4.5)"
            print(msg, flush=True)
    if a.out:
        from longrope.io import write_json
        write_json(a.out, {"matmul_flops": rate, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
