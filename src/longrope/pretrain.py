"""Pre-train the built-in short-context model: byte-level BPE + `LlamaForCausalLM` from scratch.

Samples are `window` tokens: BOS, then a random crop of the training split's token stream
(documents joined with EOS BOS), or, with probability `passkey_share`, a synthetic passkey prompt
(`longrope.data.passkey`) followed by its answer, right-padded (padding is not scored). Every
random choice comes from one `torch.Generator(seed)`; with the same seed and thread count on the
same machine the losses repeat exactly, also across `resume`.

Work folder (`work`): `log.jsonl` (one line per logged step), `tokenizer/`, `checkpoint/`
(safetensors weights, optimizer state saved with torch.save and read back with weights_only=True,
generator state, step). The final model folder is written atomically and loads with stock
`AutoModelForCausalLM` / `AutoTokenizer`.

The steps, as in `longrope.train.finetune`: `_load` (tokenizer, data, model) -> `_set_up` (optimizer,
generator, checkpoint) -> `_train` (`_train_step` per optimizer step, `_checkpoint` every N) ->
`_write_output`.
"""
from __future__ import annotations

import json
import math
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .errors import LongRopeError
from .io import atomic_dir, write_json
from .data.batches import Batches
from .lm_head import IGNORE, LMHead, shifted_targets, token_nll
from .train.toolkit import (RunFolder, StepLog, adamw, load_state, load_weights, lr_at, read_optimizer,
                            save_checkpoint)

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerBase


@dataclass
class PretrainConfig:
    out: str
    work: str | None = None
    data: str | None = None  # None/'builtin' = stdlib corpus
    window: int = 256
    rope_theta: float = 10000.0
    head_dim: int = 64
    layers: int = 4
    hidden: int = 256
    heads: int = 4
    intermediate: int = 768
    vocab_size: int = 4096
    steps: int = 1000
    batch_size: int = 16
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    passkey_share: float = 0.1
    passkey_weight: float = 1.0  # loss weight of the answer tokens of passkey samples (1 = plain mean)
    seed: int = 0
    threads: int = 2
    autocast: str = "none"  # "bfloat16": mixed precision (fp32 master weights), much faster on bf16 CPUs
    log_every: int = 10
    eval_every: int = 200
    eval_samples: int = 32
    checkpoint_every: int = 200
    save_dtype: str = "float32"
    cache_dir: str | None = None
    init: str | None = None  # continue from this model folder (its tokenizer, config and weights)
    command: str = ""
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        """The values, checked before anything is read or written (one line each)."""
        for name in ("steps", "batch_size", "layers", "hidden", "heads", "intermediate", "window", "threads"):
            if getattr(self, name) < 1:
                raise LongRopeError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.passkey_share <= 1.0:
            raise LongRopeError(f"--passkey-share must be between 0 and 1, got {self.passkey_share}")
        for name in ("eval_every", "checkpoint_every", "warmup"):
            if getattr(self, name) < 0:
                raise LongRopeError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "rope_theta", "passkey_weight"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise LongRopeError(f"--{name.replace('_', '-')} must be a positive number, got {getattr(self, name)}")
        if self.vocab_size < 300:
            raise LongRopeError(f"--vocab-size must be at least 300 (256 bytes + specials), got {self.vocab_size}")
        if self.autocast not in ("none", "bfloat16"):
            raise LongRopeError(f"--autocast must be none or bfloat16, got {self.autocast!r}")
        self.warmup = min(self.warmup, self.steps)


