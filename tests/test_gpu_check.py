"""`make gpu-check`'s script at tiny sizes on the CPU (GPU_CHECK_SMOKE=1), so it cannot rot."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_smoke_runs_every_step(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "GPU_CHECK_SMOKE": "1", "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1",
           "LONGROPE_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--out", str(out)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["smoke"] and set(doc["steps"]) == {"tests", "builtin", "smollm2", "throughput"}
    assert all(s["ok"] for s in doc["steps"].values())
    builtin = doc["steps"]["builtin"]
    assert builtin["search"] > 1 and "same_tokens" in builtin["generation"]
    rows = doc["steps"]["throughput"]["rows"]
    assert {(r["kind"], r["length"]) for r in rows} == {("eval", 64), ("eval", 128), ("train", 64)}
    assert all(r["longrope_tok_s"] > 0 and r["plain_tok_s"] > 0 for r in rows)
