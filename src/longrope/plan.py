"""`longrope extend --dry-run`: the recipe's plan with lengths, scale factors and a cost estimate.

Cost model (per token): forward 2*P + 2*layers*hidden*L FLOPs (weights, plus causal attention
over a context of L), training 4x forward (backward 2x, recomputation with gradient checkpointing
1x). A search counts what its settings run at most: the initial population on all documents, then
per generation every child on the screening documents and the promoted share on all of them
(early stopping only makes it shorter). Times are given for this machine and for the recipe's
`model_shape.gpus` GPUs at `model_shape.tflops_per_gpu` effective TFLOP/s (default 8 x 100).

This machine's rate is measured now, on the recipe's own model when it is here and small enough to
load in a moment (a forward pass at a short length: the rate real work gets, overheads included),
else on a float32 matmul. Calibration: the demo (builtin-8x) took 4 min 29 s on an idle 2-core
machine (search 205 s, short 4 s, compare ~60 s); the same machine's `--dry-run` then estimates
about 6 min (the compare estimate counts every passkey prompt as a full forward pass and the
search assumes no early stop).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .errors import LongRopeError
from .recipe import Recipe, length as recipe_length
from .schema import parse_length


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
        rope = getattr(cfg, "rope_parameters", None) or {}
        if not (rope.get("rope_theta") or getattr(cfg, "rope_theta", None)):
            raise LongRopeError(f"{recipe.model} ({cfg.model_type}) has no rotary position embedding (RoPE) "
                                "in its config; longrope extends RoPE models only")
        head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        kv = getattr(cfg, "num_key_value_heads", cfg.num_attention_heads)
        per_layer = (cfg.hidden_size * head * (cfg.num_attention_heads * 2 + kv * 2)
                     + 3 * cfg.hidden_size * cfg.intermediate_size)
        params = cfg.num_hidden_layers * per_layer + 2 * cfg.vocab_size * cfg.hidden_size
        rotary_dim, _, window = rope_config(cfg)
        return Shape(params, cfg.num_hidden_layers, cfg.hidden_size, window, rotary_dim,
                     f"config of {recipe.model}")
    except LongRopeError as e:
        if "RoPE" in str(e) or "cannot read" in str(e):
            raise
        s = recipe.model_shape
        if not s:
            raise LongRopeError(f"model {recipe.model!r} is not here and the recipe has no model_shape; "
                                "pass --model PATH") from None
        return Shape(float(s["params"]), int(s["layers"]), int(s["hidden"]), int(s["window"]),
                     int(s["rotary_dim"]), "recipe model_shape")


def forward_flops(shape: Shape, tokens: float, length: int) -> float:
    return tokens * (2 * shape.params + 2 * shape.layers * shape.hidden * length)


def measured_rate(recipe: Recipe, shape: Shape, length: int, seconds: float = 1.0) -> tuple[float, str]:
    """(FLOP/s, how it was measured): forward passes of the recipe's model at `length` (capped at
    2,048) when the model is here and small (< 0.5 B parameters), else a float32 matmul."""
    if not shape.source.startswith("config") or shape.params > 5e8:
        return machine_flops(), "float32 matmul measured now"
    import torch

    from .models import load_model
    model = load_model(recipe.model)
    length = min(length, 2048)
    ids = torch.randint(0, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(ids)  # warm-up
        n, t0 = 0, time.perf_counter()
        while n < 1 or time.perf_counter() - t0 < seconds:
            model(ids)
            n += 1
    rate = forward_flops(shape, n * length, length) / (time.perf_counter() - t0)
    return rate, f"forward passes of {recipe.model} at {length} tokens measured now"


# The demo (builtin-8x on the idle 2-core machine of docs/results/builtin-8x-before-filter) recorded its search
# stage: 1,344 single-document passes of 2,048 tokens (16 x 4 initial + 40 generations x (16 x 1
# screening + 4 x 4 promoted)) in 205 s. That rate, in this cost model, is the reference machine's.
REFERENCE_RUN = {"passes": 1344, "length": 2048, "seconds": 205.0}


def reference_rate() -> float:
    """FLOP/s of the demo's 2-core reference machine, calibrated on its recorded search stage."""
    shape = model_shape(Recipe(name="builtin", stages=[], model="builtin"))
    r = REFERENCE_RUN
    return forward_flops(shape, r["passes"] * r["length"], r["length"]) / r["seconds"]


def machine_flops(seconds: float = 0.3) -> float:
    """This machine's float32 matmul rate, measured now (FLOP/s)."""
    import torch
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return n * 2 * 512 ** 3 / (time.perf_counter() - t0)


