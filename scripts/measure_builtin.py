"""Measure the built-in model's figures with plain forward passes and model.generate (float32, CPU).

    PYTHONPATH=src .venv/bin/python scripts/measure_builtin.py --model src/longrope/assets/builtin \
        --out results.json

Figures (no RoPE scaling anywhere):
- validation perplexity at 256 tokens: the whole validation split joined into 256-token samples
  (build_samples, BOS first, EOS BOS between documents), each scored in one forward pass, mean NLL
  over all predicted tokens;
- passkey accuracy at the window (prompt <= 256 tokens) and at 2,048 tokens: `--trials` prompts,
  keys uniform in 1..50000, depth uniform in [0, 1], greedy decoding of 8 tokens, correct when the
  first integer in the generated text equals the key;
- on 2,048-token test documents (build_samples, select mode when enough long documents): the
  perplexity of tokens at positions 1..255 and 1024..2047 (position = index in the sample; BOS is 0)
  and their ratio.
`--checkpoint WORK` measures a training checkpoint instead (model rebuilt from WORK's tokenizer and
the size options of the run's provenance-less checkpoint: pass the same --layers/--hidden/...).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from longrope.data import build_samples, load_documents, tokenize_documents  # noqa: E402
from longrope.data.passkey import passkey_prompt  # noqa: E402
from longrope.eval.passkey import parse_answer  # noqa: E402


@torch.no_grad()
def position_nll(model, samples: list[torch.Tensor]) -> torch.Tensor:
    """NLL of every predicted token: [n_samples, length-1]; column j is the token at position j+1."""
    rows = []
    for x in samples:
        logits = model(input_ids=x[None]).logits[0, :-1].float()
        rows.append(torch.nn.functional.cross_entropy(logits, x[1:], reduction="none"))
    return torch.stack(rows)


def band_ppl(nll: torch.Tensor, lo: int, hi: int) -> float:
    """Perplexity of tokens at positions lo..hi (inclusive) of the samples."""
    return math.exp(float(nll[:, max(lo, 1) - 1:hi].mean()))


@torch.no_grad()
def passkey_accuracy(model, tok, length: int, trials: int, seed: int) -> dict:
    rng = random.Random(seed)
    correct, lengths, wrong = 0, [], []
    for t in range(trials):
        key, depth = rng.randint(1, 50000), rng.random()
        p = passkey_prompt(tok, length, depth, key)
        ids = p.input_ids[None]
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                             do_sample=False, pad_token_id=tok.pad_token_id)
        text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        ok = parse_answer(text) == key
        correct += ok
        lengths.append(ids.shape[1])
        if not ok and len(wrong) < 5:
            wrong.append({"key": key, "depth": round(depth, 3), "generated": text})
    return {"length": length, "trials": trials, "accuracy": correct / trials,
            "prompt_tokens_min": min(lengths), "prompt_tokens_max": max(lengths), "examples_wrong": wrong}


def load(args):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.checkpoint:
        from safetensors.torch import load_model
        from transformers import LlamaForCausalLM

        from longrope.pretrain import PretrainConfig, model_config

        work = Path(args.checkpoint)
        tok = AutoTokenizer.from_pretrained(work / "tokenizer", local_files_only=True)
        cfg = PretrainConfig(out="-", layers=args.layers, hidden=args.hidden, heads=args.hidden // 64,
                             intermediate=args.intermediate)
        model = LlamaForCausalLM(model_config(cfg, len(tok)))
        load_model(model, str(work / "checkpoint" / "model.safetensors"))
        return model.float().eval(), tok
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, local_files_only=True,
                                                 attn_implementation="sdpa")
    tok = AutoTokenizer.from_pretrained(args.model, local_files_only=True)
    return model.eval(), tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="src/longrope/assets/builtin")
    ap.add_argument("--checkpoint", default=None, help="a pretrain work folder (measure its checkpoint)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--intermediate", type=int, default=768)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--long", type=int, default=2048)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--val-samples", type=int, default=None, help="default: the whole validation split")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--skip-long", action="store_true", help="only the in-window figures")
    ap.add_argument("--out", default=None, help="write the figures to this JSON file too")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    model, tok = load(args)
    bos, eos = tok.bos_token_id, tok.eos_token_id
    res: dict = {"model": args.checkpoint or args.model, "dtype": "float32", "scaling": "none",
                 "command": "python " + " ".join(sys.argv)}

    val_ids = tokenize_documents(load_documents("builtin", "validation"), tok, args.cache_dir)
    val = build_samples(val_ids, args.window, args.val_samples, mode="join", bos_id=bos, sep_id=eos,
                        seed=args.seed)
    nll = position_nll(model, val.tensors)
    res["val_ppl_256"] = {"ppl": round(math.exp(float(nll.mean())), 4), "samples": len(val),
                          "mode": val.mode, "tokens": nll.numel()}
    res["passkey_window"] = passkey_accuracy(model, tok, args.window, args.trials, args.seed)
    print(json.dumps({k: res[k] for k in ("val_ppl_256", "passkey_window")}), flush=True)
    if not args.skip_long:
        test_ids = tokenize_documents(load_documents("builtin", "test"), tok, args.cache_dir)
        long = build_samples(test_ids, args.long, None, bos_id=bos, sep_id=eos, seed=args.seed)
        nll = position_nll(model, long.tensors)
        head, tail = band_ppl(nll, 1, args.window - 1), band_ppl(nll, args.long // 2, args.long - 1)
        res["long_ppl"] = {"length": args.long, "samples": len(long), "mode": long.mode,
                           f"ppl_pos_1_{args.window - 1}": round(head, 4),
                           f"ppl_pos_{args.long // 2}_{args.long - 1}": round(tail, 4),
                           "ratio": round(tail / head, 3),
                           "ppl_by_256_block": [round(band_ppl(nll, b, b + 255), 3)
                                                for b in range(0, args.long, 256)]}
        res["passkey_long"] = passkey_accuracy(model, tok, args.long, args.trials, args.seed)
    res["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(res, indent=2))
    if args.out:
        from longrope.io import write_json

        write_json(args.out, res)


if __name__ == "__main__":
    main()
