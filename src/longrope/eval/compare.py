"""Compare RoPE scaling methods on one model: perplexity and passkey accuracy per length, on the same
data and the same passkeys, plus each method's perplexity at the original window (its short-context
cost next to the unscaled model's).

Bare baseline names (`pi`, `ntk`, `dynamic`, `yarn`, `llama3`) take the factor `longest length /
original window` unless `factor` is given; `longrope:PATH` carries its own factors.
"""
from __future__ import annotations

import platform
import time
from typing import Sequence

from dataclasses import dataclass, field, replace

from ..errors import LongRopeError
from .passkey import DEFAULT_DEPTHS, passkey_eval
from .perplexity import perplexity
from .results import CompareResult, MethodResult

DEFAULT_METHODS = ("none", "pi", "ntk", "dynamic", "yarn")


def _methods_help() -> str:
    from ..rope.registry import spellings
    return ("comma-separated scalings: model (the model as loaded, with its own config scaling), "
            f"{spellings()} (none: the unscaled rotation; a bare name takes --factor); `model` is added "
            "first when the model's config carries a scaling")


@dataclass
class CompareConfig:
    """What `compare` runs; every default is written here once (the CLI and recipes read them)."""
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS), metadata={"help": _methods_help})
    lengths: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048],
                               metadata={"help": "evaluation lengths, e.g. 256,1k,2k", "length": True})
    docs: int = field(default=4, metadata={"help": "documents per length"})
    passkey_trials: int = field(default=5, metadata={"help": "passkey prompts per length and depth (0 skips passkey)"})
    depths: list[float] = field(default_factory=lambda: list(DEFAULT_DEPTHS),
                                metadata={"help": "passkey key depths in [0, 1]"})
    factor: float | None = field(default=None, metadata={
        "help": "factor of bare baseline names (default: longest length / original window)"})
    stride: int | None = field(default=None, metadata={"help": "sliding-window stride (default: truncate mode)"})
    batch_size: int = field(default=1, metadata={"help": "samples per forward pass"})
    chunk: int = field(default=1024, metadata={"help": "positions per LM-head/loss chunk"})
    short_length: int | None = field(default=None, metadata={
        "help": "length of the short-context cost check (default: the original window)", "length": True})
    data: str | None = None
    split: str = "test"
    seed: int = field(default=0, metadata={"help": "seed of sample selection and passkeys"})
    plots: bool = field(default=True, metadata={"help": "skip the PNG plots"})
    tasks: list[str] = field(default_factory=list, metadata={"help": (
        "RULER tasks run at every length through lm-evaluation-harness, offline (needs "
        "longrope[eval]; docs/tasks.md), e.g. niah_single_1,niah_multikey_2")})
    task_limit: int = field(default=5, metadata={"help": "samples per task and length (with --tasks)"})
    baselines_on: str = field(default="final", metadata={
        "help": "recipes: score baselines on the initial or the final model", "choices": ("initial", "final")})
    device: str | None = None  # where a recipe's compare stage loads the model (default: the recipe's)
    dtype: str | None = None

    def validated(self, where: str = "compare") -> "CompareConfig":
        """Types and values of every field checked (one line naming the field); a checked copy."""
        from ..schema import check_types
        check_types(self, where)
        c = replace(self, methods=parse_methods(self.methods), lengths=sorted(set(self.lengths)),
                    depths=list(self.depths))
        if c.docs < 1:
            raise LongRopeError(f"{where}: docs must be >= 1, got {c.docs}")
        if c.passkey_trials < 0:
            raise LongRopeError(f"{where}: passkey_trials must be >= 0, got {c.passkey_trials}")
        if not c.depths or not all(0 <= d <= 1 for d in c.depths):
            raise LongRopeError(f"{where}: depths must be numbers in [0, 1], got {c.depths}")
        for name in ("stride", "batch_size", "chunk"):
            if getattr(c, name) is not None and getattr(c, name) < 1:
                raise LongRopeError(f"{where}: {name} must be >= 1, got {getattr(c, name)}")
        if c.factor is not None and not c.factor > 0:
            raise LongRopeError(f"{where}: factor must be positive, got {c.factor}")
        resolve_methods([m for m in c.methods if m != "model"], c.factor or 2.0)
        if c.tasks:  # the harness, the task names and the lengths checked before any work
            from . import tasks as harness
            harness.require_harness()
            harness.check_tasks(c.tasks, harness.LENGTH_TASKS, lengths=True)
            harness.check_lengths(c.lengths, c.tasks)
            harness.check_limit(c.task_limit)
        return c


