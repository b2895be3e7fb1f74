"""The search objective's gradient with respect to the rescale factors, for `descent.descend`.

The perplexity of a sample is a smooth function of the per-pair factors: position p rotates pair i
by p * theta_i / lambda_i, and autograd follows that angle through every layer. One forward and
one backward pass per sample therefore give the derivative for all pairs at once, where the
evolutionary search needs a forward pass per candidate to learn about one point.

`FactorGradient(model, samples, ...)(factors)` returns (perplexity, d log(perplexity) / d log
lambda): the perplexity is the same number the search's `Objective` reports for these factors (the
exp of the mean of the per-sample mean NLLs, the mean in sample order; with the needle or combined
objective's `terms`, of the per-sample weighted range NLLs), here for factors that need not lie on
the search grid. The model's weights get no gradient; `n_hat` and the attention scale
stay fixed. Under torchrun the samples are dealt round-robin over the processes and the sums
all-reduced, so every process gets the same value and gradient.
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .config import WHERE
from .cost import CHECKPOINT_FROM  # samples this long run their decoder layers under activation checkpointing
from .state import DESCENT_FILE, read_descent  # the descent's state after every step, for --resume


class _Rotary(nn.Module):
    """cos/sin tables of `base_inv / exp(log_factors)` (positions below n_hat unscaled), with grad."""

    def __init__(self, log_factors: torch.Tensor, base_inv: torch.Tensor, attn: float, n_hat: int):
        super().__init__()
        self.log_factors, self.base_inv, self.attn, self.n_hat = log_factors, base_inv, attn, n_hat

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, *args, **kwargs):
        from ..rope.tables import rotary_tables

        dev = x.device
        base = self.base_inv.to(dev, torch.float64)
        inv = base / torch.exp(self.log_factors.to(dev, torch.float64))  # float64 like the angles
        return rotary_tables(position_ids.to(dev), inv, self.attn, n_hat=self.n_hat, start_inv_freq=base,
                             dtype=x.dtype)


@contextlib.contextmanager
def _checkpointed_layers(model, enabled: bool):
    """Within the block each decoder layer (transformers' `GradientCheckpointingLayer`) keeps only
    its inputs for the backward pass and recomputes the rest (`torch.utils.checkpoint`, non-reentrant,
    so the gradient reaches the cos/sin tables passed in as keyword arguments). Done here rather than
    by `gradient_checkpointing_enable`, which acts only in training mode."""
    if not enabled:
        yield
        return
    from torch.utils.checkpoint import checkpoint
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    try:
        for layer in layers:
            plain = layer.forward
            layer.forward = functools.partial(checkpoint, plain, use_reentrant=False)
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)


class FactorGradient:
    """`(factors) -> (ppl, gradient of log ppl w.r.t. log factors)` over `samples`; see the module
    docstring. `passes` counts the (forward + backward) sample passes this process ran. Samples of
    `checkpoint_from` tokens or more run under activation checkpointing (memory of one layer's
    activations instead of all of them, for one more forward pass)."""

    def __init__(self, model, samples: Sequence[torch.Tensor], *, n_hat: int = 0, attn: float = 1.0,
                 chunk: int = 1024, rank: int = 0, world: int = 1, on_pass=None,
                 checkpoint_from: int = CHECKPOINT_FROM, terms=None):
        self.model, self.samples = model, list(samples)
        self.terms = tuple(tuple(t) for t in terms) if terms else None  # the objective's (longrope2.objective_terms)
        self.n_hat, self.attn, self.chunk = int(n_hat), float(attn), chunk
        self.checkpoint_from = checkpoint_from
        self.rank, self.world, self.on_pass = rank, world, on_pass
        self.passes = 0

    def __call__(self, factors) -> tuple[float, np.ndarray]:
        from .. import patch
        from ..models import model_device
        from ..rope.basis import base_inv_freq
        from ..train.loss import CausalLMLoss, shifted_targets

        log_f = torch.tensor(np.log(np.asarray(factors, dtype=np.float64)), dtype=torch.float32,
                             requires_grad=True)
        loss = CausalLMLoss(self.model, self.chunk)
        device = model_device(self.model)
        n = len(self.samples)
        total = torch.zeros((), dtype=torch.float64)
        frozen = [(p, p.requires_grad) for p in self.model.parameters()]
        try:
            for p, _ in frozen:
                p.requires_grad_(False)

            def make(dim, base, original):
                return _Rotary(log_f, base_inv_freq(dim, base), self.attn, self.n_hat)

            with patch.rotary_override(self.model, make), torch.enable_grad():
                for i in range(self.rank, n, self.world):
                    ids = self.samples[i].reshape(1, -1).to(device=device, dtype=torch.long)
                    with _checkpointed_layers(self.model, ids.shape[-1] >= self.checkpoint_from):
                        if self.terms is None:
                            nll_sum, count = loss(ids, targets=shifted_targets(ids))
                            mean = nll_sum / count
                        else:
                            mean = _terms_loss(self.model, ids, self.terms, self.chunk)
                    (mean / n).backward()
                    total += float(mean.detach())
                    self.passes += 1
                    if self.on_pass:
                        self.on_pass()
        finally:
            for p, flag in frozen:
                p.requires_grad_(flag)
        grad = log_f.grad if log_f.grad is not None else torch.zeros_like(log_f)
        packed = torch.cat([total.reshape(1), grad.double()])
        if self.world > 1:
            import torch.distributed as dist
            packed = packed.to(device)  # NCCL reduces device tensors
            dist.all_reduce(packed)
            packed = packed.cpu()
        nll = float(packed[0]) / n
        return (math.exp(nll) if nll < 700 else math.inf), packed[1:].numpy().copy()


def _terms_loss(model, ids: torch.Tensor, terms, chunk: int) -> torch.Tensor:
    """sum of weight * mean NLL over the target-position ranges (a, b) of one sample, from one
    decoder pass: target position p is predicted from the hidden state at p - 1 (as in
    `eval.perplexity`), so range (a, b) takes hidden states a-1 .. b-2."""
    from ..lm_head import LMHead, chunked_nll, shifted_targets

    out = model.get_decoder()(input_ids=ids, use_cache=False)
    hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
    targets = shifted_targets(ids)
    head = LMHead(model)
    total = hidden.new_zeros((), dtype=torch.float32)
    for a, b, w in terms:
        total = total + float(w) * chunked_nll(head, hidden[:, a - 1:b - 1], targets[:, a - 1:b - 1], chunk) / (b - a)
    return total


# ---- the search's descent phase ---------------------------------------------------------------
def _same_run(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k not in WHERE} == {k: v for k, v in b.items() if k not in WHERE}


def held(space, start, share: float):
    """(the descent's space, k): the first k = round(share * pairs) pairs (the highest frequencies)
    fixed at the start point's values (clipped to the bounds), the rest as in `space` but never below
    them. `descent.project` does the same clip in log space; here the held values stay the start's
    own floats, bit for bit. A space with a ramp holds nothing: its first pairs follow the critical
    pair's factor."""
    from .space import Space

    k = int(round(share * space.pairs))
    if k == 0 or space.ramp is not None:
        return space, 0
    x0 = np.clip(np.asarray(start, dtype=np.float64), space.lo, space.hi)
    x0[:k] = np.maximum.accumulate(x0[:k])
    lo, hi = space.lo.copy(), space.hi.copy()
    lo[:k] = hi[:k] = x0[:k]
    lo[k:] = np.maximum(lo[k:], x0[k - 1])  # x0 is within the bounds, so lo <= hi still
    return Space(lo, hi, step=space.step, n_hats=space.n_hats, attn=space.attn, mutation_prob=space.mutation_prob), k


def descent_phase(run, start) -> dict:
    """Run the descent of `run.cfg.descent_steps` steps from `start` (a `setup.SearchRun`; continuing
    OUT/descent.json of the same settings when resuming); returns what the search keeps: the best
    factors, their perplexity, the start's, and the (forward + backward) sample passes spent."""
    from dataclasses import asdict

    from ..errors import LongRopeError
    from ..io import write_json
    from .descent import descend

    cfg, path = run.cfg, run.out / DESCENT_FILE
    config = asdict(cfg)
    state = None
    doc = read_descent(run.out) if run.resume else None
    if doc is not None:
        if not _same_run(doc["config"], config):
            raise LongRopeError(f"{path} was made with different settings")
        state = doc["descent"]
    space, hold = held(run.space, start, cfg.descent_hold)
    grad = FactorGradient(run.model, run.samples, n_hat=0, attn=space.attn, chunk=cfg.chunk, rank=run.rank,
                          world=run.world, on_pass=run.bar.descent_tick, terms=run.terms)

    def on_step(st: dict) -> None:
        if run.rank == 0:
            write_json(path, {"config": config, "descent": st})

    r = descend(grad, space, start, steps=cfg.descent_steps, lr=cfg.descent_lr, lr_end=cfg.descent_lr_end,
                state=state, on_step=on_step)
    first = r.history[0]["value"] if r.history else None
    return {"factors": [float(x) for x in r.best], "ppl": r.value, "start_ppl": first, "steps": r.steps,
            "held_pairs": hold, "passes": len(r.history) * len(run.samples), "history": r.history}
