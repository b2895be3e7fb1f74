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

import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import LongRopeError
from ..io import atomic_dir, write_json
from .distill import DistillLoss, frozen_copy, pick_pieces
from .toolkit import (RunFolder, StepLog, adamw, load_state, load_weights, lr_at,
                      save_checkpoint)

_logger = logging.getLogger(__name__)

# fields that decide the trajectory: a resume with any of them changed is refused
_FINGERPRINT = ("model", "scaling", "length", "steps", "data", "split", "batch_size", "micro_batch", "lr",
                "warmup", "min_lr_ratio", "weight_decay", "max_grad_norm", "bf16", "loss_chunk", "seed",
                "mixed_window", "passkey_share", "distill", "distill_share")


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
    distill: float = 0.0  # weight of KL(frozen start || student) on original-window pieces (train.distill)
    distill_share: float = 0.25  # share of each micro-batch's original-window pieces in that term
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
        if not (self.distill >= 0 and math.isfinite(self.distill)):
            raise LongRopeError(f"--distill must be a number >= 0, got {self.distill}")
        if not 0.0 < self.distill_share <= 1.0:
            raise LongRopeError(f"--distill-share must be in (0, 1], got {self.distill_share}")
        if self.checkpoint_every < 0:
            raise LongRopeError(f"--checkpoint-every must be >= 0, got {self.checkpoint_every}")
        if self.threads is not None and self.threads < 1:
            raise LongRopeError(f"--threads must be positive, got {self.threads}")

    @property
    def warmup_steps(self) -> int:
        return min(self.warmup if self.warmup is not None else min(20, self.steps // 10), self.steps)

    def fingerprint(self) -> dict:
        d = asdict(self)
        return {k: d[k] for k in _FINGERPRINT}


def lr_factor(step: int, cfg: FinetuneConfig) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): linear warm-up, linear decay."""
    return lr_at(step, 1.0, steps=cfg.steps, warmup=cfg.warmup_steps, min_ratio=cfg.min_lr_ratio, shape="linear")


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
        self.my_micros = range(rank * self.micros_per_rank, (rank + 1) * self.micros_per_rank)
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
        for k in self.my_micros:
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
def _check_fingerprint(run: RunFolder, cfg: FinetuneConfig) -> dict:
    """state.json of the checkpoint, refused when it was made with other trajectory settings."""
    state = run.read_state()
    if state.get("config") != cfg.fingerprint():
        changed = sorted(k for k, v in cfg.fingerprint().items() if state.get("config", {}).get(k) != v)
        raise LongRopeError(f"cannot resume: the checkpoint in {run.checkpoint} was made with different "
                            f"{', '.join(changed)}; use the same settings or a new --out/--work")
    return state


# -- the run, step by step ----------------------------------------------------------------------
@dataclass
class _Run:
    """What the steps of one fine-tuning run share."""
    cfg: FinetuneConfig
    lm: Any
    tok: Any
    scaling: Any
    original: int
    samples: torch.Tensor
    teacher: Any = None  # the frozen starting model when distilling
    acc: Any = None
    plan: BatchPlan | None = None
    model: Any = None  # CausalLMLoss(lm) as the engine wrapped it
    opt: Any = None
    popt: Any = None  # the optimizer as the engine wrapped it
    sched: Any = None
    step: int = 0
    tokens: int = 0
    seconds: float = 0.0


def _load(cfg: FinetuneConfig) -> _Run:
    """The model with the scaling applied, its tokenizer and the training samples."""
    from ..models import load_model, load_tokenizer
    from ..patch import apply, rope_dims
    from ..rope.spec import parse_spec

    lm = load_model(cfg.model, dtype="float32", device="cpu", trust_remote_code=cfg.trust_remote_code)
    tok = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    if tok.bos_token_id is None or tok.eos_token_id is None:
        raise LongRopeError(f"the tokenizer of {cfg.model} has no BOS or EOS token to pack documents with")
    _, _, original = rope_dims(lm)
    scaling = parse_spec(cfg.scaling, default_factor=cfg.length / original)
    teacher = frozen_copy(lm, cfg.bf16) if cfg.distill > 0 else None
    apply(lm, scaling)
    return _Run(cfg, lm, tok, scaling, original, training_samples(cfg, tok), teacher)


def _set_up(r: _Run, run: RunFolder, resume: bool, log: Callable[[str], None]) -> None:
    """Engine, batch plan, optimizer and schedule; on resume the checkpoint's weights and state."""
    from . import engine
    from .loss import CausalLMLoss

    cfg, lm = r.cfg, r.lm
    r.acc = engine.make_accelerator(cfg.device)
    r.plan = BatchPlan(r.samples, cfg, *engine.data_parallel_rank(r.acc))
    r.acc.gradient_accumulation_steps = r.plan.micros_per_rank
    torch.manual_seed(cfg.seed + r.acc.process_index)  # dropout, if the model has any
    if cfg.gradient_checkpointing:
        if hasattr(lm, "activation_checkpointing_enable"):  # transformers >= 5.2x spelling
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lm.config.use_cache = False
    lm.train()
    r.opt = adamw(lm, cfg.lr, cfg.weight_decay)
    r.sched = torch.optim.lr_scheduler.LambdaLR(r.opt, lambda s: lr_factor(s, cfg))
    if resume:
        st = _check_fingerprint(run, cfg)
        load_weights(run.checkpoint, lm)
        r.step, r.tokens, r.seconds = st["step"], st["tokens"], st["seconds"]
    if r.teacher is not None and engine.copies_per_sample(r.acc) > 1:
        raise LongRopeError("--distill is not wired with context parallelism (cp_size > 1)")
    module = CausalLMLoss(lm, cfg.loss_chunk) if r.teacher is None else \
        DistillLoss(lm, cfg.loss_chunk, r.teacher.to(r.acc.device))
    r.model, r.popt = engine.prepare(r.acc, module, r.opt, cfg.micro_batch)
    main = r.acc.is_main_process
    if resume and not load_state(run.checkpoint, optimizer=r.opt, scheduler=r.sched) and main:
        log("longrope finetune: note: the checkpoint holds no optimizer state (the engine shards it); "
            "AdamW moments restart")
    if main:
        run.start(resume, r.step)
    r.acc.wait_for_everyone()


def _train_step(r: _Run, bf16: bool) -> tuple[float, int, float]:
    """One optimizer step over this process's micro-batches: (mean micro-batch LM loss, scored tokens,
    mean micro-batch KL to the teacher), summed over all processes."""
    from ..patch import apply, remove
    from . import engine
    from .loss import shifted_targets

    acc, cfg = r.acc, r.cfg
    local = torch.zeros(3, device=acc.device)  # [sum of micro-batch mean losses, scored tokens, sum of KLs]
    for k, (x, short) in zip(r.plan.my_micros, r.plan.micro_batches(r.step)):
        extra = {}
        if r.teacher is not None:
            extra["short_ids"] = pick_pieces(x, r.original, cfg.distill_share, cfg.seed, r.step, k).to(acc.device)
        if short:
            remove(r.lm)
            x = short_pieces(x, r.original)
        x = x.to(acc.device)
        y = shifted_targets(x)  # shifted before any sequence split, so every slice has its targets
        pos = torch.arange(x.shape[1], device=acc.device).expand_as(x).contiguous()
        try:
            with acc.accumulate(r.model), engine.context_parallel(acc, x, y, pos), \
                    torch.autocast(acc.device.type, dtype=torch.bfloat16, enabled=bf16):
                nll, count, *kl = r.model(x, targets=y, position_ids=pos, **extra)
                loss = nll / count  # every micro-batch has the same weight
                kl = kl[0] / kl[1] if extra else loss.new_zeros(())
                acc.backward(loss + cfg.distill * kl if extra else loss)
        finally:
            if short:
                apply(r.lm, r.scaling)
        local += torch.stack([loss.detach().float(), count.float(), kl.detach().float()])
        if acc.sync_gradients:
            if cfg.max_grad_norm > 0:
                acc.clip_grad_norm_(r.model.parameters(), cfg.max_grad_norm)
            r.popt.step()
            r.sched.step()
            r.popt.zero_grad(set_to_none=True)
    total = acc.reduce(local, reduction="sum")
    micros = cfg.batch_size // cfg.micro_batch * engine.copies_per_sample(acc)
    return float(total[0]) / micros, int(total[1]), float(total[2]) / micros


def _checkpoint(r: _Run, run: RunFolder, seconds: float) -> None:
    """Save a checkpoint (collective: every process takes part under a sharded engine)."""
    from . import engine

    r.acc.wait_for_everyone()
    weights = engine.full_weights(r.acc, r.model) if engine.sharded(r.acc) else None
    if r.acc.is_main_process:
        state = {"step": r.step, "tokens": r.tokens, "seconds": seconds, "config": r.cfg.fingerprint()}
        save_checkpoint(run.checkpoint, r.lm, state, optimizer=r.opt, scheduler=r.sched, weights=weights)
    r.acc.wait_for_everyone()


def _train(r: _Run, run: RunFolder, progress: bool) -> dict:
    """The steps from `r.step` to the end; returns the last log row."""
    cfg, acc = r.cfg, r.acc
    bf16 = cfg.bf16 and (acc.device.type != "cuda" or torch.cuda.is_bf16_supported())
    steplog = StepLog(run.log, total=cfg.steps, initial=r.step, desc="finetune",
                      show=progress and acc.is_main_process, write=acc.is_main_process)
    t_start = time.time() - r.seconds
    last: dict = {}
    while r.step < cfg.steps:
        lr_used = r.sched.get_last_lr()[0]
        loss_value, count, kl = _train_step(r, bf16)
        r.step += 1
        r.tokens += count
        if not math.isfinite(loss_value):
            raise LongRopeError(f"the loss became {loss_value} at step {r.step}; lower --lr or turn off --bf16")
        last = {"step": r.step, "loss": loss_value, "lr": lr_used, "tokens": r.tokens,
                "seconds": round(time.time() - t_start, 3), **({"kl": kl} if r.teacher is not None else {})}
        steplog.step(last, loss_value)
        if cfg.checkpoint_every and r.step % cfg.checkpoint_every == 0 and r.step < cfg.steps:
            _checkpoint(r, run, last["seconds"])
    steplog.close()
    return last


def finetune(cfg: FinetuneConfig, *, resume: bool = False, progress: bool = True,
             log: Callable[[str], None] | None = None) -> dict:
    """Fine-tune and write the model folder `cfg.out` (main process); returns the run summary.
    `log` takes the run's notes (default: this module's logger, as warnings)."""
    from . import engine

    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # the output and work folders were prepared (marker, lock, --overwrite: `io.prepare_output`) by
    # the command before this call; here their paths are laid out and a resume checked, first
    run = RunFolder(cfg.out, cfg.work)
    run.check_resume(resume)
    r = _load(cfg)
    _set_up(r, run, resume, log or _logger.warning)
    last = _train(r, run, progress)
    acc = r.acc
    summary = {"command": cfg.command, "config": {k: v for k, v in asdict(cfg).items() if k != "command"},
               "scaling": r.scaling.describe(), "original_window": r.original, "processes": acc.num_processes,
               "main": acc.is_main_process, "engine": str(acc.distributed_type).split(".")[-1],
               "samples": len(r.samples), "steps": r.step, "tokens_seen": r.tokens,
               "final_loss": last.get("loss"), "seconds": last.get("seconds", r.seconds),
               "torch": torch.__version__}
    acc.wait_for_everyone()
    weights = engine.full_weights(acc, r.model) if engine.sharded(acc) else None
    if acc.is_main_process:
        _write_output(run.out, r.lm, r.tok, r.scaling, summary, run.log, weights)
    acc.wait_for_everyone()
    acc.end_training()
    engine.settle(acc)
    return summary


def _write_output(out: Path, lm, tok, scaling, summary: dict, log: Path, weights: dict | None = None) -> None:
    from dataclasses import replace

    lm.eval()
    record = replace(scaling, provenance={**scaling.provenance, "finetuned": {
        k: summary["config"][k] for k in ("model", "length", "steps", "lr", "batch_size", "data", "seed",
                                         "mixed_window", "passkey_share", "distill")}})
    with atomic_dir(out, "finetune") as tmp:
        lm.save_pretrained(tmp, safe_serialization=True, state_dict=weights)
        tok.save_pretrained(tmp)
        record.save(tmp / "longrope_scaling.json")
        write_json(tmp / "finetune.json", summary)
        if log.exists():
            shutil.copyfile(log, tmp / "finetune_log.jsonl")
