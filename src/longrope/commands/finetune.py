"""`longrope finetune`: continued pre-training at a longer length with a RoPE scaling applied."""
from __future__ import annotations

import shlex
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "finetune", help="fine-tune a model at a longer length with a RoPE scaling applied",
        description="Continued pre-training at --length tokens with --scaling applied through longrope's "
                    "rotary patch. Documents are joined with EOS/BOS into --length-token samples. AdamW with "
                    "linear warm-up and decay, gradient accumulation and checkpointing, chunked loss. Runs "
                    "unchanged under `torchrun` and `accelerate launch` (DDP, FSDP, DeepSpeed); see "
                    "docs/finetune.md. The output folder holds the weights and longrope_scaling.json: apply "
                    "that scaling when using the model, or run `longrope export` for a stock config.")
    p.add_argument("--model", default="builtin", help="local model folder, or 'builtin' (default)")
    p.add_argument("--scaling", required=True,
                   help="the scaling to train with: yarn:8, pi:8, longrope:PATH, ... (bare 'pi' etc. take "
                        "length / original window)")
    p.add_argument("--length", type=int, required=True, help="training sample length in tokens")
    p.add_argument("--steps", type=int, required=True, help="optimizer steps")
    p.add_argument("--data", default=None,
                   help="'builtin' (stdlib corpus, default), a .txt file, folder or glob, .jsonl[:FIELD], "
                        ".parquet or a save_to_disk dataset folder")
    p.add_argument("--split", default="train", help="split of the data: train (default), validation, test, or all (unsplit)")
    p.add_argument("--out", required=True, help="output model folder (written atomically)")
    p.add_argument("--work", default=None, help="folder for log.jsonl and checkpoint/ (default OUT.work)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in the work folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a fine-tuned model longrope wrote in --out before (never a folder it did not write)")
    t = p.add_argument_group("training")
    t.add_argument("--batch-size", type=int, default=8,
                   help="global samples per optimizer step, whatever the number of processes (default 8)")
    t.add_argument("--micro-batch", type=int, default=1,
                   help="samples per forward pass and process; the rest is gradient accumulation (default 1)")
    t.add_argument("--lr", type=float, default=2e-5, help="peak learning rate (default 2e-5, the paper's)")
    t.add_argument("--warmup", type=int, default=None, help="linear warm-up steps (default min(20, steps/10))")
    t.add_argument("--min-lr-ratio", type=float, default=0.0, help="lr at the end / peak lr (default 0)")
    t.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0)")
    t.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping, 0 = off (default 1)")
    t.add_argument("--bf16", action="store_true", help="bfloat16 autocast (fp32 master weights) where supported")
    t.add_argument("--no-gradient-checkpointing", action="store_true",
                   help="keep all activations (faster, much more memory)")
    t.add_argument("--loss-chunk", type=int, default=1024,
                   help="tokens per LM-head/loss chunk, so [length, vocab] logits never exist at once; "
                        "0 = full logits (default 1024)")
    t.add_argument("--mixed-window", type=float, default=0.0, metavar="RATIO",
                   help="LongRoPE2 mixed-window training: this share of micro-batches is cut into "
                        "original-window pieces trained with the original rotation (default 0)")
    t.add_argument("--passkey-share", type=float, default=0.0, metavar="RATIO",
                   help="this share of samples are synthetic passkey prompts (key at a random depth) "
                        "followed by the answer, so long-range retrieval is trained too (default 0)")
    t.add_argument("--checkpoint-every", type=int, default=50, help="checkpoint every N steps, 0 = never (default 50)")
    t.add_argument("--seed", type=int, default=0, help="seed of the sample order and every random choice (default 0)")
    r = p.add_argument_group("runtime")
    r.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="cpu (default) or cuda (each process takes its LOCAL_RANK GPU)")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    r.add_argument("--cache-dir", default=None, help="tokenization cache folder (default ~/.cache/longrope)")
    r.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model folder")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io import prepare_output
    from ..train.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig(
        out=args.out, model=args.model, scaling=args.scaling, length=args.length, steps=args.steps,
        data=args.data, split=args.split, work=args.work, batch_size=args.batch_size,
        micro_batch=args.micro_batch, lr=args.lr, warmup=args.warmup, min_lr_ratio=args.min_lr_ratio,
        weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm, bf16=args.bf16,
        gradient_checkpointing=not args.no_gradient_checkpointing, loss_chunk=args.loss_chunk,
        checkpoint_every=args.checkpoint_every, seed=args.seed, mixed_window=args.mixed_window,
        passkey_share=args.passkey_share,
        device=args.device, threads=args.threads, cache_dir=args.cache_dir,
        trust_remote_code=args.trust_remote_code,
        command="longrope " + shlex.join(sys.argv[1:] if "finetune" in sys.argv else ["finetune"]))
    cfg.validate()  # values checked before the output folders are made
    work = args.work or args.out.rstrip("/") + ".work"
    with prepare_output(args.out, kind="finetune", overwrite=args.overwrite, resume=args.resume), \
            prepare_output(work, kind="finetune-work", overwrite=True, resume=args.resume,
                           adopt="checkpoint/state.json"):
        s = finetune(cfg, resume=args.resume, progress=not args.no_progress)
    if s["main"]:
        print(f"wrote {args.out}: {s['steps']} steps, {s['tokens_seen']:,} tokens at length {args.length}, "
              f"final loss {s['final_loss']:.4f}, scaling {s['scaling']} in {s['seconds']:.0f} s")
    return 0

