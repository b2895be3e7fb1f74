"""Continued pre-training at a longer length with a RoPE scaling applied (`longrope finetune`).

The model is patched with `longrope.apply(model, scaling)` (the rotary module is swapped; its
tables are non-persistent buffers, the parameters are the model's own) and trained on documents
joined with EOS/BOS into `length`-token samples. AdamW, linear warm-up then linear decay
(paper: lr 2e-5), gradient accumulation, gradient checkpointing, optional bf16 autocast, and the
loss in chunks over the sequence (`longrope.train.loss`).

Distribution goes through `accelerate`: a plain run is one process; under `torchrun` or
`accelerate launch` (DDP, FSDP, DeepSpeed configs) each process takes its share of every global
batch, so the global batch and the losses are those of the single-process run. The data order is a
function of (seed, step) only, which is what makes resume exact.

Work folder (`OUT.work` unless told): `log.jsonl` (one line per step) and `checkpoint/` (weights as
safetensors; optimizer, scheduler and RNG state via torch.save, read back with weights_only=True;
`state.json`), each checkpoint replaced atomically. The output folder holds the fine-tuned weights
(save_pretrained), the tokenizer, `longrope_scaling.json` (apply it again when using the model, or
turn it into a stock config with `longrope export`), `finetune.json` and the loss log.
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import LongRopeError
from ..io import append_line, atomic_dir, atomic_path, write_json

# fields that decide the trajectory: a resume with any of them changed is refused
_FINGERPRINT = ("model", "scaling", "length", "steps", "data", "split", "batch_size", "micro_batch", "lr",
                "warmup", "min_lr_ratio", "weight_decay", "max_grad_norm", "bf16", "loss_chunk", "seed",
                "mixed_window", "passkey_share")


@dataclass
class FinetuneConfig:
    out: str
    model: str = "builtin"
    scaling: str = "none"
    length: int = 512
    steps: int = 100
    data: str | None = None
    split: str = "train"
    work: str | None = None
    batch_size: int = 8  # global: samples per optimizer step, whatever the number of processes
    micro_batch: int = 1  # samples per forward pass in one process
    lr: float = 2e-5
    warmup: int | None = None  # None: min(20, steps // 10)
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    bf16: bool = False
    gradient_checkpointing: bool = True
    loss_chunk: int = 1024  # tokens per LM-head chunk; 0 = full logits at once
    checkpoint_every: int = 50
    seed: int = 0
    mixed_window: float = 0.0  # LongRoPE2: share of micro-batches trained in original-window pieces
    passkey_share: float = 0.0  # share of samples that are synthetic passkey prompts with their answer
    device: str = "cpu"
    threads: int | None = None
    cache_dir: str | None = None
    trust_remote_code: bool = False
    command: str = ""

    def validate(self) -> None:
        for name in ("length", "steps", "batch_size", "micro_batch"):
            if getattr(self, name) < 1:
                raise LongRopeError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.length < 2:
            raise LongRopeError(f"--length must be at least 2 tokens, got {self.length}")
        if self.batch_size % self.micro_batch:
            raise LongRopeError(f"--batch-size {self.batch_size} is not a multiple of --micro-batch {self.micro_batch}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise LongRopeError(f"--lr must be a positive number, got {self.lr}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise LongRopeError(f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        for name in ("weight_decay", "max_grad_norm", "loss_chunk"):
            if not getattr(self, name) >= 0:
                raise LongRopeError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.warmup is not None and self.warmup < 0:
            raise LongRopeError(f"--warmup must be >= 0, got {self.warmup}")
        if not 0.0 <= self.mixed_window < 1.0:
            raise LongRopeError(f"--mixed-window must be in [0, 1), got {self.mixed_window}")
        if not 0.0 <= self.passkey_share < 1.0:
            raise LongRopeError(f"--passkey-share must be in [0, 1), got {self.passkey_share}")
        if self.checkpoint_every < 0:
            raise LongRopeError(f"--checkpoint-every must be >= 0, got {self.checkpoint_every}")

    @property
    def warmup_steps(self) -> int:
        return min(self.warmup if self.warmup is not None else min(20, self.steps // 10), self.steps)

    def fingerprint(self) -> dict:
        d = asdict(self)
        return {k: d[k] for k in _FINGERPRINT}


def lr_factor(step: int, cfg: FinetuneConfig) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): linear warm-up, linear decay."""
    warm = cfg.warmup_steps
    if step < warm:
        return (step + 1) / warm
    span = max(cfg.steps - warm, 1)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * (cfg.steps - step) / span


