"""The training mechanics shared by fine-tuning (`train.finetune`) and pre-training (`pretrain`).

- `RunFolder`: the work folder (`OUT.work` unless told) with `log.jsonl` and `checkpoint/`; where
  a run first looks at its output paths (resume or fresh start).
- `adamw`: AdamW over two parameter groups, weight decay on matrices only (no decay on norms and
  biases), betas (0.9, 0.95).
- `lr_at`: the learning-rate schedule, linear warm-up then a linear or cosine decay to
  `min_ratio x peak`.
- `save_checkpoint` / `load_weights` / `read_optimizer` / `load_state`: weights as safetensors (loaded
  back only when every name matches); optimizer, scheduler and RNG state (global torch and CUDA
  generators, and the data generator when there is one) with torch.save, read back with
  weights_only=True; `state.json` (read back checked, `read_json_object`); each checkpoint replaced
  atomically (`atomic_dir`).
- `StepLog`: the progress (`longrope.progress`: a bar in a terminal, plain lines elsewhere) and the
  JSON-lines loss log, truncated past the checkpoint on resume
  so a resumed run's log reads as one run.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..errors import LongRopeError
from ..io import append_line, atomic_dir, atomic_path, read_json_object, write_json


class RunFolder:
    """`work` (default: `out` + '.work') holding `log.jsonl` and `checkpoint/`."""

    def __init__(self, out: str | Path, work: str | Path | None = None):
        self.out = Path(out)
        self.work = Path(work) if work else self.out.with_name(self.out.name + ".work")
        self.log = self.work / "log.jsonl"
        self.checkpoint = self.work / "checkpoint"

    def check_resume(self, resume: bool) -> None:
        if resume and not (self.checkpoint / "state.json").is_file():
            raise LongRopeError(f"nothing to resume: no checkpoint in {self.checkpoint}")
        if resume:  # a damaged checkpoint is refused before the model, tokenizer and data work
            self.read_state()

    def start(self, resume: bool, step: int) -> None:
        """A fresh run: the work folder made, an old log dropped. A resumed run: the log cut at `step`."""
        if resume:
            truncate_log(self.log, step)
        else:
            self.work.mkdir(parents=True, exist_ok=True)
            self.log.unlink(missing_ok=True)

    def read_state(self) -> dict:
        """The checkpoint's state.json, checked: one line when it is unreadable or not a state file."""
        return read_json_object(self.checkpoint / "state.json", ("step", "tokens", "seconds"))


def adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on the trainable matrices only (not on norms, biases, scalars)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))


