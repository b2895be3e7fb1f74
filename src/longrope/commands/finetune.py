"""`longrope finetune`: continued pre-training at a longer length with a RoPE scaling applied."""
from __future__ import annotations

import shlex
import sys


HELP = {  # the defaults come from FinetuneConfig; only the words live here
    "model": "local model folder, or 'builtin'",
    "scaling": "the scaling to train with: yarn:8, pi:8, longrope:PATH, ... (bare 'pi' etc. take length / "
               "original window)",
    "length": "training sample length in tokens (e.g. 4k)",
    "steps": "optimizer steps",
    "data": "'builtin' (stdlib corpus, default), a .txt file, folder or glob, .jsonl[:FIELD], .parquet or a "
            "save_to_disk dataset folder",
    "split": "split of the data: train (default), validation, test, or all (unsplit)",
    "out": "output model folder (written atomically)",
    "work": "folder for log.jsonl and checkpoint/ (default OUT.work)",
    "batch_size": "global samples per optimizer step, whatever the number of processes",
    "micro_batch": "samples per forward pass and process; the rest is gradient accumulation",
    "lr": "peak learning rate (the paper's)",
    "warmup": "linear warm-up steps (default min(20, steps/10))",
    "min_lr_ratio": "lr at the end / peak lr",
    "weight_decay": "AdamW weight decay",
    "max_grad_norm": "gradient clipping, 0 = off",
    "bf16": "bfloat16 autocast (fp32 master weights) where supported",
    "gradient_checkpointing": "keep all activations (faster, much more memory)",
    "loss_chunk": "tokens per LM-head/loss chunk, so [length, vocab] logits never exist at once; 0 = full logits",
    "mixed_window": "LongRoPE2 mixed-window training: this share of micro-batches is cut into original-window "
                    "pieces trained with the original rotation",
    "passkey_share": "this share of samples are synthetic passkey prompts (key at a random depth) followed by "
                     "the answer, so long-range retrieval is trained too",
    "distill": "weight of a KL(frozen starting model || student) term on original-window pieces with the "
               "original rotation, which keeps the short-context quality (0 = off; docs/finetune.md)",
    "distill_share": "share of each micro-batch's original-window pieces scored in the --distill term",
    "checkpoint_every": "checkpoint every N steps, 0 = never",
    "seed": "seed of the sample order and every random choice",
    "fsdp": "shard parameters, gradients and optimizer state over the processes with torch FSDP2 (fully_shard); "
            "an accelerate FSDP config does the same (docs/finetune.md)",
    "sequence_parallel": "split every sequence over this many processes (DeepSpeed-Ulysses attention; needs "
                         "longrope[deepspeed]); the others split the batch",
    "device": "cpu or cuda (each process takes its LOCAL_RANK GPU)",
    "threads": "torch CPU threads per process",
    "cache_dir": "tokenization cache folder (default $LONGROPE_CACHE_DIR, else ~/.cache/longrope)",
    "trust_remote_code": "allow model code from the model folder",
}
MAIN = ("model", "scaling", "length", "steps", "data", "split", "out", "work")
TRAINING = ("batch_size", "micro_batch", "lr", "warmup", "min_lr_ratio", "weight_decay", "max_grad_norm", "bf16",
            "gradient_checkpointing", "loss_chunk", "mixed_window", "passkey_share", "distill",
            "distill_share", "checkpoint_every", "seed")
RUNTIME = ("fsdp", "sequence_parallel", "device", "threads", "cache_dir", "trust_remote_code")


def register(sub) -> None:
    from ..schema import add_config_args
    from ..train.config import FinetuneConfig

    p = sub.add_parser(
        "finetune", help="fine-tune a model at a longer length with a RoPE scaling applied",
        description="Continued pre-training at --length tokens with --scaling applied through longrope's "
                    "rotary patch. Documents are joined with EOS/BOS into --length-token samples. AdamW with "
                    "linear warm-up and decay, gradient accumulation and checkpointing, chunked loss. Runs "
                    "unchanged under `torchrun` and `accelerate launch` (DDP, FSDP, DeepSpeed); see "
                    "docs/finetune.md. The output folder holds the weights and longrope_scaling.json: apply "
                    "that scaling when using the model, or run `longrope export` for a stock config.")
    add_config_args(p, FinetuneConfig, MAIN, helps=HELP, required=("scaling", "length", "steps"))
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in the work folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a fine-tuned model longrope wrote in --out before (never a folder it did not write)")
    add_config_args(p.add_argument_group("training"), FinetuneConfig, TRAINING, helps=HELP)
    r = p.add_argument_group("runtime")
    add_config_args(r, FinetuneConfig, RUNTIME, helps=HELP, choices={"device": ("cpu", "cuda")})
    r.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "bf16"),
                   help="float32 (default), or bfloat16: bfloat16 autocast with float32 master weights (as --bf16)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io import prepare_output
    from ..schema import build, from_args
    from ..train.config import FinetuneConfig
    from ..train.finetune import finetune

    given = from_args(args, FinetuneConfig, MAIN + TRAINING + RUNTIME)
    if args.dtype in ("bfloat16", "bf16"):  # weights stay float32 (the optimizer's master copy)
        given["bf16"] = True
    cfg = build(FinetuneConfig, "finetune", **given,
                command="longrope " + shlex.join(sys.argv[1:] if "finetune" in sys.argv else ["finetune"]))
    cfg.validate()  # values checked before the output folders are made
    from ..train.engine import require_accelerate
    require_accelerate()
    work = cfg.work or cfg.out.rstrip("/") + ".work"
    with prepare_output(cfg.out, kind="finetune", overwrite=args.overwrite, resume=args.resume), \
            prepare_output(work, kind="finetune-work", overwrite=True, resume=args.resume,
                           adopt="checkpoint/state.json"):
        s = finetune(cfg, resume=args.resume, progress=not args.no_progress)
    if s["main"]:
        print(f"wrote {args.out}: {s['steps']} steps, {s['tokens_seen']:,} tokens at length {cfg.length}, "
              f"final loss {s['final_loss']:.4f}, scaling {s['scaling']} in {s['seconds']:.0f} s")
    return 0
