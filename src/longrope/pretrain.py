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
from typing import Any

import torch

from .data.passkey import KEY_MAX, KEY_MIN
from .errors import LongRopeError
from .io import atomic_dir, write_json
from .lm_head import IGNORE, LMHead, shifted_targets, token_nll
from .train.toolkit import RunFolder, StepLog, adamw, load_state, load_weights, lr_at, save_checkpoint


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


class Batches:
    """Deterministic training batches from the token stream and synthetic passkey prompts."""

    def __init__(self, stream: torch.Tensor, tok, cfg: PretrainConfig, gen: torch.Generator):
        from .data.passkey import answer_ids, passkey_prompt, prompt_text

        self.stream, self.tok, self.cfg, self.gen = stream, tok, cfg, gen
        self.passkey_prompt, self.answer_ids = passkey_prompt, answer_ids
        self.bos, self.pad = tok.bos_token_id, tok.pad_token_id
        # the shortest prompt (no filler) with the longest key: every drawn length must reach it
        self.min_len = len(tok(prompt_text(0, 0.0, KEY_MAX)[0])["input_ids"])
        if cfg.passkey_share > 0 and self.min_len + 8 > cfg.window:
            raise LongRopeError(f"a {cfg.window}-token window cannot hold a passkey sample "
                                f"(needs {self.min_len + 8} tokens); use --passkey-share 0")

    def _prompt(self, length: int, depth: float, key: int, seed: int) -> list[int]:
        return self.passkey_prompt(self.tok, length, depth, key, seed=seed).input_ids.tolist()

    def _rand(self, hi: int) -> int:
        return int(torch.randint(hi, (1,), generator=self.gen))

    def passkey_sample(self) -> tuple[list[int], list[int], int]:
        w = self.cfg.window
        key = KEY_MIN + self._rand(KEY_MAX - KEY_MIN + 1)
        depth = self._rand(1001) / 1000
        answer = self.answer_ids(self.tok, key)
        lo = self.min_len
        length = lo + self._rand(max(w - len(answer) - lo, 1) + 1)
        prompt = self._prompt(length, depth, key, 1 + self._rand(1 << 30))
        ids = (prompt + answer)[:w]
        labels = list(ids) + [-100] * (w - len(ids))
        return ids + [self.pad] * (w - len(ids)), labels, len(prompt)

    def text_sample(self) -> tuple[list[int], list[int], int]:
        body = self.cfg.window - 1
        start = self._rand(len(self.stream) - body)
        ids = [self.bos] + self.stream[start:start + body].tolist()
        return ids, list(ids), len(ids)

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """input ids, labels (-100 = not scored), answer mask (label positions of passkey answers)."""
        rows, labels, answers = [], [], []
        for _ in range(self.cfg.batch_size):
            is_key = float(torch.rand((1,), generator=self.gen)) < self.cfg.passkey_share
            ids, lab, answer_at = self.passkey_sample() if is_key else self.text_sample()
            rows.append(ids)
            labels.append(lab)
            answers.append([answer_at <= i < len(lab) and lab[i] != -100 for i in range(len(lab))])
        return torch.tensor(rows), torch.tensor(labels), torch.tensor(answers)


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
class _Data:
    tok: Any
    train_ids: list
    val_ids: list
    stream: torch.Tensor  # the training documents joined with EOS BOS
    val: list[torch.Tensor]  # validation samples
    init: Path | None = None  # the model folder of --init
    init_info: dict | None = None  # its provenance.json
    seconds: float = 0.0


def _tokenizer(cfg: PretrainConfig, run: RunFolder, resume: bool, train_docs) -> tuple:
    """(tokenizer, init folder, its provenance): --init's, the run's own on resume, else a new BPE."""
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
    tok = train_bpe([d.text for d in train_docs], cfg.vocab_size)
    with atomic_dir(tok_dir) as tmp:
        tok.save_pretrained(tmp)
    return tok, None, None


def _data(cfg: PretrainConfig, run: RunFolder, resume: bool) -> _Data:
    """The tokenizer, the training token stream and the validation samples."""
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
    return _Data(tok, train_ids, val_ids, stream, val.tensors[:cfg.eval_samples], init, init_info,
                 time.time() - t0)