def lr_at(step: int, peak: float, *, steps: int, warmup: int, min_ratio: float, shape: str) -> float:
    """Learning rate at optimizer step `step` (0-based): linear warm-up over `warmup` steps to `peak`,
    then `shape` 'linear' (to min_ratio x peak one step past the end) or 'cosine' (to min_ratio x peak
    at the end). With peak 1.0 it is the multiplier a LambdaLR takes."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if shape == "linear":
        return peak * (min_ratio + (1.0 - min_ratio) * (steps - step) / max(steps - warmup, 1))
    if shape == "cosine":
        t = (step - warmup) / max(steps - warmup, 1)
        return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))
    raise ValueError(f"unknown lr schedule shape {shape!r}")


# -- checkpoints --------------------------------------------------------------------------------
def rng_state(generator: torch.Generator | None = None) -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def save_checkpoint(ckpt: Path, weights: dict, state: dict, *, optimizer: dict | None = None, scheduler=None,
                    generator: torch.Generator | None = None) -> None:
    """Weights (a full state dict, as safetensors), the optimizer's state dict (when given), scheduler
    and RNG state and `state.json`, replaced atomically. Under a sharded engine the caller gathers
    `weights` and `optimizer` first (`train.engine`); tied weights are stored once."""
    from safetensors.torch import save_file

    with atomic_dir(ckpt) as tmp:
        save_file(_untied(weights), str(tmp / "model.safetensors"))
        if optimizer is not None:
            torch.save(optimizer, tmp / "optimizer.pt")
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(generator), tmp / "rng.pt")
        write_json(tmp / "state.json", state)


def _untied(weights: dict) -> dict:
    """CPU copies of the tensors, one per storage: a tied weight keeps its first name only."""
    out, seen = {}, set()
    for name, t in weights.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.device.type != "meta" else name
        if key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().cpu().contiguous().clone()
    return out


def load_weights(ckpt: Path, model) -> None:
    """The checkpoint's weights into `model` (before an engine wraps it). Every name must match: a
    name missing (other than the second name of a tied weight) or unexpected is refused in one line,
    never loaded partly."""
    from safetensors.torch import load_file

    path = ckpt / "model.safetensors"
    try:
        loaded = load_file(str(path))
    except FileNotFoundError:
        raise LongRopeError(f"cannot resume: the checkpoint lacks {path}") from None
    except Exception as e:  # safetensors raises its own error types for a damaged file
        raise LongRopeError(f"cannot resume: {path} is damaged ({type(e).__name__})") from None
    own = model.state_dict()
    storages: dict = {}
    for name, t in own.items():
        storages.setdefault(t.untyped_storage().data_ptr(), []).append(name)
    missing = [n for n in own if n not in loaded and not any(
        m in loaded for m in storages[own[n].untyped_storage().data_ptr()])]
    unexpected = [n for n in loaded if n not in own]
    if missing or unexpected:
        raise LongRopeError(f"cannot resume: {path} does not match the model ({_names('missing', missing)}"
                            f"{'; ' if missing and unexpected else ''}{_names('unexpected', unexpected)})")
    try:
        model.load_state_dict(loaded, strict=False)  # names checked above; the tied second names follow
    except RuntimeError as e:  # shapes
        raise LongRopeError(f"cannot resume: {path} does not fit the model: "
                            f"{str(e).strip().splitlines()[-1].strip()}") from None


def _names(kind: str, names: list[str]) -> str:
    if not names:
        return ""
    return f"{len(names)} {kind} name{'s' * (len(names) > 1)}, e.g. {', '.join(names[:2])}"


def read_optimizer(ckpt: Path) -> dict | None:
    """The optimizer's state dict saved with the checkpoint, or None when it holds none."""
    return _load_pt(ckpt / "optimizer.pt") if (ckpt / "optimizer.pt").is_file() else None


def load_state(ckpt: Path, *, scheduler=None, generator: torch.Generator | None = None) -> None:
    """Scheduler and RNG state (global torch and CUDA generators, and `generator`), read with
    weights_only=True."""
    if scheduler is not None:
        scheduler.load_state_dict(_load_pt(ckpt / "scheduler.pt"))
    rng = _load_pt(ckpt / "rng.pt")
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if generator is not None:
        generator.set_state(rng["generator"])


# -- logging ------------------------------------------------------------------------------------
def truncate_log(log: Path, step: int) -> None:
    """Drop log lines past the checkpoint, so a resumed run's log reads as one run."""
    if not log.exists():
        return
    keep = [line for line in log.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    with atomic_path(log) as tmp:
        tmp.write_text("".join(line + "\n" for line in keep))


class StepLog:
    """The progress bar (`show`: drawn at all) and the JSON-lines log (`write`: this process writes)."""

    def __init__(self, log: Path, *, total: int, initial: int, desc: str, show: bool, write: bool = True,
                 postfix: str = "{:.4f}"):
        from ..progress import Progress

        self.log, self.write, self.postfix = log, write, postfix
        self.bar = Progress(total, desc, "step", initial=initial, enabled=show)

    def step(self, row: dict | None, loss: float) -> None:
        """One optimizer step done; `row` (when given) goes to the log."""
        if row is not None and self.write:
            append_line(self.log, json.dumps(row))
        self.bar.update(1)
        self.bar.set_postfix(loss=self.postfix.format(loss))

    def close(self) -> None:
        self.bar.close()


def _load_pt(path: Path):
    """A checkpoint part saved with torch.save, read back without pickle code (weights_only); a
    truncated, damaged or foreign file is one line naming it, not a traceback."""
    try:
        return torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise LongRopeError(f"cannot resume: the checkpoint lacks {path}") from None
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a bad file
        raise LongRopeError(f"cannot resume: {path} is damaged or not a longrope checkpoint part "
                            f"({type(e).__name__}); remove the work folder's checkpoint or start a new run") from None
