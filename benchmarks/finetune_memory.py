"""Peak memory of `longrope finetune` on CPU, full fine-tuning vs LoRA, against longrope.memory's estimate.

    PYTHONPATH=src .venv/bin/python benchmarks/finetune_memory.py [--model builtin] [--lengths 2048,8192]
        [--lora-rank 8] [--steps 2] [--out benchmarks/results/finetune_memory.json]

Method (as benchmarks/eval_memory.py). Every run is a fresh subprocess: it imports everything and
runs a 1-step fine-tune at 64 tokens (lazy imports, thread pools and the tokenization cache are
then not counted), resets the kernel's peak-RSS counter (`echo 5 > /proc/self/clear_refs`, Linux)
and reads RSS; then it runs `finetune` (`--steps` steps of one 1-sample batch, `yarn:2`, the
built-in data, gradient checkpointing and a 1024-position loss chunk, float32) and reads the peak
(`VmHWM`). "Measured" = peak - RSS before: loading the model, its gradients and optimizer state, the
activations, writing the output. "Estimated" = `memory.finetune_memory` for one GPU at that
length: what `extend --dry-run` states per GPU. Trainable parameters are the run's own count
(finetune.json's `lora` entry; the model's parameters for full fine-tuning).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_memory import _status  # noqa: E402 - the same /proc/self/status reader


def estimate(model: str, length: int, lora_rank: int, bf16: bool = False):
    """memory.finetune_memory for one GPU (or process) at `length`, micro-batch 1."""
    from longrope import memory
    from longrope.models import load_config
    return memory.finetune_memory(memory.Dims.of(load_config(model)), length, gpus=1, bf16=bf16,
                                  lora_rank=lora_rank)


def worker(model: str, length: int, lora_rank: int, steps: int) -> dict:
    import torch

    from longrope.train.finetune import FinetuneConfig, finetune

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        def run(n: int, k: int, name: str) -> dict:
            cfg = FinetuneConfig(out=f"{tmp}/{name}", work=f"{tmp}/{name}.work", model=model, scaling="yarn:2",
                                 length=n, steps=k, batch_size=1, micro_batch=1, warmup=0, lr=1e-4,
                                 checkpoint_every=0, lora_rank=lora_rank, cache_dir=f"{tmp}/cache")
            return finetune(cfg, progress=False, log=lambda msg: None)

        run(64, 1, "warm")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status("VmRSS")
        summary = run(length, steps, "run")
        peak = _status("VmHWM")
    from longrope.models import load_model
    total = sum(p.numel() for p in load_model(model).parameters())
    trainable = summary["lora"]["trainable"] if lora_rank else total
    est = estimate(model, length, lora_rank)
    return {"model": model, "length": length, "lora_rank": lora_rank, "steps": steps,
            "trainable": trainable, "total": total, "measured_bytes": peak - before,
            "estimated_bytes": est.total, "estimate": est.parts, "seconds": summary["seconds"],
            "final_loss": summary["final_loss"], "torch": torch.__version__}


def measure(model: str, length: int, lora_rank: int, steps: int, timeout: float | None = None) -> dict:
    """One worker in a fresh process (its own session, killed with its group on timeout)."""
    cmd = [sys.executable, __file__, "--worker", model, str(length), str(lora_rank), str(steps)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        import signal
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise RuntimeError((err.strip().splitlines() or ["?"])[-1])
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--model", default="builtin")
    p.add_argument("--lengths", default="2048,8192")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "finetune_memory.json"))
    a = p.parse_args()
    if a.worker:
        m, n, r, k = a.worker
        print(json.dumps(worker(m, int(n), int(r), int(k))))
        return
    rows = []
    for n in (int(x) for x in a.lengths.split(",")):
        for rank in (0, a.lora_rank):
            row = measure(a.model, n, rank, a.steps)
            rows.append(row)
            print(f"{a.model} {n:>6} {'LoRA r' + str(rank) if rank else 'full':>8}: trainable {row['trainable']:>11,} "
                  f"of {row['total']:,}; measured {row['measured_bytes'] / 2**20:8.1f} MiB, estimated "
                  f"{row['estimated_bytes'] / 2**20:8.1f} MiB ({row['seconds']:.0f} s)", flush=True)
    path = Path(a.out)
    doc = json.loads(path.read_text()) if path.is_file() else {"rows": []}
    keep = [r for r in doc["rows"] if r["model"] != a.model or r["length"] not in {x["length"] for x in rows}]
    path.write_text(json.dumps({"command": "benchmarks/finetune_memory.py", "rows": keep + rows}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
