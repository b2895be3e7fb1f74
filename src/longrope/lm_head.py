"""The family's logits from hidden states and the next-token NLL over them: the one LM-head path.

Evaluation (`eval.perplexity`, hence the search objective), fine-tuning (`train.loss`) and
pre-training (`pretrain`) all score through `LMHead`, so training optimises the logits evaluation
scores: the output embedding (with its bias) followed by the family's final-logit transforms,
Cohere's `logit_scale` and Granite's `logits_scaling` (a multiplier and a divisor) and Gemma-2/3's
`final_logit_softcapping` (`cap * tanh(logits / cap)`), in float32 as transformers' loss takes them.

`token_nll` is the cross-entropy over those logits (label -100 is not scored); `chunked_nll` sums
it chunk by chunk over the sequence under `torch.utils.checkpoint`, so the `[tokens, vocab]` logits
never exist at once, neither in the forward nor in the backward pass. `chunked_kl` does the same
for KL(teacher || student) between two models' heads (distillation, `train.distill`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .errors import LongRopeError

IGNORE = -100


class LMHead:
    """`head(hidden) -> float32 logits` of `model`, the final logit transforms included. The output
    embedding module is called (not its weight read once), so engine hooks (FSDP, offloading) and
    tied weights behave as in the model's own forward."""

    def __init__(self, model):
        lin = model.get_output_embeddings()
        if lin is None or not hasattr(lin, "weight"):
            raise LongRopeError(f"{type(model).__name__} has no output embedding (LM head) to score with")
        self.module = lin
        cfg = model.config
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        self.softcap = getattr(cfg, "final_logit_softcapping", None)
        self.mult = float(getattr(cfg, "logit_scale", None) or 1.0)
        div = getattr(cfg, "logits_scaling", None)
        if div:
            self.mult /= float(div)

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.module(hidden).float()
        if self.mult != 1.0:
            logits = logits * self.mult
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def token_nll(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "none") -> torch.Tensor:
    """Cross-entropy of `targets` [..., n] under `logits` [..., n, vocab]; -100 is not scored.
    reduction 'none' keeps the targets' shape (0 where not scored); 'sum' and 'mean' as torch."""
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                          ignore_index=IGNORE, reduction=reduction)
    return nll.view(targets.shape) if reduction == "none" else nll


def shifted_targets(labels: torch.Tensor) -> torch.Tensor:
    """Next-token targets aligned with the positions: targets[:, t] = labels[:, t+1], the last -100."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE)


def _head_nll_sum(head: LMHead, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return token_nll(head(hidden), targets, "sum")


def _chunked_sum(fn, head: LMHead, hidden: torch.Tensor, other, chunk: int) -> torch.Tensor:
    """sum of fn(head, hidden_chunk, *other_chunks) over `chunk`-position slices of `hidden`
    [batch, seq, dim] and of each tensor in `other` (sliced alike, non-tensors passed whole); each
    chunk's logits are recomputed in the backward pass. `chunk` <= 0 runs `fn` once on everything."""
    seq = hidden.shape[1]
    if chunk <= 0 or chunk >= seq:
        return fn(head, hidden, *other)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, seq, chunk):
        h = hidden[:, start:start + chunk]
        rest = [o[:, start:start + chunk] if isinstance(o, torch.Tensor) else o for o in other]
        if torch.is_grad_enabled() and h.requires_grad:
            total = total + checkpoint(fn, head, h, *rest, use_reentrant=False)
        else:
            total = total + fn(head, h, *rest)
    return total


def chunked_nll(head: LMHead, hidden: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
    """Summed NLL of `targets` given `hidden` [batch, seq, dim] (aligned: hidden[:, t] predicts
    targets[:, t]), `chunk` positions at a time, each chunk's logits recomputed in the backward pass.
    `chunk` <= 0 computes the full logits in one piece."""
    return _chunked_sum(_head_nll_sum, head, hidden, (targets,), chunk)


def _head_kl_sum(head: LMHead, hidden: torch.Tensor, teacher: LMHead, teacher_hidden: torch.Tensor) -> torch.Tensor:
    student = F.log_softmax(head(hidden), dim=-1)
    with torch.no_grad():
        target = F.log_softmax(teacher(teacher_hidden), dim=-1)
    return F.kl_div(student, target, reduction="sum", log_target=True)


def chunked_kl(head: LMHead, hidden: torch.Tensor, teacher: LMHead, teacher_hidden: torch.Tensor,
               chunk: int) -> torch.Tensor:
    """Summed KL(teacher || student) over every position of `hidden` [batch, seq, dim] (the student's,
    through `head`) against `teacher_hidden` through `teacher` (no gradient), `chunk` positions at a
    time with each chunk's logits recomputed in the backward pass, as `chunked_nll`."""
    return _chunked_sum(_head_kl_sum, head, hidden, (teacher, teacher_hidden), chunk)
