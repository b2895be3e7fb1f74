"""`longrope pretrain`: train the built-in short-context model (BPE tokenizer + Llama) from scratch."""
from __future__ import annotations

import shlex
import sys

HELP = {  # the defaults come from PretrainConfig; only the words live here
    "out": "output model folder (written atomically)",
    "work": "folder for log.jsonl, checkpoint and tokenizer (default OUT.work)",
    "data": "'builtin' (stdlib corpus, default) or a data path (see `longrope data`)",
    "init": "start from this model folder (its tokenizer, config and weights; size options are then ignored) "
            "instead of from scratch",
    "cache_dir": "tokenization cache folder (default $LONGROPE_CACHE_DIR, else ~/.cache/longrope)",
    "layers": "decoder layers",
    "hidden": "hidden size = heads x 64",
    "heads": "attention heads of size 64",
    "intermediate": "MLP size",
    "vocab_size": "BPE vocabulary incl. 3 special tokens",
    "window": "training window = max_position_embeddings",
    "rope_theta": "RoPE base",
    "steps": "optimizer steps",
    "batch_size": "samples per step",
    "lr": "peak learning rate, cosine decay to --min-lr-ratio x peak",
    "min_lr_ratio": "lr at the end / peak lr",
    "warmup": "warm-up steps",
    "weight_decay": "AdamW weight decay",
    "passkey_share": "share of synthetic passkey samples",
    "passkey_weight": "loss weight of passkey answer tokens relative to other tokens",
    "seed": "seed of every random choice",
    "threads": "torch CPU threads",
    "autocast": "bfloat16 = mixed precision with fp32 weights (fast on CPUs with bf16 units)",
    "save_dtype": "dtype of the saved weights: float32, float16, bfloat16",
    "eval_every": "validation loss every N steps (0 = only at the end)",
    "checkpoint_every": "checkpoint every N steps (0 = never)",
}
MAIN = ("out", "work", "data", "init", "cache_dir")
SIZE = ("layers", "hidden", "heads", "intermediate", "vocab_size", "window", "rope_theta")
TRAINING = ("steps", "batch_size", "lr", "min_lr_ratio", "warmup", "weight_decay", "passkey_share", "passkey_weight",
            "seed", "threads", "autocast", "save_dtype", "eval_every", "checkpoint_every")


def register(sub) -> None:
    from ..pretrain import PretrainConfig
    from ..schema import add_config_args

    p = sub.add_parser("pretrain", help="pre-train a small Llama model and BPE tokenizer from scratch",
                       description="Train a byte-level BPE tokenizer and a LlamaForCausalLM from scratch on the "
                                   "training split, with a share of synthetic passkey samples. Writes a model "
                                   "folder that stock AutoModelForCausalLM/AutoTokenizer load.")
    add_config_args(p, PretrainConfig, MAIN, helps=HELP)
    add_config_args(p.add_argument_group("model size"), PretrainConfig, SIZE, helps=HELP)
    t = p.add_argument_group("training")
    add_config_args(t, PretrainConfig, TRAINING, helps=HELP, choices={"autocast": ("none", "bfloat16")})
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint in the work folder")
    t.add_argument("--overwrite", action="store_true",
                   help="replace a model longrope wrote in --out before (never a folder it did not write)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io import prepare_output
    from ..pretrain import PretrainConfig, model_config, pretrain
    from ..schema import build, from_args

    cfg = build(PretrainConfig, "pretrain", **from_args(args, PretrainConfig, MAIN + SIZE + TRAINING),
                command="longrope " + shlex.join(sys.argv[1:] if sys.argv and "pretrain" in sys.argv else ["pretrain"]))
    cfg.validate()
    if not cfg.init:
        model_config(cfg, cfg.vocab_size)  # sizes checked before the data is read
    work = cfg.work or cfg.out.rstrip("/") + ".work"
    with prepare_output(cfg.out, kind="pretrain", overwrite=args.overwrite, resume=args.resume), \
            prepare_output(work, kind="pretrain-work", overwrite=True, resume=args.resume,
                           adopt="checkpoint/state.json"):
        s = pretrain(cfg, resume=args.resume, progress=not args.no_progress)
    print(f"wrote {cfg.out}: {s['parameters']:,} parameters, {s['tokens_seen']:,} tokens, "
          f"train loss {s['final_train_loss']}, val loss {s['final_val_loss']} "
          f"(ppl {s['final_val_ppl_256']}) in {s['train_seconds']:.0f} s")
    return 0