# -- data -------------------------------------------------------------------------------------
def training_samples(cfg: FinetuneConfig, tok) -> torch.Tensor:
    """[n, length] token ids: documents joined with EOS BOS into BOS-first samples (seeded)."""
    from ..data import build_samples, load_documents, tokenize_documents

    docs = load_documents(cfg.data, split=cfg.split)
    ids = tokenize_documents(docs, tok, cfg.cache_dir)
    bos, eos = tok.bos_token_id, tok.eos_token_id
    try:  # enough data for every step without repeating: build just that many
        samples = build_samples(ids, cfg.length, cfg.steps * cfg.batch_size, mode="join", bos_id=bos,
                                sep_id=eos, seed=cfg.seed)
    except LongRopeError:  # fewer: as many as the data hold, repeated in a new order each epoch
        samples = build_samples(ids, cfg.length, None, mode="join", bos_id=bos, sep_id=eos, seed=cfg.seed)
    if len(samples) < cfg.batch_size:
        raise LongRopeError(f"the data hold {sum(map(len, ids)):,} tokens: {len(samples)} samples of "
                            f"{cfg.length:,} tokens, fewer than one batch of {cfg.batch_size}")
    stacked = torch.stack(samples.tensors)  # [n, length]
    if cfg.passkey_share > 0:
        from ..data.passkey import mix_passkey_samples
        stacked = mix_passkey_samples(tok, stacked, cfg.passkey_share, seed=cfg.seed)
    return stacked


class BatchPlan:
    """Which samples each process trains on at each step, and which micro-batches are short-window.

    Global step s takes samples s*B .. s*B+B-1 of an endless stream: epoch e is a permutation of all
    samples drawn from torch.Generator(seed, e). The B samples form B/m micro-batches; process r of W
    takes the r-th contiguous share. Nothing depends on earlier steps, so a resume needs only `s`."""

    def __init__(self, samples: torch.Tensor, cfg: FinetuneConfig, rank: int, world: int):
        self.samples, self.cfg, self.rank, self.world = samples, cfg, rank, world
        micros = cfg.batch_size // cfg.micro_batch
        if micros % world:
            raise LongRopeError(f"--batch-size {cfg.batch_size} / --micro-batch {cfg.micro_batch} = {micros} "
                                f"micro-batches per step cannot be split over {world} processes")
        self.micros_per_rank = micros // world
        self._perms: dict[int, torch.Tensor] = {}

    def _index(self, i: int) -> int:
        n = len(self.samples)
        epoch, pos = divmod(i, n)
        if epoch not in self._perms:
            gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(n, generator=gen)}
        return int(self._perms[epoch][pos])

    def short_flags(self, step: int) -> list[bool]:
        """For every micro-batch of the global step: trained with the original rotation?"""
        micros = self.cfg.batch_size // self.cfg.micro_batch
        if self.cfg.mixed_window <= 0:
            return [False] * micros
        gen = torch.Generator().manual_seed(self.cfg.seed * 7_919 + step + 1)
        return (torch.rand(micros, generator=gen) < self.cfg.mixed_window).tolist()

    def micro_batches(self, step: int) -> list[tuple[torch.Tensor, bool]]:
        m, flags = self.cfg.micro_batch, self.short_flags(step)
        out = []
        for k in range(self.rank * self.micros_per_rank, (self.rank + 1) * self.micros_per_rank):
            first = step * self.cfg.batch_size + k * m
            rows = [self._index(first + j) for j in range(m)]
            out.append((self.samples[rows], flags[k]))
        return out


