"""Seconds of one forward pass (no cache, last logit only) of a model at each length: what a
passkey prompt or a RULER sample costs on this machine before any decoding.

    python benchmarks/forward_time.py --model smollm2 --lengths 8192,16384,32768 --threads 2 --dtype bfloat16

Token ids are drawn from a seeded generator (the cost does not depend on the text); prints one JSON
line per length.
"""
import argparse
import json
import time

import torch

from longrope.models import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--lengths", default="8192")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model(a.model, dtype=a.dtype).eval()
    vocab = model.config.vocab_size
    for n in (int(x) for x in a.lengths.split(",")):
        ids = torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(a.seed))
        start = time.perf_counter()
        with torch.inference_mode():
            model(ids, logits_to_keep=1)
        print(json.dumps({"model": a.model, "length": n, "threads": a.threads, "dtype": a.dtype,
                          "seconds": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
