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
from .perplexity import PplResult, perplexity
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
    passkey_lengths: list[int] | None = field(default=None, metadata={
        "help": "lengths of the passkey prompts (default: every evaluation length)", "length": True})
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
    task_lengths: list[int] | None = field(default=None, metadata={
        "help": "lengths the tasks run at (default: every evaluation length)", "length": True})
    shipped: bool = field(default=True, metadata={"help": (
        "skip the `shipped` row: each longrope method whose export differs from it (n_hat, a short attention "
        "scale: what the stock format cannot hold) is also scored as `longrope export --drop-n-hat "
        "--drop-short-attention` writes it")})
    baselines_on: str = field(default="final", metadata={
        "help": "recipes: score baselines on the initial or the final model", "choices": ("initial", "final")})
    final_methods: list[str] = field(default_factory=lambda: ["none"], metadata={"help": (
        "recipes with baselines_on initial: the methods also scored on the final model besides the found "
        "factors (none: the fine-tuned weights alone; yarn: a control, the same weights under another "
        "scaling), labelled 'METHOD (final model)'")})
    device: str | None = None  # where a recipe's compare stage loads the model (default: the recipe's)
    dtype: str | None = None

    def validated(self, where: str = "compare") -> "CompareConfig":
        """Types and values of every field checked (one line naming the field); a checked copy."""
        from ..schema import check_types
        check_types(self, where)
        c = replace(self, methods=parse_methods(self.methods), lengths=sorted(set(self.lengths)),
                    depths=list(self.depths), passkey_lengths=sorted(set(self.passkey_lengths or [])) or None,
                    task_lengths=sorted(set(self.task_lengths or [])) or None,
                    final_methods=parse_methods(self.final_methods) if self.final_methods else [])
        for name in ("passkey_lengths", "task_lengths"):
            extra = sorted(set(getattr(c, name) or []) - set(c.lengths))
            if extra:
                raise LongRopeError(f"{where}: {name} must be among the evaluation lengths; "
                                    f"{extra[0]} is not in {c.lengths}")
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
        resolve_methods([m for m in c.methods + c.final_methods if m != "model"], c.factor or 2.0)
        if c.tasks:  # the harness, the task names and the lengths checked before any work
            from . import tasks as harness
            harness.require_harness()
            harness.check_tasks(c.tasks, harness.LENGTH_TASKS, lengths=True)
            harness.check_lengths(c.task_lengths or c.lengths, c.tasks)
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


def shipped_forms(scalings: dict) -> dict:
    """{label: {"of", "scaling", "dropped"}}: the stock form (what `export --drop-n-hat
    --drop-short-attention` writes) of each longrope method it differs from, labelled `shipped`
    (`shipped:METHOD` when there are several)."""
    from ..exporter import dropped_parts, stock_form
    differ = {m: s for m, s in scalings.items() if s.method == "longrope" and dropped_parts(s)}
    return {("shipped" if len(differ) == 1 else f"shipped:{m}"):
            {"of": m, "scaling": stock_form(s, drop_n_hat=True, drop_short_attention=True),
             "dropped": dropped_parts(s)} for m, s in differ.items()}


def default_factor(model, lengths: Sequence[int], factor: float | None = None) -> float:
    if factor is not None:
        if factor <= 0:
            raise LongRopeError(f"factor must be positive, got {factor}")
        return float(factor)
    return max(1.0, max(lengths) / original_window(model))


def make_samples(ids, tokenizer, length: int, count: int, *, seed: int = 0, mode: str = "auto",
                 source: str | None = None, split: str | None = None):
    """`count` samples of `length` tokens, BOS first (see longrope.data.build_samples); too little
    data is an error that states the split's size when `split` is given."""
    from ..data import build_samples
    from ..data.sources import split_sizes

    bos = getattr(tokenizer, "bos_token_id", None)
    sep = getattr(tokenizer, "eos_token_id", None)
    try:
        return build_samples(ids, length, count, mode=mode, bos_id=bos, sep_id=sep, seed=seed)
    except LongRopeError as e:
        if split is None:
            raise
        raise LongRopeError("; ".join(x for x in (str(e), split_sizes(source, split)) if x)) from None


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
    base = make_samples(ids, tokenizer, span(max(max(lengths), short)), cfg.docs, seed=cfg.seed, source=cfg.data,
                        split=cfg.split)
    samples = {n: [t[:span(n)] for t in base.tensors] for n in set(lengths) | {short}}
    return samples, base


