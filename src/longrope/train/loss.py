"""The causal-LM loss computed in chunks over the sequence, so [tokens, vocab] logits never exist at once.

The decoder runs once for the hidden states; the LM head and the cross-entropy then run chunk by
chunk under `torch.utils.checkpoint`, which keeps only each chunk's hidden states for the backward
pass and recomputes its logits there. Peak logit memory is `chunk x vocab` instead of `N x vocab`.

`CausalLMLoss` wraps a Hugging Face causal LM in a module whose `forward` returns the loss, so the
data-parallel engines (DDP, FSDP, DeepSpeed through `accelerate`) see one ordinary forward pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

IGNORE = -100


def _head_nll(head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()  # as transformers' ForCausalLMLoss: the loss in float32
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")


def chunked_nll(head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
    """Summed next-token NLL of `labels` given `hidden` [batch, seq, dim] (already aligned: hidden[:, t]
    predicts labels[:, t]). `chunk` <= 0 computes the full logits in one piece."""
    seq = hidden.shape[1]
    if chunk <= 0 or chunk >= seq:
        return _head_nll(head, hidden, labels)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, seq, chunk):
        h, y = hidden[:, start:start + chunk], labels[:, start:start + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            total = total + checkpoint(_head_nll, head, h, y, use_reentrant=False)
        else:
            total = total + _head_nll(head, h, y)
    return total


def shifted_targets(labels: torch.Tensor) -> torch.Tensor:
    """Next-token targets aligned with the positions: targets[:, t] = labels[:, t+1], the last -100."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE)


class CausalLMLoss(nn.Module):
    """`forward(input_ids[, labels, position_ids, targets]) -> (nll_sum, scored_tokens)` for the LM.

    Labels default to `input_ids`; as in transformers, position t predicts token t+1 and label
    -100 is not scored. `targets` are labels already shifted (`shifted_targets`): the form that
    survives a split of the sequence over processes (context parallelism). The LM stays reachable
    as `.lm` (save it, patch it, switch checkpointing)."""

    def __init__(self, lm: nn.Module, chunk: int = 1024):
        super().__init__()
        self.lm = lm
        self.chunk = chunk

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None,
                targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if targets is None:
            targets = shifted_targets(input_ids if labels is None else labels)
        decoder = self.lm.get_decoder()
        out = decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False)
        hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
        nll = chunked_nll(self.lm.get_output_embeddings(), hidden, targets, self.chunk)
        return nll, (targets != IGNORE).sum()
