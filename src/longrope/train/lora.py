"""LoRA fine-tuning through `peft` (`finetune --lora-rank R`): the adapters, their checkpoints, the merge.

Why: full fine-tuning of a 7B model needs ~116 GB before activations (float32 weights, gradients and
AdamW's two moments); with LoRA only the adapters train, the frozen base can be bfloat16, and one GPU
holds the run. `wrap` puts peft's adapters on the target linear layers *in place*: the model object
stays the Hugging Face model, so longrope's rotary patch, the mixed windows, distillation and the loss
see it unchanged. The adapters keep float32 master weights (peft's autocast_adapter_dtype).

The output of a LoRA run is a plain model folder: `merge` folds each adapter into its weight
(W + alpha / r * B A) and removes peft's layers, so stock transformers loads it without peft. The
adapter itself is saved beside it in OUT/adapter (peft's format: adapter_config.json naming the base,
adapter_model.safetensors), and `models.load_model` reads such a folder too (`base_of`), merging on load, so
`longrope export --model OUT/adapter` writes the same plain model. Checkpoints hold the trainable
weights only (`trainable_state`), with the optimizer state: a resume is exact.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import LongRopeError

INSTALL_HINT = "LoRA fine-tuning needs peft: pip install 'longrope[lora]'"
ADAPTER_DIR = "adapter"


def require_peft():
    try:
        import peft
    except ImportError:
        raise LongRopeError(INSTALL_HINT) from None
    return peft


def targets_of(text: str) -> str | list[str]:
    """`all-linear` (every linear layer but the output head, peft's spelling) or comma-separated module
    names (q_proj,v_proj)."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise LongRopeError("--lora-targets is empty; give module names (q_proj,v_proj) or all-linear")
    return "all-linear" if names == ["all-linear"] else names


def check(rank: int, alpha: float | None, targets: str) -> None:
    """The LoRA options' values (peft checked for only when a rank is asked for)."""
    if rank < 0:
        raise LongRopeError(f"--lora-rank must be >= 0 (0: full fine-tuning), got {rank}")
    if alpha is not None and not alpha > 0:
        raise LongRopeError(f"--lora-alpha must be positive, got {alpha}")
    targets_of(targets)
    if rank:
        require_peft()


def wrap(lm: torch.nn.Module, *, rank: int, alpha: float | None, targets: str, base: str):
    """The peft model around `lm`, whose target layers now carry rank-`rank` adapters (scale alpha / r,
    alpha default 2r); only they train. `base`: the base model's path, recorded in the adapter's config."""
    peft = require_peft()
    config = peft.LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else 2.0 * rank,
                             target_modules=targets_of(targets), lora_dropout=0.0, bias="none",
                             task_type="CAUSAL_LM", base_model_name_or_path=base)
    try:
        model = peft.get_peft_model(lm, config)
    except ValueError as e:  # no module matched the targets
        raise LongRopeError(f"--lora-targets {targets}: {str(e).splitlines()[0]}") from None
    return model


def trainable_state(lm: torch.nn.Module) -> dict[str, torch.Tensor]:
    """{name: tensor} of the trainable parameters (the adapters): what a LoRA checkpoint holds."""
    return {n: p.detach() for n, p in lm.named_parameters() if p.requires_grad}


def counts(lm: torch.nn.Module) -> dict[str, int]:
    """Trainable and total parameters (an adapter's A and B counted once each)."""
    ps = list(lm.parameters())
    return {"trainable": sum(p.numel() for p in ps if p.requires_grad), "total": sum(p.numel() for p in ps)}


def save_and_merge(peft_model, out: Path, tokenizer, scaling) -> torch.nn.Module:
    """Write OUT/adapter (peft's adapter_config.json naming the base and adapter_model.safetensors, the
    tokenizer and longrope_scaling.json: a folder `load_model` reads), then return the merged model."""
    folder = Path(out) / ADAPTER_DIR
    peft_model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(folder)
    scaling.save(folder / "longrope_scaling.json")
    return merge(peft_model)


def merge(peft_model) -> torch.nn.Module:
    """The plain model: every adapter folded into its weight, peft's layers gone."""
    return peft_model.merge_and_unload()


def base_of(path: Path) -> str:
    try:
        base = json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError):
        raise LongRopeError(f"{path}/adapter_config.json names no base model (base_model_name_or_path)") from None
    if not base:
        raise LongRopeError(f"{path}/adapter_config.json names no base model (base_model_name_or_path)")
    return str(base)