def original_window(model) -> int:
    """The pre-trained context: original_max_position_embeddings if present, else max_position_embeddings."""
    from ..models import rope_config

    return rope_config(model.config)[2]


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """'none,pi,yarn:8' -> ['none', 'pi', 'yarn:8'] (duplicates and an empty list are errors)."""
    items = [m.strip() for m in (text.split(",") if isinstance(text, str) else text)]
    items = [m for m in items if m]
    if not items:
        raise LongRopeError("the list of methods is empty")
    dup = {m for m in items if items.count(m) > 1}
    if dup:
        raise LongRopeError(f"method listed twice: {sorted(dup)[0]}")
    return items


def resolve_methods(methods: Sequence[str], default_factor: float) -> dict:
    """Method label -> Scaling; unknown names and bad factors raise LongRopeError before any work."""
    from ..rope.spec import parse_spec

    out = {}
    for m in methods:
        try:
            out[m] = parse_spec(m, default_factor=default_factor)
        except LongRopeError as e:
            raise LongRopeError(f"method {m!r}: {e}") from None
        except (KeyError, ValueError) as e:
            raise LongRopeError(f"unknown method {m!r} ({e})") from None
    return out


def default_factor(model, lengths: Sequence[int], factor: float | None = None) -> float:
    if factor is not None:
        if factor <= 0:
            raise LongRopeError(f"factor must be positive, got {factor}")
        return float(factor)
    return max(1.0, max(lengths) / original_window(model))


def make_samples(ids, tokenizer, length: int, count: int, *, seed: int = 0, mode: str = "auto"):
    """`count` samples of `length` tokens, BOS first (see longrope.data.build_samples)."""
    from ..data import build_samples

    bos = getattr(tokenizer, "bos_token_id", None)
    sep = getattr(tokenizer, "eos_token_id", None)
    return build_samples(ids, length, count, mode=mode, bos_id=bos, sep_id=sep, seed=seed)


def own_scaling(model) -> str | None:
    """The RoPE scaling the model's own config carries ('yarn, factor 4'), or None for plain RoPE."""
    from ..models import text_config

    cfg = text_config(model.config)
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    kind = rope.get("rope_type") or rope.get("type")
    if kind in (None, "default"):
        return None
    factor = rope.get("factor")
    return f"{kind}, factor {factor:g}" if isinstance(factor, (int, float)) else str(kind)


def describe_model_scaling(model) -> str:
    own = own_scaling(model)
    return f"model's own ({own})" if own else "model's own (plain RoPE, no scaling)"


def with_model_entry(methods: Sequence[str], model) -> list[str]:
    """`model` (the model as it is) goes first when its config carries a scaling and it is not listed."""
    methods = list(methods)
    return methods if "model" in methods or own_scaling(model) is None else ["model"] + methods


def _samples(cfg: CompareConfig, tokenizer, ids, lengths, short):
    """The same documents at every length: samples of the longest length, cut to each shorter one
    (the papers' "first L tokens of each document"); with a stride, length n means windows of n
    tokens sliding over 2n-token samples. Too little data fails here, before any work."""
    span = (lambda n: 2 * n) if cfg.stride else (lambda n: n)
    base = make_samples(ids, tokenizer, span(max(max(lengths), short)), cfg.docs, seed=cfg.seed)
    samples = {n: [t[:span(n)] for t in base.tensors] for n in set(lengths) | {short}}
    return samples, base


def _score(r: MethodResult, model, tokenizer, cfg: CompareConfig, ppl, lengths, short, progress, say) -> None:
    """Every evaluation of one method (already applied to `model`) into `r`. A new evaluation goes
    here (or in its own module called from here) and into a MethodResult field."""
    for n in lengths:
        p = ppl(n, progress=progress)
        r.ppl[n], r.ppl_detail[n], r.seconds[n] = p.ppl, p.to_dict(), p.seconds
        tail = next((f", beyond the window {v['ppl']:.3f}" for k, v in p.by_range.items()
                     if not k.startswith("0-") and v.get("tokens")), "")
        say(f"  ppl @ {n}: {p.ppl:.3f}{tail} ({p.docs} docs, {p.tokens} tokens, {p.seconds:.1f} s)")
    r.short_ppl = ppl(short).ppl
    if cfg.passkey_trials > 0:
        pk = passkey_eval(model, tokenizer, lengths, trials=cfg.passkey_trials, depths=cfg.depths,
                          seed=cfg.seed, progress=progress)
        r.passkey = {int(n): v for n, v in pk.by_length.items()}
        r.passkey_ci = {int(n): v for n, v in pk.interval_by_length.items()}
        r.passkey_depth = {int(n): v for n, v in pk.grid.items()}
        say("  passkey: " + ", ".join(f"{k}: {v:.0%} ({pk.interval_by_length[k][0]:.0%}-"
                                      f"{pk.interval_by_length[k][1]:.0%})" for k, v in pk.by_length.items()))
    if cfg.tasks:
        from .tasks import run_tasks_at_lengths
        res = run_tasks_at_lengths(model, tokenizer, cfg.tasks, lengths, limit=cfg.task_limit,
                                   batch_size=cfg.batch_size, seed=cfg.seed, log=say)
        r.tasks = {t: {str(n): v for n, v in row.items()} for t, row in res.items()}


