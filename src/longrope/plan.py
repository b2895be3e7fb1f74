"""`longrope extend --dry-run`: the recipe's plan with lengths, scale factors and a cost estimate.

Cost model (per token): forward 2*P + 2*layers*hidden*L FLOPs (weights, plus causal attention
over a context of L), training 4x forward (backward 2x, recomputation with gradient checkpointing
1x). Times are given for this machine (its matmul rate measured now) and for the recipe's
`model_shape.gpus` GPUs at `model_shape.tflops_per_gpu` effective TFLOP/s (default 8 x 100).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from .errors import LongRopeError
from .pipeline import Recipe


@dataclass
class Shape:
    params: float
    layers: int
    hidden: int
    window: int
    rotary_dim: int
    source: str


def model_shape(recipe: Recipe) -> Shape:
    """From the model folder when it is here, else from the recipe's model_shape."""
    from .models import load_config, rope_config, text_config
    try:
        cfg = text_config(load_config(recipe.model))
        head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        kv = getattr(cfg, "num_key_value_heads", cfg.num_attention_heads)
        per_layer = (cfg.hidden_size * head * (cfg.num_attention_heads * 2 + kv * 2)
                     + 3 * cfg.hidden_size * cfg.intermediate_size)
        params = cfg.num_hidden_layers * per_layer + 2 * cfg.vocab_size * cfg.hidden_size
        rotary_dim, _, window = rope_config(cfg)
        return Shape(params, cfg.num_hidden_layers, cfg.hidden_size, window, rotary_dim,
                     f"config of {recipe.model}")
    except LongRopeError:
        s = recipe.model_shape
        if not s:
            raise LongRopeError(f"model {recipe.model!r} is not here and the recipe has no model_shape; "
                                "pass --model PATH") from None
        return Shape(float(s["params"]), int(s["layers"]), int(s["hidden"]), int(s["window"]),
                     int(s["rotary_dim"]), "recipe model_shape")


def forward_flops(shape: Shape, tokens: float, length: int) -> float:
    return tokens * (2 * shape.params + 2 * shape.layers * shape.hidden * length)


def machine_flops(seconds: float = 0.3) -> float:
    """This machine's float32 matmul rate, measured now (FLOP/s)."""
    import torch
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return n * 2 * 512 ** 3 / (time.perf_counter() - t0)


def stage_cost(stage, shape: Shape, original: int, last_target: int) -> tuple[str, float]:
    """(one-line description, FLOPs) of a stage."""
    from .search.evolution import PRESETS
    o = stage.options
    if stage.kind in ("search", "short"):
        p = PRESETS[o.get("preset", "fast")]
        pop, it = o.get("population", p.population), o.get("iterations", p.iterations)
        evals = pop + it * (o.get("mutations", p.mutations) + o.get("crossovers", p.crossovers))
        docs = o.get("docs", 5)
        length = o["target_length"] if stage.kind == "search" else original
        what = (f"search factors at {length} tokens (s = {length / original:g}), preset {o.get('preset', 'fast')}, "
                f"<= {evals} candidates x {docs} docs" if stage.kind == "search" else
                f"short factors at {length} tokens for the {last_target}-token factors, <= {evals} candidates x {docs} docs")
        return what, forward_flops(shape, evals * docs * length, length)
    if stage.kind == "finetune":
        tokens = o["steps"] * o.get("batch_size", 8) * o["length"]
        extras = "".join(f", {k.replace('_', ' ')} {o[k]}" for k in ("passkey_share", "mixed_window") if o.get(k))
        return (f"fine-tune {o['steps']} steps x {o.get('batch_size', 8)} x {o['length']} tokens, "
                f"lr {o.get('lr', 2e-5)}{extras}"), 4 * forward_flops(shape, tokens, o["length"])
    if stage.kind == "compare":
        lengths = o.get("lengths", [])
        methods = len(o.get("methods", ["none", "pi", "ntk", "dynamic", "yarn"])) + 1
        docs, trials = o.get("docs", 4), o.get("passkey_trials", 5)
        depths = len(o.get("depths", [0, 0.25, 0.5, 0.75, 1]))
        tokens = sum(methods * (docs + trials * depths) * n for n in lengths)
        return (f"compare {methods} methods at {', '.join(map(str, lengths))} tokens, {docs} docs, "
                f"passkey {trials} x {depths} depths"), sum(
                    forward_flops(shape, methods * (docs + trials * depths) * n, n) for n in lengths) or tokens
    return (f"export the model with the final factors (drop_n_hat={bool(o.get('drop_n_hat', False))}, "
            f"drop_short_attention={bool(o.get('drop_short_attention', False))})"), 0.0


def describe_plan(recipe: Recipe) -> str:
    shape = model_shape(recipe)
    here = machine_flops()
    gpus = int(recipe.model_shape.get("gpus", 8))
    gpu_rate = gpus * float(recipe.model_shape.get("tflops_per_gpu", 100.0)) * 1e12
    lines = [f"recipe {recipe.name}: model {recipe.model} ({shape.params / 1e6:,.1f} M parameters, window "
             f"{shape.window}, rotary dim {shape.rotary_dim}; from {shape.source}), data {recipe.data or 'builtin'}, "
             f"seed {recipe.seed}", recipe.description.strip() or ""]
    total, target, model = 0.0, shape.window, "the base model"
    for st in recipe.stages:
        if st.kind == "search":
            target = st.options["target_length"]
        what, flops = stage_cost(st, shape, shape.window, target)
        total += flops
        lines.append(f"  {st.name:<12} on {model}: {what}; ~{flops:.2e} FLOPs, "
                     f"{_dur(flops / here)} here, {_dur(flops / gpu_rate)} on {gpus} GPUs")
        if st.kind == "finetune":
            model = f"the model fine-tuned in {st.name}"
    lines.append(f"total ~{total:.2e} FLOPs: {_dur(total / here)} on this machine "
                 f"({here / 1e9:.0f} GFLOP/s matmul measured), {_dur(total / gpu_rate)} on {gpus} GPUs at "
                 f"{gpu_rate / gpus / 1e12:.0f} TFLOP/s each (upper bound: early stopping and screening cut it)")
    return "\n".join(line for line in lines if line)


def _dur(seconds: float) -> str:
    if seconds < 1:
        return "< 1 s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
