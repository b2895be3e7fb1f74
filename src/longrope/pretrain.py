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

import torch

from .errors import LongRopeError
from .progress import Progress
from .io import append_line, atomic_dir, atomic_path, read_json_object, write_json


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
        self.min_len = len(tok(prompt_text(0, 0.0, 50000)[0])["input_ids"])
        if cfg.passkey_share > 0 and self.min_len + 8 > cfg.window:
            raise LongRopeError(f"a {cfg.window}-token window cannot hold a passkey sample "
                                f"(needs {self.min_len + 8} tokens); use --passkey-share 0")

    def _prompt(self, length: int, depth: float, key: int, seed: int) -> list[int]:
        return self.passkey_prompt(self.tok, length, depth, key, seed=seed).input_ids.tolist()

    def _rand(self, hi: int) -> int:
        return int(torch.randint(hi, (1,), generator=self.gen))

    def passkey_sample(self) -> tuple[list[int], list[int], int]:
        w = self.cfg.window
        key = 1 + self._rand(50000)
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
    """Mean next-token loss with answer tokens weighted `weight`; also the plain answer-token loss."""
    lg, lab, ans = logits[:, :-1].float(), labels[:, 1:], answer[:, 1:]
    nll = torch.nn.functional.cross_entropy(lg.reshape(-1, lg.size(-1)), lab.reshape(-1), ignore_index=-100,
                                            reduction="none").view_as(lab)
    scored = (lab != -100).float()
    w = scored + (weight - 1.0) * ans.float() * scored
    loss = (nll * w).sum() / w.sum()
    n_ans = int(ans.sum())
    return loss, (float(nll.detach()[ans].mean()) if n_ans else None)


def _lr_at(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


@torch.no_grad()
def evaluate(model, samples: list[torch.Tensor], batch: int = 8) -> float:
    """Mean next-token loss (nats) over `samples`."""
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(samples), batch):
        x = torch.stack(samples[i:i + batch])
        logits = model(input_ids=x).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1),
                                                 reduction="sum")
        total += float(loss)
        n += x[:, 1:].numel()
    model.train()
    return total / n


def _corpus(cfg: PretrainConfig):
    """Train and validation documents: the source's own splits (`longrope.data.sources`)."""
    from .data import load_documents

    return load_documents(cfg.data, "train"), load_documents(cfg.data, "validation")


def _save_checkpoint(ckpt: Path, model, opt, gen, step: int, tokens: int, seconds: float) -> None:
    from safetensors.torch import save_model

    with atomic_dir(ckpt) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        torch.save({"generator": gen.get_state()}, tmp / "rng.pt")
        write_json(tmp / "state.json", {"step": step, "tokens": tokens, "seconds": seconds})