def _check_sizes(model, scalings: dict) -> None:
    """A factor file of the wrong size for the model fails before any work."""
    from longrope import patch
    dim = patch.rope_dims(model)[0]
    for label, scaling in scalings.items():
        try:
            scaling.check_pairs(dim // 2)
        except LongRopeError as e:
            raise LongRopeError(f"method {label!r}: {e}") from None


def compare(model, tokenizer, config: CompareConfig, *, documents=None, progress: bool = True,
            log=None, model_name: str | None = None) -> CompareResult:
    """Perplexity and passkey for every method of `config` at every length, on the model as loaded
    (`model`: no patch; `none`: the explicitly unscaled rotation). `documents`: a `data.Tokenized`
    (default: cfg's data and split, loaded here). Returns a CompareResult."""
    import longrope
    from longrope import patch

    cfg = config.validated()
    lengths = sorted(set(cfg.lengths))
    window = original_window(model)
    fac = default_factor(model, lengths, cfg.factor)
    methods = with_model_entry(cfg.methods, model)
    scalings = resolve_methods([m for m in methods if m != "model"], fac)
    _check_sizes(model, scalings)
    short = cfg.short_length or window
    say = log or (lambda msg: None)
    if documents is None:
        from ..data import load_tokenized
        documents = load_tokenized(tokenizer, cfg.data, cfg.split)
    samples, base = _samples(cfg, tokenizer, documents.ids, lengths, short)
    if cfg.passkey_trials > 0:  # a length too short for a passkey prompt fails here, before any work
        from ..data.passkey import passkey_prompt
        passkey_prompt(tokenizer, min(lengths), 0.5, 1)
    def ppl(n, **kw):  # beyond the window, positions [window, n) are also scored on their own
        beyond = [(0, window), (window, n)] if n > window and cfg.stride is None else None
        return perplexity(model, samples[n], stride=cfg.stride, window=n if cfg.stride else None,
                          batch_size=cfg.batch_size, chunk=cfg.chunk, positions=beyond, **kw)

    was_patched = patch.current(model)
    results: dict[str, MethodResult] = {}
    t0 = time.perf_counter()
    try:
        patch.remove(model)
        if own_scaling(model) is not None:
            patch.apply(model, "none")  # the short-window reference is the unscaled rotation
        base_short = ppl(short)
        for label in methods:
            scaling = scalings.get(label)
            spec = describe_model_scaling(model) if scaling is None else scaling.describe()
            say(f"{label}: {spec}")
            patch.remove(model)
            if scaling is not None:
                patch.apply(model, scaling)
            results[label] = r = MethodResult(spec=spec, model=model_name)
            _score(r, model, tokenizer, cfg, ppl, lengths, short, progress, say)
    finally:
        patch.remove(model)
        if was_patched is not None:
            patch.apply(model, was_patched)
    meta = {
        "model": getattr(model.config, "_name_or_path", "") or type(model).__name__,
        "scaling": describe_model_scaling(model), "original_window": window, "default_factor": fac,
        "lengths": lengths, "docs": cfg.docs, "data": cfg.data or "builtin", "split": cfg.split,
        "ppl_mode": "truncate" if cfg.stride is None else f"sliding window of L over 2L tokens, stride {cfg.stride}",
        "samples": {**base.info, "mode": base.mode, "prefixes": "every length scores prefixes of these samples"},
        "documents": documents.cite(base.used), "passkey_trials": cfg.passkey_trials, "depths": list(cfg.depths), "seed": cfg.seed,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "seconds": time.perf_counter() - t0, "python": platform.python_version(),
        "longrope": longrope.__version__,
        **({"tasks": list(cfg.tasks), "task_limit": cfg.task_limit} if cfg.tasks else {}),
    }
    return CompareResult(results, short, base_short.ppl, meta)
