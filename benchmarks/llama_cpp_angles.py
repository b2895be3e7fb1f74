"""Why llama.cpp misses check-runtime's 1e-4 on SmolLM2 at 6k-16k tokens: float32 RoPE angles.

transformers computes a pair's angle as inv_freq_i * p (float32); llama.cpp's CPU rope starts from
theta = p and multiplies by theta_scale = base^(-2/d) once per pair (float32). Both are ~1e-3 rad
from the exact angle at p = 16k, differently. This runs an export in llama.cpp and in transformers
twice, stock and with ggml's angle recurrence patched into the rotary module, and prints the largest
logit difference per 512 positions: if only the angles differ, the patched column stays flat.

    LLAMA_CPP_CONVERTER=sdist/llama_cpp_python-0.3.36.tar.gz PYTHONPATH=src \
        python benchmarks/llama_cpp_angles.py EXPORTED_FOLDER TOKENS [GGUF]

Llama-architecture exports without per-pair factors only (plain RoPE, e.g. `--scaling none`).
"""
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from longrope.runtimes import parity
from longrope.runtimes.check import _gguf_from, windows


def ggml_rotary(model):
    """A rotary forward computing ggml's float32 angles: theta = p, then theta *= theta_scale per pair."""
    cfg = model.config
    dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    scale = float(np.float32(cfg.rope_parameters["rope_theta"]) ** np.float32(-2.0 / dim))

    def forward(x, position_ids):
        theta, cols = position_ids[0].float(), []
        for _ in range(dim // 2):
            cols.append(theta)
            theta = theta * scale  # a float32 multiply, as in ggml
        ang = torch.stack(cols, -1)
        emb = torch.cat([ang, ang], -1)[None]
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    return forward


def main() -> None:
    exported, n = Path(sys.argv[1]), int(sys.argv[2])
    tmp = tempfile.TemporaryDirectory(prefix="longrope-angles-")
    gguf = Path(sys.argv[3]) if len(sys.argv) > 3 else _gguf_from(exported, windows(exported)[0],
                                                                   Path(tmp.name) / "m.gguf", None, None)
    ids = parity.token_ids(exported, n)
    model = parity.load_transformers(exported)
    stock = parity.Reference(model, ids)
    model.model.rotary_emb.forward = ggml_rotary(model)
    patched = parity.Reference(model, ids)
    _, chunks = parity.llama_cpp_chunks(gguf, ids, n, threads=1)
    print("| positions | max abs delta vs transformers | vs transformers with ggml's angles |\n|---|---|---|")
    for start, logits in chunks:
        stop = start + len(logits)
        a = np.abs(logits.astype(np.float64) - stock.logits(start, stop)).max()
        b = np.abs(logits.astype(np.float64) - patched.logits(start, stop)).max()
        print(f"| {start}-{stop - 1} | {a:.3g} | {b:.3g} |", flush=True)


if __name__ == "__main__":
    main()