def short_pieces(x: torch.Tensor, window: int) -> torch.Tensor:
    """[m, N] -> [m * N//w, w]: independent original-window sequences (positions restart at 0),
    i.e. a block-diagonal attention mask; a tail shorter than the window is dropped."""
    w = min(window, x.shape[1])
    n = (x.shape[1] // w) * w
    return x[:, :n].reshape(-1, w)


# -- checkpoints --------------------------------------------------------------------------------
def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(ckpt: Path, lm, opt, sched, state: dict, weights: dict | None = None) -> None:
    """Weights (safetensors), optimizer, scheduler and RNG state, replaced atomically. `weights` is the
    gathered full state dict under a sharded engine (FSDP, DeepSpeed), whose optimizer state is not
    saved (it is sharded): a resume there restarts AdamW's moments."""
    from safetensors.torch import save_file, save_model

    with atomic_dir(ckpt) as tmp:
        if weights is None:
            save_model(lm, str(tmp / "model.safetensors"))
            torch.save(opt.state_dict(), tmp / "optimizer.pt")
        else:
            save_file({k: v.detach().cpu().contiguous().clone() for k, v in weights.items()},
                      str(tmp / "model.safetensors"))
        torch.save(sched.state_dict(), tmp / "scheduler.pt")
        torch.save(_rng_state(), tmp / "rng.pt")
        write_json(tmp / "state.json", state)


def load_checkpoint_weights(ckpt: Path, lm, cfg: FinetuneConfig) -> dict:
    """Check the checkpoint was made with these settings, load its weights into `lm` (before the
    engine wraps it); returns state.json."""
    from safetensors.torch import load_file, load_model

    state = json.loads((ckpt / "state.json").read_text())
    if state.get("config") != cfg.fingerprint():
        changed = sorted(k for k, v in cfg.fingerprint().items() if state.get("config", {}).get(k) != v)
        raise LongRopeError(f"cannot resume: the checkpoint in {ckpt} was made with different "
                            f"{', '.join(changed)}; use the same settings or a new --out/--work")
    if (ckpt / "optimizer.pt").is_file():
        load_model(lm, str(ckpt / "model.safetensors"), device=str(next(lm.parameters()).device))
    else:  # a gathered state dict from a sharded engine
        lm.load_state_dict(load_file(str(ckpt / "model.safetensors")), strict=False)
    return state


def load_checkpoint_state(ckpt: Path, opt, sched) -> bool:
    """Optimizer (when saved), scheduler and RNG state, read with weights_only=True. Returns whether
    the optimizer state was restored."""
    has_opt = (ckpt / "optimizer.pt").is_file()
    if has_opt:
        opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    sched.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
    rng = torch.load(ckpt / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return has_opt


def _truncate_log(log: Path, step: int) -> None:
    """Drop log lines past the checkpoint, so a resumed run's log reads as one run."""
    if not log.exists():
        return
    keep = [line for line in log.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    with atomic_path(log) as tmp:
        tmp.write_text("".join(line + "\n" for line in keep))


# -- the loop -----------------------------------------------------------------------------------
def finetune(cfg: FinetuneConfig, *, resume: bool = False, progress: bool = True) -> dict:
    """Fine-tune and write the model folder `cfg.out` (main process); returns the run summary."""
    from tqdm.auto import tqdm

    from ..models import load_model, load_tokenizer
    from ..patch import apply, remove, rope_dims
    from ..rope.scaling import parse_spec
    from . import engine
    from .loss import CausalLMLoss, shifted_targets

    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    work = Path(cfg.work) if cfg.work else out.with_name(out.name + ".work")
    log, ckpt = work / "log.jsonl", work / "checkpoint"
    if resume and not (ckpt / "state.json").is_file():
        raise LongRopeError(f"nothing to resume: no checkpoint in {ckpt}")

    lm = load_model(cfg.model, dtype="float32", device="cpu", trust_remote_code=cfg.trust_remote_code)
    tok = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    if tok.bos_token_id is None or tok.eos_token_id is None:
        raise LongRopeError(f"the tokenizer of {cfg.model} has no BOS or EOS token to pack documents with")
    _, _, original = rope_dims(lm)
    scaling = parse_spec(cfg.scaling, default_factor=cfg.length / original)
    apply(lm, scaling)
    samples = training_samples(cfg, tok)

    acc = engine.make_accelerator(cfg.device)
    dp_rank, dp_world = engine.data_parallel_rank(acc)
    plan = BatchPlan(samples, cfg, dp_rank, dp_world)
    acc.gradient_accumulation_steps = plan.micros_per_rank
    main = acc.is_main_process
    torch.manual_seed(cfg.seed + acc.process_index)  # dropout, if the model has any
    if cfg.gradient_checkpointing:
        if hasattr(lm, "activation_checkpointing_enable"):  # transformers >= 5.2x spelling
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lm.config.use_cache = False
    lm.train()
    decay = [p for p in lm.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in lm.parameters() if p.requires_grad and p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    step, tokens, seconds = 0, 0, 0.0
    if resume:
        st = load_checkpoint_weights(ckpt, lm, cfg)
        step, tokens, seconds = st["step"], st["tokens"], st["seconds"]
    model, popt = engine.prepare(acc, CausalLMLoss(lm, cfg.loss_chunk), opt, cfg.micro_batch)
    sharded = engine.sharded(acc)
    if resume:
        if not load_checkpoint_state(ckpt, opt, sched) and main:
            print("longrope finetune: note: the checkpoint holds no optimizer state (the engine "
                  "shards it); AdamW moments restart", file=sys.stderr)
        if main:
            _truncate_log(log, step)
    elif main:
        work.mkdir(parents=True, exist_ok=True)
        log.unlink(missing_ok=True)
    acc.wait_for_everyone()

    bf16 = cfg.bf16 and (acc.device.type != "cuda" or torch.cuda.is_bf16_supported())
    bar = tqdm(total=cfg.steps, initial=step, disable=(not progress or not main) or None,
               desc="finetune", unit="step")
    t_start = time.time() - seconds
    last: dict = {}
    while step < cfg.steps:
        lr_used = sched.get_last_lr()[0]
        local = torch.zeros(2, device=acc.device)  # [sum of micro-batch mean losses, scored tokens]
        for x, short in plan.micro_batches(step):
            if short:
                remove(lm)
                x = short_pieces(x, original)
            x = x.to(acc.device)
            y = shifted_targets(x)  # shifted before any sequence split, so every slice has its targets
            pos = torch.arange(x.shape[1], device=acc.device).expand_as(x).contiguous()
            try:
                with acc.accumulate(model), engine.context_parallel(acc, x, y, pos), \
                        torch.autocast(acc.device.type, dtype=torch.bfloat16, enabled=bf16):
                    nll, count = model(x, targets=y, position_ids=pos)
                    loss = nll / count  # every micro-batch has the same weight
                    acc.backward(loss)
            finally:
                if short:
                    apply(lm, scaling)
            local += torch.stack([loss.detach().float(), count.float()])
            if acc.sync_gradients:
                if cfg.max_grad_norm > 0:
                    acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                popt.step()
                sched.step()
                popt.zero_grad(set_to_none=True)
        total = acc.reduce(local, reduction="sum")
        step += 1
        tokens += int(total[1])
        loss_value = float(total[0]) / (cfg.batch_size // cfg.micro_batch * engine.copies_per_sample(acc))
        if not math.isfinite(loss_value):
            raise LongRopeError(f"the loss became {loss_value} at step {step}; lower --lr or turn off --bf16")
        last = {"step": step, "loss": loss_value, "lr": lr_used, "tokens": tokens,
                "seconds": round(time.time() - t_start, 3)}
        if main:
            append_line(log, json.dumps(last))
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            acc.wait_for_everyone()
            weights = engine.full_weights(acc, model) if sharded else None  # collective: every process
            if main:
                save_checkpoint(ckpt, lm, opt, sched, {"step": step, "tokens": tokens, "seconds": last["seconds"],
                                                       "config": cfg.fingerprint()}, weights)
            acc.wait_for_everyone()
    bar.close()
    summary = {"command": cfg.command, "config": {k: v for k, v in asdict(cfg).items() if k != "command"},
               "scaling": scaling.describe(), "original_window": original, "processes": acc.num_processes, "main": main,
               "engine": str(acc.distributed_type).split(".")[-1],
               "samples": len(samples), "steps": step, "tokens_seen": tokens,
               "final_loss": last.get("loss"), "seconds": last.get("seconds", seconds),
               "torch": torch.__version__}
    acc.wait_for_everyone()
    weights = engine.full_weights(acc, model) if sharded else None
    if main:
        _write_output(out, lm, tok, scaling, summary, log, weights)
    acc.wait_for_everyone()
    acc.end_training()
    return summary


def _write_output(out: Path, lm, tok, scaling, summary: dict, log: Path, weights: dict | None = None) -> None:
    from dataclasses import replace

    lm.eval()
    record = replace(scaling, provenance={**scaling.provenance, "finetuned": {
        k: summary["config"][k] for k in ("model", "length", "steps", "lr", "batch_size", "data", "seed",
                                         "mixed_window", "passkey_share")}})
    with atomic_dir(out) as tmp:
        lm.save_pretrained(tmp, safe_serialization=True, state_dict=weights)
        tok.save_pretrained(tmp)
        record.save(tmp / "longrope_scaling.json")
        write_json(tmp / "finetune.json", summary)
        if log.exists():
            shutil.copyfile(log, tmp / "finetune_log.jsonl")