def model_config(cfg: PretrainConfig, vocab_size: int):
    from transformers import LlamaConfig

    if cfg.hidden % cfg.heads or cfg.hidden // cfg.heads != cfg.head_dim:
        raise LongRopeError(f"--hidden {cfg.hidden} must equal --heads {cfg.heads} x head size {cfg.head_dim}")
    return LlamaConfig(vocab_size=vocab_size, hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
                       num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                       num_key_value_heads=cfg.heads, head_dim=cfg.head_dim,
                       max_position_embeddings=cfg.window, rope_theta=cfg.rope_theta,
                       rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
                       tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def _weighted_loss(logits, labels, answer, weight: float):
    """Mean next-token loss with answer tokens weighted `weight` (1: transformers' causal-LM loss,
    the plain mean over scored tokens); also the plain answer-token loss."""
    nll = token_nll(logits[:, :-1], labels[:, 1:])
    lab, ans = labels[:, 1:], answer[:, 1:]
    if weight == 1.0:
        loss = token_nll(logits, shifted_targets(labels), "mean")
    else:
        scored = (lab != IGNORE).float()
        w = scored + (weight - 1.0) * ans.float() * scored
        loss = (nll * w).sum() / w.sum()
    n_ans = int(ans.sum())
    return loss, (float(nll.detach()[ans].mean()) if n_ans else None)


def _logits(model, head: LMHead, x: torch.Tensor) -> torch.Tensor:
    return head(model.get_decoder()(input_ids=x).last_hidden_state)


@torch.no_grad()
def evaluate(model, samples: list[torch.Tensor], batch: int = 8) -> float:
    """Mean next-token loss (nats) over `samples`."""
    model.eval()
    head = LMHead(model)
    total, n = 0.0, 0
    for i in range(0, len(samples), batch):
        x = torch.stack(samples[i:i + batch])
        total += float(token_nll(_logits(model, head, x)[:, :-1], x[:, 1:], "sum"))
        n += x[:, 1:].numel()
    model.train()
    return total / n


def _corpus(cfg: PretrainConfig):
    """Train and validation documents: the source's own splits (`longrope.data.sources`)."""
    from .data import load_documents

    return load_documents(cfg.data, "train"), load_documents(cfg.data, "validation")


@dataclass
class _Loaded:
    """The tokenizer, the token streams, the validation samples and the model to train."""
    tok: PreTrainedTokenizerBase
    train_ids: list
    val_ids: list
    stream: torch.Tensor  # the training documents joined with EOS BOS
    val: list[torch.Tensor]  # validation samples
    model: LlamaForCausalLM | None = None
    init: Path | None = None  # the model folder of --init
    init_info: dict | None = None  # its provenance.json
    seconds: float = 0.0


@dataclass
class _Run:
    """What the steps of one pre-training run share."""
    cfg: PretrainConfig
    data: _Loaded
    opt: torch.optim.Optimizer
    gen: torch.Generator  # every random choice of the batches
    batches: Batches
    step: int = 0
    tokens: int = 0
    seconds: float = 0.0
    answer_losses: list = field(default_factory=list)  # passkey answer losses not yet logged


def _tokenizer(cfg: PretrainConfig, run: RunFolder, resume: bool, train_docs) -> tuple:
    """(tokenizer, init folder, its provenance): --init's, the run's own on resume, else a new BPE
    (saved by `_data` once the data has passed its checks: a failed run leaves no tokenizer behind)."""
    from transformers import AutoTokenizer

    from .data.bpe import train_bpe

    tok_dir = run.work / "tokenizer"
    if cfg.init:
        from .models import load_tokenizer, resolve

        init = resolve(cfg.init)
        info = json.loads((init / "provenance.json").read_text()) if (init / "provenance.json").is_file() else None
        return load_tokenizer(init), init, info  # one line when the folder has no usable tokenizer
    if resume and (tok_dir / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(tok_dir, local_files_only=True), None, None
    return train_bpe([d.text for d in train_docs], cfg.vocab_size), None, None


def _load(cfg: PretrainConfig, run: RunFolder, resume: bool) -> _Loaded:
    """The tokenizer, the training token stream, the validation samples and the model."""
    from .data import build_samples, tokenize_documents

    t0 = time.time()
    train_docs, val_docs = _corpus(cfg)
    tok, init, init_info = _tokenizer(cfg, run, resume, train_docs)
    train_ids = tokenize_documents(train_docs, tok, cfg.cache_dir)
    val_ids = tokenize_documents(val_docs, tok, cfg.cache_dir)
    sep = [tok.eos_token_id, tok.bos_token_id]
    stream = torch.tensor([t for i, ids in enumerate(train_ids) for t in ((sep if i else []) + ids)])
    if len(stream) < cfg.window * 4:
        raise LongRopeError(f"the training data holds {len(stream):,} tokens, too few for {cfg.window}-token samples")
    val = build_samples(val_ids, cfg.window, None, mode="join", bos_id=tok.bos_token_id,
                        sep_id=tok.eos_token_id, seed=cfg.seed)
    tok_dir = run.work / "tokenizer"
    if not cfg.init and not (resume and (tok_dir / "tokenizer.json").is_file()):
        with atomic_dir(tok_dir) as tmp:
            tok.save_pretrained(tmp)
    data = _Loaded(tok, train_ids, val_ids, stream, val.tensors[:cfg.eval_samples], None, init, init_info,
                   time.time() - t0)
    data.model = _model(cfg, data)
    return data


def _model(cfg: PretrainConfig, data: _Loaded):
    """A new Llama (seeded init), or --init's model in float32 (its sizes then fill `cfg`)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(cfg.seed)  # weight init draws from the global generator inside transformers
    if data.init is None:
        return LlamaForCausalLM(model_config(cfg, len(data.tok)))
    model = LlamaForCausalLM.from_pretrained(data.init, dtype=torch.float32, local_files_only=True,
                                             use_kernels=False)  # no Hub kernels (models.load_model)
    if model.config.max_position_embeddings != cfg.window:
        raise LongRopeError(f"--window {cfg.window} differs from the window of {data.init} "
                            f"({model.config.max_position_embeddings})")
    mc = model.config
    cfg.layers, cfg.hidden, cfg.heads = mc.num_hidden_layers, mc.hidden_size, mc.num_attention_heads
    cfg.intermediate, cfg.vocab_size, cfg.head_dim = mc.intermediate_size, mc.vocab_size, mc.head_dim
    return model


def _set_up(cfg: PretrainConfig, data: _Loaded, run: RunFolder, resume: bool) -> _Run:
    """Optimizer and batch generator; on resume the checkpoint's weights and state."""
    model = data.model
    model.train()
    opt = adamw(model, cfg.lr, cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = Batches(data.stream, data.tok, gen, window=cfg.window, batch_size=cfg.batch_size,
                      passkey_share=cfg.passkey_share)
    r = _Run(cfg, data, opt, gen, batches)
    if resume:
        load_weights(run.checkpoint, model)
        opt.load_state_dict(read_optimizer(run.checkpoint))
        load_state(run.checkpoint, generator=gen)
        state = run.read_state()
        r.step, r.tokens, r.seconds = state["step"], state["tokens"], state["seconds"]
        r.answer_losses = list(state.get("answer_losses", []))
    run.start(resume, r.step)
    return r


def _train_step(r: _Run, head: LMHead) -> tuple[float, int, float | None]:
    """One optimizer step; returns (loss, scored tokens, answer-token loss or None)."""
    cfg, model, opt = r.cfg, r.data.model, r.opt
    x, y, ans = r.batches.next()
    for g in opt.param_groups:
        g["lr"] = lr_at(r.step, cfg.lr, steps=cfg.steps, warmup=cfg.warmup, min_ratio=cfg.min_lr_ratio,
                        shape="cosine")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.autocast == "bfloat16"):
        logits = _logits(model, head, x)
    loss, answer_loss = _weighted_loss(logits, y, ans, cfg.passkey_weight)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return float(loss.detach()), int((y != IGNORE).sum()), answer_loss


def _checkpoint(r: _Run, run: RunFolder, seconds: float) -> None:
    state = {"step": r.step, "tokens": r.tokens, "seconds": seconds, "answer_losses": r.answer_losses}
    save_checkpoint(run.checkpoint, r.data.model.state_dict(), state, optimizer=r.opt.state_dict(),
                    generator=r.gen)


def _train(r: _Run, run: RunFolder, progress: bool) -> tuple[dict, float]:
    """The steps from `r.step` to the end; returns the last log row and the wall time."""
    cfg, head = r.cfg, LMHead(r.data.model)
    steplog = StepLog(run.log, total=cfg.steps, initial=r.step, desc="pretrain", show=progress, postfix="{:.3f}")
    last = {"step": r.step, "tokens": r.tokens}
    t_start = time.time() - r.seconds
    while r.step < cfg.steps:
        loss, n, answer_loss = _train_step(r, head)
        r.step += 1
        r.tokens += n
        if answer_loss is not None:
            r.answer_losses.append(answer_loss)
        last = {"step": r.step, "loss": round(loss, 6), "lr": r.opt.param_groups[0]["lr"], "tokens": r.tokens,
                "seconds": round(time.time() - t_start, 2)}
        if r.answer_losses and (r.step % cfg.log_every == 0 or r.step == cfg.steps):
            last["passkey_answer_loss"] = round(sum(r.answer_losses) / len(r.answer_losses), 4)
            r.answer_losses = []
        if cfg.eval_every and (r.step % cfg.eval_every == 0 or r.step == cfg.steps):
            last["val_loss"] = round(evaluate(r.data.model, r.data.val), 6)
        logged = r.step % cfg.log_every == 0 or "val_loss" in last or r.step == cfg.steps
        steplog.step(last if logged else None, loss)
        if cfg.checkpoint_every and r.step % cfg.checkpoint_every == 0 and r.step < cfg.steps:
            _checkpoint(r, run, time.time() - t_start)
    steplog.close()
    return last, time.time() - t_start


def pretrain(cfg: PretrainConfig, *, resume: bool = False, progress: bool = True) -> dict:
    """Train and write the model folder `cfg.out`; returns the run summary (also in provenance.json)."""
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    # the output and work folders were prepared (marker, lock, --overwrite: `io.prepare_output`) by
    # the command before this call; here their paths are laid out and a resume checked, first
    run = RunFolder(cfg.out, cfg.work)
    run.check_resume(resume)
    run.work.mkdir(parents=True, exist_ok=True)
    r = _set_up(cfg, _load(cfg, run, resume), run, resume)
    cpu_start = time.process_time()
    last, wall = _train(r, run, progress)
    model = r.data.model
    val_loss = last.get("val_loss") if "val_loss" in last else round(evaluate(model, r.data.val), 6)
    summary = _summary(cfg, model, r.data, last, val_loss, wall, time.process_time() - cpu_start, run.log)
    _write_output(run.out, model, r.data.tok, cfg, summary, run.log)
    return summary


def _summary(cfg: PretrainConfig, model, data: _Loaded, last: dict, val_loss: float, wall: float,
             cpu: float, log: Path) -> dict:
    return {
        "command": cfg.command, "seed": cfg.seed, "config": {k: v for k, v in asdict(cfg).items()
                                                              if k not in ("command", "extra")},
        "parameters": sum(p.numel() for p in model.parameters()), "steps": last.get("step", 0),
        "tokens_seen": last.get("tokens", 0),
        "final_train_loss": _mean_recent(log, 20), "final_val_loss": val_loss,
        "final_val_ppl_256": round(math.exp(val_loss), 4), "train_seconds": round(wall, 1),
        "train_cpu_seconds_this_process": round(cpu, 1),
        "prep_seconds": round(data.seconds, 1), "python": sys.version.split()[0],
        "platform": platform.platform(), "torch": torch.__version__, "threads": cfg.threads,
        "corpus": {"source": cfg.data or "builtin",
                   "train": {"docs": len(data.train_ids), "tokens": sum(map(len, data.train_ids))},
                   "validation": {"docs": len(data.val_ids), "tokens": sum(map(len, data.val_ids))}},
        **({"init_from": str(cfg.init), "init_provenance": data.init_info} if cfg.init else {}),
        **cfg.extra,
    }


def _mean_recent(log: Path, n: int) -> float | None:
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    rows = rows[-n:]
    return round(sum(r["loss"] for r in rows) / len(rows), 4) if rows else None


def _write_output(out: Path, model, tok, cfg: PretrainConfig, summary: dict, log: Path) -> None:
    from .models import torch_dtype

    model.eval()
    with atomic_dir(out, "pretrain") as tmp:
        model.to(torch_dtype(cfg.save_dtype)).save_pretrained(tmp, safe_serialization=True)
        model.to(torch.float32)
        tok.save_pretrained(tmp)
        write_json(tmp / "provenance.json", summary)
        shutil.copyfile(log, tmp / "train_log.jsonl")