def prefix_lengths(scaling, lengths, window: int, stride: int | None) -> list[int]:
    """The lengths whose truncate-mode figure is exactly a prefix of the longest pass: every position
    of an n-token sample rotates as in the longest sample (the samples are prefixes of each other).
    True for a scaling whose tables do not depend on the length, and for short/long factors above the
    window (both passes use the long ones); not for dynamic NTK, nor for the model as loaded."""
    top = max(lengths)
    if scaling is None or stride is not None:
        return []
    if not scaling.length_dependent:
        return [n for n in lengths if n < top]
    return [n for n in lengths if window < n < top] if scaling.switches else []


def _prefix_result(top: PplResult, n: int, window: int) -> PplResult:
    """The figure at length n read off the longest pass's position ranges (see prefix_lengths)."""
    whole = top.by_range[f"1-{n}"]
    by_range = {k: top.by_range[k] for k in (f"0-{window}", f"{window}-{n}")} if n > window else {}
    return PplResult(ppl=whole["ppl"], nll=whole["nll"], tokens=whole["tokens"], docs=top.docs, seconds=0.0,
                     by_range=by_range)


def _ppl_by_length(ppl, scaling, lengths, window, stride, progress) -> dict:
    """{length: PplResult}: one pass at the longest length serves every prefix length."""
    derived = prefix_lengths(scaling, lengths, window, stride)
    top = max(lengths)
    extra = [(1, n) for n in derived] + [(window, n) for n in derived if n > window]
    out = {top: ppl(top, progress=progress, extra=extra)}
    for n in lengths:
        if n != top:
            out[n] = _prefix_result(out[top], n, window) if n in derived else ppl(n, progress=progress)
    for n in derived:  # the extra ranges are not part of the longest length's own figure
        for key in (f"1-{n}", f"{window}-{n}"):
            out[top].by_range.pop(key, None)
    return out


def _score(r: MethodResult, model, tokenizer, cfg: CompareConfig, ppl, lengths, short, progress, say,
           scaling=None, window: int = 0) -> None:
    """Every evaluation of one method (already applied to `model`) into `r`. A new evaluation goes
    here (or in its own module called from here) and into a MethodResult field."""
    by_length = _ppl_by_length(ppl, scaling, lengths, window, cfg.stride, progress)
    for n in lengths:
        p = by_length[n]
        r.ppl[n], r.ppl_detail[n], r.seconds[n] = p.ppl, p.to_dict(), p.seconds
        if p.seconds == 0.0 and n != max(lengths):
            r.ppl_detail[n]["prefix_of"] = max(lengths)
        tail = next((f", beyond the window {v['ppl']:.3f}" for k, v in p.by_range.items()
                     if not k.startswith("0-") and v.get("tokens")), "")
        say(f"  ppl @ {n}: {p.ppl:.3f}{tail} ({p.docs} docs, {p.tokens} tokens, {p.seconds:.1f} s)")
    # the short-window cost: the same samples and length as an evaluation length, when it is one
    r.short_ppl = r.ppl[short] if short in r.ppl else ppl(short).ppl
    if cfg.passkey_trials > 0:
        pk = passkey_eval(model, tokenizer, cfg.passkey_lengths or lengths, trials=cfg.passkey_trials, depths=cfg.depths,
                          seed=cfg.seed, progress=progress)
        r.passkey = {int(n): v for n, v in pk.by_length.items()}
        r.passkey_ci = {int(n): v for n, v in pk.interval_by_length.items()}
        r.passkey_depth = {int(n): v for n, v in pk.grid.items()}
        say("  passkey: " + ", ".join(f"{k}: {v:.0%} ({pk.interval_by_length[k][0]:.0%}-"
                                      f"{pk.interval_by_length[k][1]:.0%})" for k, v in pk.by_length.items()))
    if cfg.tasks:
        from .tasks import run_tasks_at_lengths
        res = run_tasks_at_lengths(model, tokenizer, cfg.tasks, cfg.task_lengths or lengths, limit=cfg.task_limit,
                                   batch_size=cfg.batch_size, seed=cfg.seed, log=say)
        r.tasks = {t: {str(n): v for n, v in row.items()} for t, row in res.items()}


