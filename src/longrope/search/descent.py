"""Gradient descent on the rescale factors: the search's first phase, independent of models.

`descend(value_and_grad, space, start, steps=..., lr=..., lr_end=...)` minimises a function of the
factor vector, `value_and_grad(factors) -> (value, d log(value) / d log(factors))` (for the search:
perplexity and the gradient of its log, `gradient.FactorGradient`). It runs Adam on u = log lambda
with the learning rate cosine-decayed from `lr` to `lr_end`, and after every step puts u back into
the space: fixed pairs to their value, free pairs into their bounds, then non-decreasing (a running
maximum). It works off the grid; `best` is the best point it evaluated, and the evolution that
follows takes it (snapped to the grid) as a seed.

Every step evaluates the current point before moving, so the value of each point is exact and the
best point is known without extra passes: `steps` calls to `value_and_grad` in all. After every
step `on_step(state)` receives a JSON-serialisable state; `descend(..., state=s)` continues from it
and ends exactly as the uninterrupted run would.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import LongRopeError
from .space import Space

FORMAT = "longrope-descent/1"
ValueAndGrad = Callable[[np.ndarray], tuple[float, np.ndarray]]


@dataclass
class DescentResult:
    best: np.ndarray  # factors of the best evaluated point (off the grid)
    value: float
    steps: int
    history: list[dict]  # one record per step: step, lr, value
    state: dict


def project(u: np.ndarray, space: Space) -> np.ndarray:
    """log factors back into the space: fixed pairs exact, free pairs clipped, a ramp's pairs
    (i / cd) * u_cd (LongRoPE2's lambda_cd ** (i / cd), off the grid), non-decreasing."""
    lo, hi = np.log(space.lo), np.log(space.hi)
    v = np.where(space.fixed, lo, np.clip(u, lo, hi))
    if space.ramp is not None:
        v[:space.ramp] = _ramp_weights(space) * v[space.ramp]
    return np.maximum.accumulate(v)


def _ramp_weights(space: Space) -> np.ndarray:
    return np.arange(space.ramp) / space.ramp


def tie_gradient(grad: np.ndarray, space: Space) -> np.ndarray:
    """The gradient in the space's own coordinates: with a ramp, the pairs below the critical pair
    move only through it (chain rule: d/du_cd gains sum_i (i / cd) * d/du_i), their own part zero."""
    if space.ramp is None:
        return grad
    g = np.array(grad, dtype=np.float64)
    cd = space.ramp
    g[cd] += float(np.dot(_ramp_weights(space), g[:cd]))
    g[:cd] = 0.0
    return g


def lr_at(step: int, steps: int, lr: float, lr_end: float) -> float:
    """Cosine decay from `lr` (step 0) to `lr_end` (the last step)."""
    if steps <= 1:
        return lr
    return lr_end + 0.5 * (lr - lr_end) * (1.0 + math.cos(math.pi * step / (steps - 1)))


def descend(value_and_grad: ValueAndGrad, space: Space, start: Sequence[float], *, steps: int,
            lr: float = 0.05, lr_end: float = 0.005, state: dict | None = None,
            on_step: Callable[[dict], None] | None = None) -> DescentResult:
    """Minimise over the space's factor vectors from `start`; see the module docstring."""
    if steps < 1 or not lr > 0 or not lr_end >= 0:
        raise LongRopeError(f"descent needs steps >= 1, lr > 0 and lr_end >= 0 (got {steps}, {lr}, {lr_end})")
    settings = {"steps": steps, "lr": lr, "lr_end": lr_end, "start": [float(x) for x in start],
                "space": space.describe()}
    u = torch.tensor(project(np.log(np.asarray(start, dtype=np.float64)), space), dtype=torch.float64)
    u.requires_grad_(True)
    opt = torch.optim.Adam([u], lr=lr)
    history: list[dict] = []
    best_u, best_v, first = u.detach().numpy().copy(), math.inf, 0
    if state is not None:
        if state.get("format") != FORMAT or state.get("settings") != settings:
            raise LongRopeError("the saved descent was made with different settings")
        with torch.no_grad():
            u.copy_(torch.tensor(state["u"], dtype=torch.float64))
        _load_adam(opt, u, state["adam"])
        history, first = list(state["history"]), state["step"] + 1
        best_u, best_v = np.asarray(state["best_u"], dtype=np.float64), float(state["best_value"])
    final = state
    for step in range(first, steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, lr_end)
        x = u.detach().numpy().copy()
        value, grad = value_and_grad(np.exp(x))
        value = float(value)
        history.append({"step": step, "lr": opt.param_groups[0]["lr"],
                        "value": value if math.isfinite(value) else repr(value)})
        if math.isfinite(value) and value < best_v:
            best_u, best_v = x, value
        grad = tie_gradient(np.asarray(grad, dtype=np.float64), space)
        if not np.all(np.isfinite(grad)):
            grad = np.zeros_like(grad)  # a non-finite step: stay, let the schedule move on
        opt.zero_grad()
        u.grad = torch.tensor(grad, dtype=torch.float64)
        opt.step()
        with torch.no_grad():
            u.copy_(torch.tensor(project(u.detach().numpy(), space)))
        final = _state(settings, step, u, opt, history, best_u, best_v)
        if on_step:
            on_step(final)
    return DescentResult(best=np.exp(best_u), value=best_v, steps=steps, history=history, state=final)


def _state(settings, step, u, opt, history, best_u, best_v) -> dict:
    st = opt.state[u]
    adam = {"step": float(st["step"]), "exp_avg": st["exp_avg"].tolist(),
            "exp_avg_sq": st["exp_avg_sq"].tolist()} if st else None
    return {"format": FORMAT, "settings": settings, "step": step, "u": u.detach().tolist(), "adam": adam,
            "history": list(history), "best_u": [float(x) for x in best_u],
            "best_value": best_v if math.isfinite(best_v) else repr(best_v)}


def _load_adam(opt: torch.optim.Adam, u: torch.Tensor, adam: dict | None) -> None:
    if adam is None:
        return
    opt.state[u] = {"step": torch.tensor(adam["step"]),
                    "exp_avg": torch.tensor(adam["exp_avg"], dtype=torch.float64),
                    "exp_avg_sq": torch.tensor(adam["exp_avg_sq"], dtype=torch.float64)}
