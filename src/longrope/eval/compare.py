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

from ..errors import LongRopeError
from .passkey import DEFAULT_DEPTHS, passkey_eval
from .perplexity import perplexity


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
    from ..rope.scaling import parse_spec

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


def load_token_ids(tokenizer, source: str | None, split: str) -> list[list[int]]:
    from ..data import load_documents, tokenize_documents

    docs = load_documents(source, split)
    if not docs:
        raise LongRopeError(f"no documents in {source or 'the built-in corpus'} ({split})")
    return tokenize_documents(docs, tokenizer)


def make_samples(ids, tokenizer, length: int, count: int, *, seed: int = 0, mode: str = "auto"):
    """`count` samples of `length` tokens, BOS first (see longrope.data.build_samples)."""
    from ..data import build_samples

    bos = getattr(tokenizer, "bos_token_id", None)
    sep = getattr(tokenizer, "eos_token_id", None)
    return build_samples(ids, length, count, mode=mode, bos_id=bos, sep_id=sep, seed=seed)


def compare(model, tokenizer, methods: Sequence[str], lengths: Sequence[int], *, ids=None,
            data: str | None = None, split: str = "test", docs: int = 4, passkey_trials: int = 5,
            depths: Sequence[float] | None = None, seed: int = 0, factor: float | None = None,
            stride: int | None = None, batch_size: int = 1, chunk: int = 1024,
            short_length: int | None = None, progress: bool = True, log=None) -> dict:
    """Run perplexity and passkey for every method and length; returns the results dict
    (`{"ppl": {M: {L: v}}, "passkey": {M: {L: acc}}, "meta": {...}, ...}`, lengths as strings)."""
    import longrope
    from longrope import patch

    methods = parse_methods(methods)
    lengths = sorted({int(n) for n in lengths})
    if not lengths:
        raise LongRopeError("the list of lengths is empty")
    if docs < 1:
        raise LongRopeError(f"--docs must be >= 1, got {docs}")
    depths = list(DEFAULT_DEPTHS if depths is None else depths)
    window = original_window(model)
    fac = default_factor(model, lengths, factor)
    scalings = resolve_methods(methods, fac)
    short = short_length or window
    say = log or (lambda msg: None)

    if ids is None:
        ids = load_token_ids(tokenizer, data, split)
    # the same documents at every length: samples of the longest length, cut to each shorter one
    # (the papers' "first L tokens of each document"); too little data fails here, before any work
    # with a stride, length n means windows of n tokens sliding over 2n-token samples
    span = (lambda n: 2 * n) if stride else (lambda n: n)
    base = make_samples(ids, tokenizer, span(max(max(lengths), short)), docs, seed=seed)
    samples = {n: [t[:span(n)] for t in base.tensors] for n in set(lengths) | {short}}
    sample_info = {**base.info, "mode": base.mode, "prefixes": "every length scores prefixes of these samples"}
    if passkey_trials > 0:  # a length too short for a passkey prompt fails here, before any work
        from ..data.passkey import passkey_prompt
        passkey_prompt(tokenizer, min(lengths), 0.5, 1)
    was_patched = patch.current(model)

    out = {"ppl": {}, "passkey": {}, "passkey_depth": {}, "short_ppl": {}, "ppl_detail": {}}
    t0 = time.perf_counter()
    try:
        patch.remove(model)
        none_short = perplexity(model, samples[short], stride=stride, window=short if stride else None,
                                batch_size=batch_size, chunk=chunk)
        for label, scaling in scalings.items():
            say(f"{label}: {scaling.describe() if hasattr(scaling, 'describe') else scaling}")
            patch.apply(model, scaling)
            try:
                out["ppl"][label], out["ppl_detail"][label] = {}, {}
                for n in lengths:
                    r = perplexity(model, samples[n], stride=stride, window=n if stride else None,
                                   batch_size=batch_size, chunk=chunk, progress=progress)
                    out["ppl"][label][str(n)] = r.ppl
                    out["ppl_detail"][label][str(n)] = r.to_dict()
                    say(f"  ppl @ {n}: {r.ppl:.3f} ({r.docs} docs, {r.tokens} tokens, {r.seconds:.1f} s)")
                r = perplexity(model, samples[short], stride=stride, window=short if stride else None,
                               batch_size=batch_size, chunk=chunk)
                out["short_ppl"][label] = r.ppl
                if passkey_trials > 0:
                    pk = passkey_eval(model, tokenizer, lengths, trials=passkey_trials, depths=depths,
                                      seed=seed, progress=progress)
                    out["passkey"][label] = pk.by_length
                    out["passkey_depth"][label] = pk.grid
                    say(f"  passkey: {', '.join(f'{k}: {v:.0%}' for k, v in pk.by_length.items())}")
            finally:
                patch.remove(model)
    finally:
        if was_patched is not None:
            patch.apply(model, was_patched)
    out["short"] = {"length": short, "unscaled_ppl": none_short.ppl,
                    "relative_cost": {m: v / none_short.ppl - 1 for m, v in out["short_ppl"].items()}}
    out["meta"] = {
        "model": getattr(model.config, "_name_or_path", "") or type(model).__name__,
        "original_window": window, "default_factor": fac,
        "methods": {m: (s.describe() if hasattr(s, "describe") else str(s)) for m, s in scalings.items()},
        "lengths": lengths, "docs": docs, "data": data or "builtin", "split": split,
        "ppl_mode": "truncate" if stride is None else f"sliding window of L over 2L tokens, stride {stride}",
        "samples": sample_info, "passkey_trials": passkey_trials, "depths": depths, "seed": seed,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "seconds": time.perf_counter() - t0, "python": platform.python_version(),
        "longrope": longrope.__version__,
    }
    return out