def pretrain(cfg: PretrainConfig, *, resume: bool = False, progress: bool = True) -> dict:
    """Train and write the model folder `cfg.out`; returns the run summary (also in provenance.json)."""
    from safetensors.torch import load_model
    from transformers import AutoTokenizer, LlamaForCausalLM

    from .data.bpe import train_bpe

    if cfg.autocast not in ("none", "bfloat16"):
        raise LongRopeError(f"--autocast must be none or bfloat16, got {cfg.autocast!r}")
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    work = Path(cfg.work) if cfg.work else out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    log, ckpt, tok_dir = work / "log.jsonl", work / "checkpoint", work / "tokenizer"
    if resume and not (ckpt / "state.json").is_file():
        raise LongRopeError(f"nothing to resume: no checkpoint in {ckpt}")
    if resume:  # a damaged checkpoint is refused before the tokenizer and data work
        read_json_object(ckpt / "state.json", ("step", "tokens", "seconds"))
    if not resume and log.exists():
        log.unlink()

    t0 = time.time()
    from .data import build_samples, tokenize_documents

    train_docs, val_docs = _corpus(cfg)
    init_info = None
    if cfg.init:
        from .models import load_tokenizer, resolve

        init = resolve(cfg.init)
        tok = load_tokenizer(init)  # one line when the folder has no usable tokenizer
        if (init / "provenance.json").is_file():
            init_info = json.loads((init / "provenance.json").read_text())
    elif resume and (tok_dir / "tokenizer.json").is_file():
        tok = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
    else:
        tok = train_bpe([d.text for d in train_docs], cfg.vocab_size)
        with atomic_dir(tok_dir) as tmp:
            tok.save_pretrained(tmp)
    train_ids = tokenize_documents(train_docs, tok, cfg.cache_dir)
    val_ids = tokenize_documents(val_docs, tok, cfg.cache_dir)
    sep = [tok.eos_token_id, tok.bos_token_id]
    stream = torch.tensor([t for i, ids in enumerate(train_ids) for t in ((sep if i else []) + ids)])
    if len(stream) < cfg.window * 4:
        raise LongRopeError(f"the training data holds {len(stream):,} tokens, too few for {cfg.window}-token samples")
    val = build_samples(val_ids, cfg.window, None, mode="join", bos_id=tok.bos_token_id,
                        sep_id=tok.eos_token_id, seed=cfg.seed)
    val.tensors = val.tensors[:cfg.eval_samples]
    prep_seconds = time.time() - t0

    torch.manual_seed(cfg.seed)  # weight init draws from the global generator inside transformers
    if cfg.init:  # a second stage: the given model's config and weights, in float32
        model = LlamaForCausalLM.from_pretrained(init, dtype=torch.float32, local_files_only=True)
        if model.config.max_position_embeddings != cfg.window:
            raise LongRopeError(f"--window {cfg.window} differs from the window of {init} "
                                f"({model.config.max_position_embeddings})")
        mc = model.config
        cfg.layers, cfg.hidden, cfg.heads = mc.num_hidden_layers, mc.hidden_size, mc.num_attention_heads
        cfg.intermediate, cfg.vocab_size, cfg.head_dim = mc.intermediate_size, mc.vocab_size, mc.head_dim
    else:
        model = LlamaForCausalLM(model_config(cfg, len(tok)))
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(cfg.seed)
    step, tokens, seconds = 0, 0, 0.0
    if resume:
        state = read_json_object(ckpt / "state.json", ("step", "tokens", "seconds"))
        load_model(model, str(ckpt / "model.safetensors"))
        opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
        gen.set_state(torch.load(ckpt / "rng.pt", weights_only=True)["generator"])
        step, tokens, seconds = state["step"], state["tokens"], state["seconds"]
        _truncate_log(log, step)
    batches = Batches(stream, tok, cfg, gen)
    n_params = sum(p.numel() for p in model.parameters())
    bar = Progress(cfg.steps, "pretrain", "step", initial=step, enabled=progress)
    last, answer_losses = {}, []
    t_start = time.time() - seconds
    cpu_start = time.process_time()
    while step < cfg.steps:
        x, y, ans = batches.next()
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.autocast == "bfloat16"):
            fwd = model(input_ids=x, labels=y if cfg.passkey_weight == 1.0 else None)
        loss, answer_loss = _weighted_loss(fwd.logits, y, ans, cfg.passkey_weight)
        if fwd.loss is not None:  # weight 1: transformers' own loss (plain mean over scored tokens)
            loss = fwd.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += int((y != -100).sum())
        loss = float(loss.detach())
        if answer_loss is not None:
            answer_losses.append(answer_loss)
        last = {"step": step, "loss": round(loss, 6), "lr": opt.param_groups[0]["lr"], "tokens": tokens,
                "seconds": round(time.time() - t_start, 2)}
        if answer_losses and (step % cfg.log_every == 0 or step == cfg.steps):
            last["passkey_answer_loss"] = round(sum(answer_losses) / len(answer_losses), 4)
            answer_losses = []
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            last["val_loss"] = round(evaluate(model, val.tensors), 6)
        if step % cfg.log_every == 0 or "val_loss" in last or step == cfg.steps:
            append_line(log, json.dumps(last))
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            _save_checkpoint(ckpt, model, opt, gen, step, tokens, time.time() - t_start)
    bar.close()
    wall = time.time() - t_start
    val_loss = last.get("val_loss") if "val_loss" in last else round(evaluate(model, val.tensors), 6)
    summary = {
        "command": cfg.command, "seed": cfg.seed, "config": {k: v for k, v in asdict(cfg).items()
                                                              if k not in ("command", "extra")},
        "parameters": n_params, "steps": step, "tokens_seen": tokens,
        "final_train_loss": _mean_recent(log, 20), "final_val_loss": val_loss,
        "final_val_ppl_256": round(math.exp(val_loss), 4), "train_seconds": round(wall, 1),
        "train_cpu_seconds_this_process": round(time.process_time() - cpu_start, 1),
        "prep_seconds": round(prep_seconds, 1), "python": sys.version.split()[0],
        "platform": platform.platform(), "torch": torch.__version__, "threads": cfg.threads,
        "corpus": {"source": cfg.data or "builtin",
                   "train": {"docs": len(train_ids), "tokens": sum(map(len, train_ids))},
                   "validation": {"docs": len(val_ids), "tokens": sum(map(len, val_ids))}},
        **({"init_from": str(cfg.init), "init_provenance": init_info} if cfg.init else {}),
        **cfg.extra,
    }
    _write_output(out, model, tok, cfg, summary, log)
    return summary


def _mean_recent(log: Path, n: int) -> float | None:
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    rows = rows[-n:]
    return round(sum(r["loss"] for r in rows) / len(rows), 4) if rows else None


def _truncate_log(log: Path, step: int) -> None:
    """Drop log lines past the checkpoint, so a resumed run's log reads as one run."""
    if not log.exists():
        return
    keep = [line for line in log.read_text().splitlines() if json.loads(line)["step"] <= step]
    with atomic_path(log) as tmp:
        tmp.write_text("".join(line + "\n" for line in keep))


def _write_output(out: Path, model, tok, cfg: PretrainConfig, summary: dict, log: Path) -> None:
    from .models import torch_dtype

    model.eval()
    with atomic_dir(out, "pretrain") as tmp:
        model.to(torch_dtype(cfg.save_dtype)).save_pretrained(tmp, safe_serialization=True)
        model.to(torch.float32)
        tok.save_pretrained(tmp)
        write_json(tmp / "provenance.json", summary)
        shutil.copyfile(log, tmp / "train_log.jsonl")