def _check_sizes(model, scalings: dict) -> None:
    """A factor file of the wrong size for the model fails before any work."""
    from longrope import patch
    dim, _, window = patch.rope_dims(model)
    for label, scaling in scalings.items():
        try:
            scaling.check_pairs(dim // 2, window)
        except LongRopeError as e:
            raise LongRopeError(f"method {label!r}: {e}") from None


def compare(model, tokenizer, config: CompareConfig, *, documents=None, progress: bool = True,
            log=None, model_name: str | None = None, saved: CompareResult | None = None,
            on_method=None) -> CompareResult:
    """Perplexity and passkey for every method of `config` at every length, on the model as loaded
    (`model`: no patch; `none`: the explicitly unscaled rotation). `documents`: a `data.Tokenized`
    (default: cfg's data and split, loaded here). Returns a CompareResult.

    Resuming (the recipe's compare stage, where one method at 32k tokens costs a CPU-hour): the
    methods of `saved` (an interrupted run of the same config on the same model) are kept, not
    scored again, and `on_method(partial CompareResult)` is called after each method is scored."""
    import longrope
    from longrope import patch

    cfg = config.validated()
    lengths = sorted(set(cfg.lengths))
    window = original_window(model)
    fac = default_factor(model, lengths, cfg.factor)
    methods = with_model_entry(cfg.methods, model)
    scalings = resolve_methods([m for m in methods if m != "model"], fac)
    shipped = shipped_forms(scalings) if cfg.shipped else {}
    methods = [x for m in methods for x in [m] + [k for k, v in shipped.items() if v["of"] == m]]
    scalings.update({k: v["scaling"] for k, v in shipped.items()})
    _check_sizes(model, scalings)
    short = cfg.short_length or window
    from ..memory import check_lengths  # a length the machine cannot hold fails before the data is read
    check_lengths(model, [(2 if cfg.stride else 1) * max(max(lengths), short)], what="compare",
                  batch=cfg.batch_size, kv_cache=cfg.passkey_trials > 0 or bool(cfg.tasks), chunk=cfg.chunk)
    say = log or (lambda msg: None)
    if documents is None:
        from ..data import load_tokenized
        documents = load_tokenized(tokenizer, cfg.data, cfg.split)
    samples, base = _samples(cfg, tokenizer, documents.ids, lengths, short)
    if cfg.passkey_trials > 0:  # a length too short for a passkey prompt fails here, before any work
        from ..data.passkey import passkey_prompt
        passkey_prompt(tokenizer, min(cfg.passkey_lengths or lengths), 0.5, 1)

    def ppl(n, extra=(), **kw):  # beyond the window, positions [window, n) are also scored on their own
        beyond = [(0, window), (window, n)] if n > window and cfg.stride is None else []
        return perplexity(model, samples[n], stride=cfg.stride, window=n if cfg.stride else None,
                          batch_size=cfg.batch_size, chunk=cfg.chunk, positions=beyond + list(extra) or None, **kw)

    was_patched = patch.current(model)
    results: dict[str, MethodResult] = {}
    t0 = time.perf_counter()
    try:
        patch.remove(model)
        if own_scaling(model) is not None:
            patch.apply(model, "none")  # the short-window reference is the unscaled rotation
        base_short = saved.unscaled_short_ppl if saved is not None else ppl(short).ppl
        for label in methods:
            if saved is not None and label in saved.methods:
                results[label] = saved.methods[label]
                say(f"{label}: kept from the interrupted run")
                continue
            scaling = scalings.get(label)
            spec = describe_model_scaling(model) if scaling is None else scaling.describe()
            if label in shipped:
                spec = f"{label} as exported (stock form of {shipped[label]['of']}: {spec})"
            say(f"{label}: {spec}")
            patch.remove(model)
            if scaling is not None:
                patch.apply(model, scaling)
            results[label] = r = MethodResult(spec=spec, model=model_name)
            _score(r, model, tokenizer, cfg, ppl, lengths, short, progress, say, scaling=scaling, window=window)
            if on_method is not None:
                on_method(CompareResult(dict(results), short, base_short))
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
        "documents": documents.cite(base.used), "passkey_trials": cfg.passkey_trials, "depths": list(cfg.depths),
        "seed": cfg.seed, **({"passkey_lengths": cfg.passkey_lengths} if cfg.passkey_lengths else {}),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "seconds": time.perf_counter() - t0, "python": platform.python_version(),
        "longrope": longrope.__version__,
        **({"tasks": list(cfg.tasks), "task_limit": cfg.task_limit,
            "task_lengths": cfg.task_lengths or lengths} if cfg.tasks else {}),
        **({"shipped": [{"row": k, "of": v["of"], "dropped": v["dropped"]} for k, v in shipped.items()]}
           if shipped else {}),
    }
    return CompareResult(results, short, base_short, meta)