def _model(cfg: PretrainConfig, data: _Data):
    """A new Llama (seeded init), or --init's model in float32 (its sizes then fill `cfg`)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(cfg.seed)  # weight init draws from the global generator inside transformers
    if data.init is None:
        return LlamaForCausalLM(model_config(cfg, len(data.tok)))
    model = LlamaForCausalLM.from_pretrained(data.init, dtype=torch.float32, local_files_only=True)
    if model.config.max_position_embeddings != cfg.window:
        raise LongRopeError(f"--window {cfg.window} differs from the window of {data.init} "
                            f"({model.config.max_position_embeddings})")
    mc = model.config
    cfg.layers, cfg.hidden, cfg.heads = mc.num_hidden_layers, mc.hidden_size, mc.num_attention_heads
    cfg.intermediate, cfg.vocab_size, cfg.head_dim = mc.intermediate_size, mc.vocab_size, mc.head_dim
    return model


def _train_step(model, head: LMHead, opt, batches: Batches, step: int, cfg: PretrainConfig):
    """One optimizer step; returns (loss, scored tokens, answer-token loss or None)."""
    x, y, ans = batches.next()
    for g in opt.param_groups:
        g["lr"] = lr_at(step, cfg.lr, steps=cfg.steps, warmup=cfg.warmup, min_ratio=cfg.min_lr_ratio,
                        shape="cosine")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.autocast == "bfloat16"):
        logits = _logits(model, head, x)
    loss, answer_loss = _weighted_loss(logits, y, ans, cfg.passkey_weight)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return float(loss.detach()), int((y != IGNORE).sum()), answer_loss


def _train(cfg: PretrainConfig, run: RunFolder, model, opt, gen, data: _Data, state: dict,
           progress: bool) -> tuple[dict, float]:
    """The steps from the checkpoint's (`state`) to the end; returns the last log row and the wall time."""
    step, tokens, seconds = state["step"], state["tokens"], state["seconds"]
    batches, head = Batches(data.stream, data.tok, cfg, gen), LMHead(model)
    steplog = StepLog(run.log, total=cfg.steps, initial=step, desc="pretrain", show=progress, postfix="{:.3f}")
    last, answer_losses = {"step": step, "tokens": tokens}, list(state.get("answer_losses", []))
    t_start = time.time() - seconds
    while step < cfg.steps:
        loss, n, answer_loss = _train_step(model, head, opt, batches, step, cfg)
        step += 1
        tokens += n
        if answer_loss is not None:
            answer_losses.append(answer_loss)
        last = {"step": step, "loss": round(loss, 6), "lr": opt.param_groups[0]["lr"], "tokens": tokens,
                "seconds": round(time.time() - t_start, 2)}
        if answer_losses and (step % cfg.log_every == 0 or step == cfg.steps):
            last["passkey_answer_loss"] = round(sum(answer_losses) / len(answer_losses), 4)
            answer_losses = []
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            last["val_loss"] = round(evaluate(model, data.val), 6)
        logged = step % cfg.log_every == 0 or "val_loss" in last or step == cfg.steps
        steplog.step(last if logged else None, loss)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            save_checkpoint(run.checkpoint, model, {"step": step, "tokens": tokens, "seconds": time.time() - t_start,
                                                    "answer_losses": answer_losses},  # not yet logged
                            optimizer=opt, generator=gen)
    steplog.close()
    return last, time.time() - t_start


def pretrain(cfg: PretrainConfig, *, resume: bool = False, progress: bool = True) -> dict:
    """Train and write the model folder `cfg.out`; returns the run summary (also in provenance.json)."""
    if cfg.autocast not in ("none", "bfloat16"):
        raise LongRopeError(f"--autocast must be none or bfloat16, got {cfg.autocast!r}")
    torch.set_num_threads(cfg.threads)
    # the output and work folders were prepared (marker, lock, --overwrite: `io.prepare_output`) by
    # the command before this call; here their paths are laid out and a resume checked, first
    run = RunFolder(cfg.out, cfg.work)
    run.check_resume(resume)
    run.work.mkdir(parents=True, exist_ok=True)
    data = _data(cfg, run, resume)
    model = _model(cfg, data)
    model.train()
    opt = adamw(model, cfg.lr, cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    state = {"step": 0, "tokens": 0, "seconds": 0.0}
    if resume:
        load_weights(run.checkpoint, model)
        load_state(run.checkpoint, optimizer=opt, generator=gen)
        state = run.read_state()
    run.start(resume, state["step"])
    cpu_start = time.process_time()
    last, wall = _train(cfg, run, model, opt, gen, data, state, progress)
    val_loss = last.get("val_loss") if "val_loss" in last else round(evaluate(model, data.val), 6)
    summary = _summary(cfg, model, data, last, val_loss, wall, time.process_time() - cpu_start, run.log)
    _write_output(run.out, model, data.tok, cfg, summary, run.log)
    return summary


def _summary(cfg: PretrainConfig, model, data: _Data, last: dict, val_loss: float, wall: float,
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
