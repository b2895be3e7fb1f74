"""The settings of one fine-tuning run (`longrope finetune`, a recipe's finetune stage): the schema the
command line and the recipes are built from, checked in one place."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import LongRopeError
from .toolkit import lr_at

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
    fsdp: bool = False  # shard with torch FSDP2 (train.engine); an accelerate FSDP config turns it on too
    sequence_parallel: int = 1  # processes that split each sequence (train.sequence: DeepSpeed-Ulysses)
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
        if self.sequence_parallel < 1:
            raise LongRopeError(f"--sequence-parallel must be positive, got {self.sequence_parallel}")
        if self.sequence_parallel > 1 and self.length % self.sequence_parallel:
            raise LongRopeError(f"--length {self.length} is not a multiple of --sequence-parallel "
                                f"{self.sequence_parallel}: each process takes an equal slice")
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
