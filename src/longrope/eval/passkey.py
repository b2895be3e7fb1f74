"""Passkey retrieval accuracy: greedy decoding with the KV cache, answer = first integer generated.

Prompts come from `longrope.data.passkey.passkey_prompt` (the papers' format, see the facts file).
For every length and depth, `trials` prompts are built with keys drawn uniformly from the papers'
range (`KEY_MIN..KEY_MAX`) by a `random.Random` seeded from (seed, length, depth, trial), so every
method sees the same keys and a cell's keys do not depend on which other lengths or depths are
evaluated.
"""
from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..data.passkey import KEY_MAX, KEY_MIN
from ..errors import LongRopeError
from ..models import model_device

DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
_INT = re.compile(r"\d+")


def parse_answer(text: str) -> int | None:
    """The first integer in the generated continuation (None if there is none)."""
    m = _INT.search(text)
    return int(m.group()) if m else None


def trial_key(seed: int, length: int, depth: float, trial: int) -> int:
    """The passkey of one trial: uniform in KEY_MIN..KEY_MAX, fixed by (seed, length, depth, trial)."""
    return random.Random(f"{seed}:{length}:{depth:g}:{trial}").randint(KEY_MIN, KEY_MAX)


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate, 95% by default: unlike the normal approximation
    it stays inside [0, 1] and is not empty at 0 or n successes (20 trials at 50%: 0.30-0.70;
    100 trials: 0.40-0.60)."""
    if n < 1 or not 0 <= correct <= n:
        raise LongRopeError(f"a rate needs 0 <= correct <= n and n >= 1, got {correct} of {n}")
    p = correct / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, mid - half), min(1.0, mid + half)


@dataclass
class PasskeyResult:
    accuracy: float                              # over all trials
    by_length: dict[str, float]                  # "2048" -> accuracy
    by_depth: dict[str, float]                   # "0.5" -> accuracy
    grid: dict[str, dict[str, float]]            # length -> depth -> accuracy
    trials: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    interval_by_length: dict[str, list[float]] = field(default_factory=dict)  # "2048" -> 95% Wilson [lo, hi]
    count_by_length: dict[str, list[int]] = field(default_factory=dict)  # "2048" -> [correct, trials]

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "by_length": self.by_length, "by_depth": self.by_depth,
                "grid": self.grid, "interval_by_length": self.interval_by_length,
                "count_by_length": self.count_by_length, "seconds": self.seconds, "trials": self.trials}


def summarize(records: Sequence[dict]) -> PasskeyResult:
    """Accuracy overall, per length, per depth and per (length, depth) from trial records
    (dicts with `length`, `depth` and `correct`), and per length its 95% Wilson interval."""
    if not records:
        raise LongRopeError("no passkey trials to summarize")

    def mean(rs):
        return sum(bool(r["correct"]) for r in rs) / len(rs)

    lengths = sorted({r["length"] for r in records})
    depths = sorted({r["depth"] for r in records})
    by_length = {str(n): mean([r for r in records if r["length"] == n]) for n in lengths}
    by_depth = {f"{d:g}": mean([r for r in records if r["depth"] == d]) for d in depths}
    grid = {}
    for n in lengths:
        row = {}
        for d in depths:
            cell = [r for r in records if r["length"] == n and r["depth"] == d]
            if cell:
                row[f"{d:g}"] = mean(cell)
        grid[str(n)] = row
    counts = {str(n): [sum(bool(r["correct"]) for r in records if r["length"] == n),
                       sum(1 for r in records if r["length"] == n)] for n in lengths}
    return PasskeyResult(mean(records), by_length, by_depth, grid, list(records),
                         interval_by_length={n: list(wilson(k, t)) for n, (k, t) in counts.items()},
                         count_by_length=counts)


def _default_builder():
    try:
        from ..data.passkey import passkey_prompt
    except ImportError as e:  # pragma: no cover - the data package ships with longrope
        raise LongRopeError(f"the passkey prompt builder is unavailable: {e}") from None
    return passkey_prompt


def generate_answer(model, tokenizer, input_ids: torch.Tensor, max_new_tokens: int = 8) -> str:
    """Greedy continuation (KV cache on) of one prompt, decoded without special tokens."""
    ids = input_ids.reshape(1, -1).to(model_device(model))
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, use_cache=True, pad_token_id=pad,
                             temperature=None, top_p=None, top_k=None)
    return tokenizer.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)


def passkey_eval(model, tokenizer, lengths: Sequence[int], *, trials: int = 5,
                 depths: Sequence[float] | None = None, seed: int = 0, max_new_tokens: int = 8,
                 builder: Callable | None = None, progress: bool = False) -> PasskeyResult:
    """Passkey accuracy of `model` for each length x depth, `trials` prompts per cell.

    builder: `passkey_prompt(tokenizer, length, depth, key, seed=...)`-compatible callable
    (default: `longrope.data.passkey.passkey_prompt`).
    """
    lengths = [int(n) for n in lengths]
    depths = [float(d) for d in (DEFAULT_DEPTHS if depths is None else depths)]
    if not lengths:
        raise LongRopeError("the list of passkey lengths is empty")
    if not depths:
        raise LongRopeError("the list of passkey depths is empty")
    if trials < 1:
        raise LongRopeError(f"passkey trials must be >= 1, got {trials}")
    bad = [d for d in depths if not 0.0 <= d <= 1.0]
    if bad:
        raise LongRopeError(f"passkey depths must be between 0 and 1, got {bad[0]:g}")
    build = builder or _default_builder()
    t0 = time.perf_counter()
    cells = [(n, d, t) for n in lengths for d in depths for t in range(trials)]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(cells), desc="passkey", unit="trial", disable=None, leave=False)
    records = []
    for n, d, t in cells:
        key = trial_key(seed, n, d, t)
        prompt = build(tokenizer, n, d, key, seed=seed)
        text = generate_answer(model, tokenizer, prompt.input_ids, max_new_tokens)
        answer = parse_answer(text)
        records.append({"length": n, "depth": d, "trial": t, "key": key, "answer": answer,
                        "correct": answer == key, "prompt_tokens": int(prompt.input_ids.numel()),
                        "key_position": int(prompt.key_position), "output": text})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    res = summarize(records)
    res.seconds = time.perf_counter() - t0
    return res
