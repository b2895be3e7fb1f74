"""`longrope pretrain`: train the built-in short-context model (BPE tokenizer + Llama) from scratch."""
from __future__ import annotations

import math
import shlex
import sys

from ..errors import LongRopeError


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="pre-train a small Llama model and BPE tokenizer from scratch",
                       description="Train a byte-level BPE tokenizer and a LlamaForCausalLM from scratch on the "
                                   "training split, with a share of synthetic passkey samples. Writes a model "
                                   "folder that stock AutoModelForCausalLM/AutoTokenizer load.")
    p.add_argument("--out", required=True, help="output model folder (written atomically)")
    p.add_argument("--work", default=None, help="folder for log.jsonl, checkpoint and tokenizer (default OUT.work)")
    p.add_argument("--data", default=None, help="'builtin' (stdlib corpus, default) or a data path (see `longrope data`)")
    p.add_argument("--init", default=None, help="start from this model folder (its tokenizer, config and weights; "
                                                "size options are then ignored) instead of from scratch")
    p.add_argument("--cache-dir", default=None, help="tokenization cache folder (default $LONGROPE_CACHE_DIR, else ~/.cache/longrope)")
    g = p.add_argument_group("model size")
    g.add_argument("--layers", type=int, default=4, help="decoder layers (default 4)")
    g.add_argument("--hidden", type=int, default=256, help="hidden size = heads x 64 (default 256)")
    g.add_argument("--heads", type=int, default=4, help="attention heads of size 64 (default 4)")
    g.add_argument("--intermediate", type=int, default=768, help="MLP size (default 768)")
    g.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary incl. 3 special tokens (default 4096)")
    g.add_argument("--window", type=int, default=256, help="training window = max_position_embeddings (default 256)")
    g.add_argument("--rope-theta", type=float, default=10000.0, help="RoPE base (default 10000)")
    t = p.add_argument_group("training")
    t.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    t.add_argument("--batch-size", type=int, default=16, help="samples per step (default 16)")
    t.add_argument("--lr", type=float, default=2e-3, help="peak learning rate, cosine decay to 10%% (default 2e-3)")
    t.add_argument("--warmup", type=int, default=100, help="warm-up steps (default 100)")
    t.add_argument("--passkey-share", type=float, default=0.1, help="share of synthetic passkey samples (default 0.1)")
    t.add_argument("--passkey-weight", type=float, default=1.0,
                   help="loss weight of passkey answer tokens relative to other tokens (default 1)")
    t.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    t.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    t.add_argument("--autocast", default="none", choices=("none", "bfloat16"),
                   help="bfloat16 = mixed precision with fp32 weights (fast on CPUs with bf16 units)")
    t.add_argument("--save-dtype", default="float32", help="dtype of the saved weights: float32, float16, bfloat16")
    t.add_argument("--eval-every", type=int, default=200, help="validation loss every N steps (0 = only at the end)")
    t.add_argument("--checkpoint-every", type=int, default=200, help="checkpoint every N steps (0 = never)")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint in the work folder")
    t.add_argument("--overwrite", action="store_true",
                   help="replace a model longrope wrote in --out before (never a folder it did not write)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io import prepare_output
    from ..pretrain import PretrainConfig, model_config, pretrain

    for name in ("steps", "batch_size", "layers", "hidden", "heads", "intermediate", "window", "threads"):
        if getattr(args, name) < 1:
            raise LongRopeError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0.0 <= args.passkey_share <= 1.0:
        raise LongRopeError(f"--passkey-share must be between 0 and 1, got {args.passkey_share}")
    for name in ("eval_every", "checkpoint_every", "warmup"):
        if getattr(args, name) < 0:
            raise LongRopeError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    for name in ("lr", "rope_theta", "passkey_weight"):
        if not (getattr(args, name) > 0 and math.isfinite(getattr(args, name))):
            raise LongRopeError(f"--{name.replace('_', '-')} must be a positive number, got {getattr(args, name)}")
    if args.vocab_size < 300:
        raise LongRopeError(f"--vocab-size must be at least 300 (256 bytes + specials), got {args.vocab_size}")
    cfg = PretrainConfig(
        out=args.out, work=args.work, data=args.data, window=args.window, rope_theta=args.rope_theta,
        layers=args.layers, hidden=args.hidden, heads=args.heads, intermediate=args.intermediate,
        vocab_size=args.vocab_size, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        warmup=min(args.warmup, args.steps), passkey_share=args.passkey_share, passkey_weight=args.passkey_weight, seed=args.seed,
        threads=args.threads, autocast=args.autocast, save_dtype=args.save_dtype,
        eval_every=args.eval_every, checkpoint_every=args.checkpoint_every, cache_dir=args.cache_dir, init=args.init,
        command="longrope " + shlex.join(sys.argv[1:] if sys.argv and "pretrain" in sys.argv else ["pretrain"]))
    if not args.init:
        model_config(cfg, args.vocab_size)  # sizes checked before the data is read
    work = args.work or args.out.rstrip("/") + ".work"
    with prepare_output(args.out, kind="pretrain", overwrite=args.overwrite, resume=args.resume), \
            prepare_output(work, kind="pretrain-work", overwrite=True, resume=args.resume,
                           adopt="checkpoint/state.json"):
        s = pretrain(cfg, resume=args.resume, progress=not args.no_progress)
    print(f"wrote {args.out}: {s['parameters']:,} parameters, {s['tokens_seen']:,} tokens, "
          f"train loss {s['final_train_loss']}, val loss {s['final_val_loss']} "
          f"(ppl {s['final_val_ppl_256']}) in {s['train_seconds']:.0f} s")
    return 0
