"""What a search costs: evaluations, forward passes, tokens and GPU-hours, for planning.

`search_cost(cfg, model_shape)` bounds a search before it runs (early stopping and screening can
only make it cheaper); `run_cost(...)` states what a finished run spent. GPU-hours use the forward-pass FLOPs of a decoder (2 * params per token for the weights
plus 2 * layers * hidden * length for causal attention over the context) at `tflops_per_gpu`
effective TFLOP/s. "At the paper's scale" means LLaMA2-7B searched at 128k tokens on 5 documents,
the setting of LongRoPE's first search (Ding et al. 2024).
"""
from __future__ import annotations

import math
from typing import Mapping

from ..errors import LongRopeError
from .config import SearchConfig

# LLaMA2-7B: 6.74e9 parameters, 32 layers, hidden 4096.
PAPER_SHAPE = {"params": 6.74e9, "layers": 32, "hidden": 4096}
PAPER_LENGTH, PAPER_DOCS = 131072, 5
TFLOPS_PER_GPU = 100.0  # effective, an A100/H100-class GPU on long-context forward passes
BASELINES = 3  # PI, NTK and YaRN are scored on all documents before the search
# A descent step runs a forward and a backward pass per document; the backward pass costs about
# twice the forward (the usual estimate: two matrix products per forward one), so one descent
# sample pass counts as 3 forward passes in `pass_equivalents`, and 4 from CHECKPOINT_FROM tokens
# on, where the decoder layers are recomputed in the backward pass (search/gradient.py).
DESCENT_PASS = 3.0
CHECKPOINT_FROM = 8192


def descent_pass(length: int) -> float:
    """Forward passes one descent sample pass of `length` tokens counts as."""
    return DESCENT_PASS + (1.0 if length >= CHECKPOINT_FROM else 0.0)


def _shape(model_shape) -> dict:
    if model_shape is None:
        return dict(PAPER_SHAPE)
    if isinstance(model_shape, Mapping):
        get = model_shape.get
    else:
        def get(k, d=None):
            return getattr(model_shape, k, d)
    try:
        return {k: float(get(k)) for k in ("params", "layers", "hidden")}
    except (TypeError, ValueError):
        raise LongRopeError("model_shape needs params, layers and hidden") from None


def flops_per_pass(shape: Mapping, length: int) -> float:
    return length * (2 * shape["params"] + 2 * shape["layers"] * shape["hidden"] * length)


def search_cost(cfg: SearchConfig, model_shape=None, *, tflops_per_gpu: float = TFLOPS_PER_GPU) -> dict:
    """Upper bounds of the search `cfg` (resolved here): {evaluations, screened, forward_passes,
    descent_passes, pass_equivalents, tokens, flops, gpu_hours, gpu_hours_at_paper_scale}.
    `evaluations` counts full-fidelity scorings, `screened` the cheap ones; `forward_passes` counts
    one pass per (candidate, document), the baselines included. `gpu_hours` is for `model_shape`
    (default: LLaMA2-7B) at the target length; `gpu_hours_at_paper_scale` is the same settings on
    LLaMA2-7B at 128k tokens with 5 documents."""
    s = cfg.resolved()
    length, docs = s.target_length, s.docs
    kids = s.mutations + s.crossovers
    # seeds always get the full fitness: PI, NTK, YaRN, the descent's best point, the carried factors
    seeds = BASELINES + bool(s.descent_steps) + bool(s.seed_from)

    def passes(n_docs: int) -> tuple[int, int, int]:
        sd = s.screen_docs or 0
        if 0 < sd < n_docs:
            promoted = min(kids, max(1, math.ceil(s.promote * kids))) if kids else 0
            full = max(s.parents, seeds) + s.iterations * promoted
            screened = s.population + s.iterations * kids
            return full, screened, screened * sd + full * (n_docs - sd) + BASELINES * n_docs
        full = s.population + s.iterations * kids
        return full, 0, (full + BASELINES) * n_docs

    full, screened, fp = passes(docs)
    steps = s.descent_steps
    dp = steps * docs
    eq = fp + descent_pass(length) * dp
    shape = _shape(model_shape)
    rate = tflops_per_gpu * 1e12 * 3600
    paper_eq = passes(PAPER_DOCS)[2] + descent_pass(PAPER_LENGTH) * steps * PAPER_DOCS
    return {"evaluations": full, "screened": screened, "forward_passes": fp, "descent_passes": dp,
            "pass_equivalents": eq, "tokens": int(eq * length),
            "flops": eq * flops_per_pass(shape, length),
            "gpu_hours": eq * flops_per_pass(shape, length) / rate,
            "gpu_hours_at_paper_scale": paper_eq * flops_per_pass(PAPER_SHAPE, PAPER_LENGTH) / rate}


def run_cost(cfg, evaluations: int, screened: int, forward_passes: int, cache_hits: int,
             descent_passes: int = 0) -> dict:
    """What a finished run spent, and the same run's GPU-hours at the paper's scale: the passes it
    needed (run + taken from the cache, descent passes weighted by `descent_pass`) per document,
    times the paper's 5 documents at 128k."""
    eq = forward_passes + descent_pass(cfg.target_length) * descent_passes
    bound = search_cost(cfg)
    per_doc = (eq + cache_hits) / cfg.docs
    paper = per_doc * PAPER_DOCS * flops_per_pass(PAPER_SHAPE, PAPER_LENGTH) / (TFLOPS_PER_GPU * 1e12 * 3600)
    return {"evaluations": evaluations, "screened": screened, "forward_passes": forward_passes,
            "descent_passes": descent_passes, "pass_equivalents": eq,
            "cache_hits": cache_hits, "tokens": int(eq * cfg.target_length),
            "gpu_hours_at_paper_scale": paper, "bound": bound}


def describe(cost: dict) -> str:
    """One line for logs and titles."""
    hits = f" (+{cost['cache_hits']:,} from the cache)" if cost.get("cache_hits") else ""
    descent = (f" + {cost['descent_passes']:,} descent (forward + backward) passes = "
               f"{cost['pass_equivalents']:,.0f} pass equivalents" if cost.get("descent_passes") else "")
    return (f"{cost['evaluations']:,} full + {cost['screened']:,} screening evaluations, "
            f"{cost['forward_passes']:,} forward passes{hits}{descent}, {cost['tokens']:,} tokens; "
            f"~{cost['gpu_hours_at_paper_scale']:,.0f} GPU-h at paper scale")


def doc_cost(doc: dict) -> dict | None:
    """run_cost from a search state document (state.json), or None for states that predate it."""
    if "forward_passes" not in doc:
        return None
    hist = doc["evolution"]["history"][-1]
    descent = (doc.get("info") or {}).get("descent") or {}
    return run_cost(SearchConfig.from_saved(doc["config"]), hist["evaluations"], hist["screened"],
                    doc["forward_passes"], doc.get("cache_hits", 0), descent.get("passes", 0))
