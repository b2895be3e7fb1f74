"""Forward time of a patched model (longrope with n_hat > 0 and short/long factors) over the
unpatched one, at 8,192 tokens, measured in one run. Target: ratio <= 1.05.

    python benchmarks/rotary_overhead.py [--model builtin|PATH] [--tokens 8192] [--repeats 5]

Baseline: the same model, unpatched (stock transformers rotary module), same input.
Timings alternate patched/unpatched so machine noise hits both; the median of each is used.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import longrope
from longrope.patch import rope_dims
from longrope.rope.scaling import Scaling


def build_model(name: str):
    from longrope.models import BUILTIN_DIR, load_model
    if name == "builtin" and not (BUILTIN_DIR / "config.json").is_file():
        from transformers import LlamaConfig, LlamaForCausalLM  # same shape when the asset is absent
        cfg = LlamaConfig(hidden_size=256, num_attention_heads=4, head_dim=64, num_key_value_heads=4,
                          num_hidden_layers=4, intermediate_size=768, vocab_size=4096,
                          max_position_embeddings=256)
        print("built-in model absent: using a random model of its shape")
        return LlamaForCausalLM(cfg).eval()
    return load_model(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = build_model(args.model)
    dim, _, original = rope_dims(model)
    pairs = dim // 2
    s = args.tokens / original
    scaling = Scaling("longrope", long_factor=[1 + (s - 1) * i / (pairs - 1) for i in range(pairs)],
                      short_factor=[1.0 + 0.01 * i for i in range(pairs)], factor=s, n_hat=4)
    ids = torch.randint(0, model.config.vocab_size, (1, args.tokens))

    def run() -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            model.model(ids)  # the decoder: where the rotary tables are built and used
        return time.perf_counter() - t

    run()  # warm-up
    plain, patched = [], []
    for _ in range(args.repeats):
        longrope.remove(model)
        plain.append(run())
        longrope.apply(model, scaling)
        patched.append(run())
    p, q = statistics.median(plain), statistics.median(patched)
    print(f"model={args.model} tokens={args.tokens} repeats={args.repeats}")
    print(f"unpatched forward  median {p:.3f} s")
    print(f"patched forward    median {q:.3f} s  (longrope, n_hat=4, short/long factors)")
    print(f"ratio patched/unpatched = {q / p:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
