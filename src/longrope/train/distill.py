"""Distillation to the frozen starting model on original-window pieces (`finetune --distill W`).

Long fine-tuning costs the model some of its quality inside the original window (issue 13). With
`distill` > 0 every micro-batch adds `distill x KL(teacher || student)` to its loss, the KL averaged
over the positions of a few original-window pieces cut from the micro-batch's own samples:

- the pieces: the samples cut into `window`-token pieces (`short_pieces`: positions restart at 0), of
  which a `distill_share` (at least one) is chosen by a generator seeded with (seed, step, global
  micro-batch index): a function of the batch plan only, so a resumed run and every process count
  pick the same pieces;
- the student scores them with the original rotation (the scaling removed for that pass, as the
  model runs below its window), the teacher (a frozen copy of the starting weights, never patched,
  under `torch.no_grad`) likewise; the logits of both go through `lm_head.chunked_kl`, so the
  memory stays `chunk x vocab` per model.

The teacher is not a submodule of the trained module: the engines do not wrap, shard or save it; it
is rebuilt from `--model` on resume. It costs one more copy of the weights (bfloat16 with `--bf16`).
"""
from __future__ import annotations

import copy

import torch

from ..errors import LongRopeError
from ..lm_head import LMHead, chunked_kl
from .data import short_pieces
from .loss import CausalLMLoss


def frozen_copy(lm: torch.nn.Module, bf16: bool = False) -> torch.nn.Module:
    """The teacher: a copy of `lm` as it is now (call before any scaling is applied), no gradients."""
    from ..patch import current

    if current(lm) is not None:
        raise LongRopeError("the distillation teacher must be copied before a scaling is applied")
    teacher = copy.deepcopy(lm)
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher.to(torch.bfloat16) if bf16 else teacher


def pick_pieces(x: torch.Tensor, window: int, share: float, seed: int, step: int, micro: int) -> torch.Tensor:
    """[k, window] original-window pieces of the micro-batch `x` [m, N] for the KL term: a `share` of
    them (at least one), chosen by a generator seeded with (seed, step, micro), in their order."""
    pieces = short_pieces(x, window)
    k = min(len(pieces), max(1, round(share * len(pieces))))
    gen = torch.Generator().manual_seed(((seed * 1_000_003 + step) * 65_537 + micro) % (2 ** 63))
    rows = torch.randperm(len(pieces), generator=gen)[:k].sort().values
    return pieces[rows]


class DistillLoss(CausalLMLoss):
    """`CausalLMLoss` plus the KL term: `forward(..., short_ids=P)` returns
    `(nll_sum, scored_tokens, kl_sum, kl_positions)`, the KL over every position of the pieces P
    [k, window] between the teacher and the student, both with the original rotation."""

    def __init__(self, lm: torch.nn.Module, chunk: int, teacher: torch.nn.Module):
        super().__init__(lm, chunk)
        self.__dict__["teacher"] = teacher  # not a submodule: not trained, wrapped, sharded or saved

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, targets: torch.Tensor | None = None,
                short_ids: torch.Tensor | None = None, short_pos: torch.Tensor | None = None):
        nll, count = super().forward(input_ids, labels, position_ids, targets)
        if short_ids is None:
            zero = nll.new_zeros(())
            return nll, count, zero, zero
        return nll, count, self.short_kl(short_ids, short_pos), nll.new_tensor(float(short_ids.numel()))

    def short_kl(self, ids: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """Summed KL(teacher || student) over the positions of `ids` [k, w] (at `pos`, default
        0 .. w-1: a slice of the pieces under sequence parallelism), original rotation."""
        from ..patch import unscaled

        if pos is None:
            pos = torch.arange(ids.shape[1], device=ids.device).expand_as(ids).contiguous()
        # the backward pass recomputes from the saved rotary tables, not from the module
        with unscaled(self.lm):
            hidden = _last_hidden(self.lm.get_decoder()(input_ids=ids, position_ids=pos, use_cache=False))
        teacher = self.__dict__["teacher"]
        with torch.no_grad():
            t_hidden = _last_hidden(teacher.get_decoder()(input_ids=ids, position_ids=pos, use_cache=False))
        return chunked_kl(LMHead(self.lm), hidden, LMHead(teacher), t_hidden, self.chunk)


def _last_hidden(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out.last_hidden_state