def stage_cost(recipe: Recipe, stage, shape: Shape, original: int, last_target: int) -> tuple[str, float]:
    """(one-line description, FLOPs) of a stage, from its validated config (the defaults it runs with)."""
    from .recipe import Context, ExportConfig, compare_config, finetune_config, search_config
    from .schema import build
    ctx = Context(model=recipe.model, scaling="factors.json", original=original)
    if stage.kind in ("search", "short"):
        from .search.cost import search_cost
        c = search_config(recipe, stage, ctx).resolved()
        length = c.target_length
        cost = search_cost(c, shape)  # the same bound the search log states
        passes = cost["pass_equivalents"]
        screened = f" + {cost['screened']:,} screening" if cost["screened"] else ""
        descent = (f" after {c.descent_steps} descent steps ({cost['descent_passes']:,} forward + backward passes)"
                   if cost["descent_passes"] else "")
        head = (f"search factors at {length} tokens (s = {length / original:g}), preset {c.preset}"
                if stage.kind == "search" else f"short factors at {length} tokens for the {last_target}-token factors")
        what = (f"{head}, <= {cost['evaluations']:,} full{screened} evaluations{descent}, "
                f"{passes:,.0f} forward-pass equivalents, "
                f"{cost['tokens']:,} tokens; ~{cost['gpu_hours_at_paper_scale']:,.0f} GPU-h at the paper's "
                "scale (LLaMA2-7B, 128k, 5 docs)")
        return what, forward_flops(shape, passes * length, length)
    if stage.kind == "finetune":
        c = finetune_config(recipe, stage, ctx, Path("x"))
        extras = "".join(f", {k.replace('_', ' ')} {getattr(c, k)}" for k in ("passkey_share", "mixed_window", "distill")
                         if getattr(c, k))
        return (f"fine-tune {c.steps} steps x {c.batch_size} x {c.length} tokens, lr {c.lr}{extras}",
                4 * forward_flops(shape, c.steps * c.batch_size * c.length, c.length))
    if stage.kind == "compare":
        c = compare_config(recipe, stage)
        methods = len(c.methods) + 1 + len(c.final_methods)
        keys = set(c.passkey_lengths or c.lengths)

        def per_length(n):
            return methods * (c.docs + (c.passkey_trials * len(c.depths) if n in keys else 0))
        where = f" at {', '.join(map(str, sorted(keys)))}" if c.passkey_lengths else ""
        return (f"compare {methods} methods at {', '.join(map(str, c.lengths))} tokens, {c.docs} docs, "
                f"passkey {c.passkey_trials} x {len(c.depths)} depths{where}"), sum(
                    forward_flops(shape, per_length(n) * n, n) for n in c.lengths)
    c = build(ExportConfig, f"stage {stage.name}", **stage.options)
    return (f"export the model with the final factors (drop_n_hat={c.drop_n_hat}, "
            f"drop_short_attention={c.drop_short_attention})"), 0.0


def describe_plan(recipe: Recipe) -> str:
    shape = model_shape(recipe)
    longest = max([parse_length(recipe_length(recipe, st.options["target_length"])) for st in recipe.stages
                   if st.kind == "search"] or [shape.window])
    here, how = measured_rate(recipe, shape, longest)
    gpus = int(recipe.model_shape.get("gpus", 8))
    gpu_rate = gpus * float(recipe.model_shape.get("tflops_per_gpu", 100.0)) * 1e12
    lines = [f"recipe {recipe.name}: model {recipe.model} ({shape.params / 1e6:,.1f} M parameters, window "
             f"{shape.window}, rotary dim {shape.rotary_dim}; from {shape.source}), data {recipe.data or 'builtin'}, "
             f"seed {recipe.seed}", recipe.description.strip() or ""]
    total, target, model = 0.0, shape.window, "the base model"
    for st in recipe.stages:
        if st.kind == "search":
            target = parse_length(recipe_length(recipe, st.options["target_length"]))
        what, flops = stage_cost(recipe, st, shape, shape.window, target)
        total += flops
        lines.append(f"  {st.name:<12} on {model}: {what}; ~{flops:.2e} FLOPs, "
                     f"{_dur(flops / here)} here, {_dur(flops / gpu_rate)} on {gpus} GPUs")
        if st.kind == "finetune":
            model = f"the model fine-tuned in {st.name}"
    from .recipe import runtime
    on_cpu = all(str(runtime(recipe, st, ("device",)).get("device", "cpu")).startswith("cpu") for st in recipe.stages)
    ref = reference_rate() if on_cpu else None
    reference = (f"{_dur(total / ref)} on the demo's idle 2-core reference machine ({ref / 1e9:.0f} GFLOP/s, "
                 "calibrated on its recorded search stage), " if ref else "")
    lines.append(f"total ~{total:.2e} FLOPs: {reference}{_dur(total / here)} on this machine now "
                 f"({here / 1e9:.0f} GFLOP/s: {how}), {_dur(total / gpu_rate)} on {gpus} GPUs at "
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
