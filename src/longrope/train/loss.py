"""The causal-LM training loss as a module, over the one LM-head path (`longrope.lm_head`).

The decoder runs once for the hidden states; the family's LM head (final-logit transforms included,
as evaluation applies them) and the cross-entropy then run chunk by chunk under
`torch.utils.checkpoint` (`lm_head.chunked_nll`): peak logit memory is `chunk x vocab`.

`CausalLMLoss` wraps a Hugging Face causal LM in a module whose `forward` returns the loss, so the
data-parallel engines (DDP, FSDP, DeepSpeed through `accelerate`) see one ordinary forward pass.
"""
from __future__ import annotations

import torch
from torch import nn

from ..lm_head import IGNORE, LMHead, chunked_nll, shifted_targets

__all__ = ["CausalLMLoss", "shifted_targets"]


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
        # the head is looked up at each forward: under FSDP/DeepSpeed its module is the wrapped one
        nll = chunked_nll(LMHead(self.lm), hidden, targets, self.chunk)
        return nll, (targets != IGNORE).sum()
