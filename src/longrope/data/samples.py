"""Turn tokenized documents into fixed-length samples, by selecting long documents or joining short ones.

- "select": documents with at least `length` tokens (counting the BOS), each cut to its first
  `length` tokens: real long-range dependencies, the right data for long-context evaluation.
- "join": documents shuffled and concatenated with separators (`sep_id`, then `bos_id`, between
  documents), then cut into consecutive `length`-token pieces, each starting with BOS.
- "auto": "select" when there are enough long documents, else "join"; `info["reason"]` says why.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from ..errors import LongRopeError

MODES = ("auto", "select", "join")


@dataclass
class Samples:
    tensors: list[torch.Tensor]
    mode: str
    info: dict = field(default_factory=dict)
    used: list[int] = field(default_factory=list)  # the documents (indices into ids) the samples hold, sorted

    def __len__(self) -> int:
        return len(self.tensors)

    def __iter__(self):
        return iter(self.tensors)


def _select(ids, length, count, bos_id, rng) -> list[torch.Tensor]:
    body = length - (1 if bos_id is not None else 0)
    eligible = [i for i, d in enumerate(ids) if len(d) >= body]
    rng.shuffle(eligible)
    prefix = [bos_id] if bos_id is not None else []
    chosen = sorted(eligible[:count])
    return [torch.tensor(prefix + list(ids[i][:body]), dtype=torch.long) for i in chosen], chosen


def _join(ids, length, count, bos_id, sep_id, rng) -> tuple[list[torch.Tensor], list[int]]:
    """`count` samples cut from the shuffled documents joined, and the documents they use."""
    order = list(range(len(ids)))
    rng.shuffle(order)
    between = ([sep_id] if sep_id is not None else []) + ([bos_id] if bos_id is not None else [])
    prefix = [bos_id] if bos_id is not None else []
    body = length - len(prefix)
    stream: list[int] = []
    need = body * count
    used = []
    for j, i in enumerate(order):
        if j:
            stream.extend(between)
        if len(stream) < need and ids[i]:  # some of its tokens are in the samples
            used.append(i)
        stream.extend(ids[i])
        if len(stream) >= need:
            break
    return [torch.tensor(prefix + stream[k * body:(k + 1) * body], dtype=torch.long) for k in range(count)], sorted(used)


def build_samples(ids: list[list[int]], length: int, count: int | None, *, mode: str = "auto",
                  bos_id: int | None = None, sep_id: int | None = None, seed: int = 0) -> Samples:
    """`count` samples of exactly `length` tokens (BOS first when `bos_id` is given).

    `count=None` takes as many as the chosen mode can make. Too few or too short documents raise
    `LongRopeError` naming the numbers.
    """
    if mode not in MODES:
        raise LongRopeError(f"unknown sample mode {mode!r}; choose one of {', '.join(MODES)}")
    if length < 2:
        raise LongRopeError(f"sample length must be at least 2 tokens, got {length}")
    if count is not None and count < 1:
        raise LongRopeError(f"sample count must be positive, got {count}")
    if not ids:
        raise LongRopeError("no documents to build samples from")
    body = length - (1 if bos_id is not None else 0)
    lengths = [len(d) for d in ids]
    n_long = sum(n >= body for n in lengths)
    longest = max(lengths)
    between = (sep_id is not None) + (bos_id is not None)
    total = sum(lengths) + between * (len(ids) - 1)
    joinable = total // body
    info = {"length": length, "docs": len(ids), "docs_long_enough": n_long, "longest": longest,
            "tokens": sum(lengths), "seed": seed}
    want_select = count if count is not None else max(n_long, 1)
    select_error = (f"need {want_select:,} documents of >= {length:,} tokens, found {n_long:,} "
                    f"(longest {longest:,})")
    want_join = count if count is not None else max(joinable, 1)
    join_error = (f"need {want_join:,} x {body:,} = {want_join * body:,} tokens to join into "
                  f"{length:,}-token samples, the {len(ids):,} documents hold {total:,}")
    rng = random.Random(seed)
    if mode == "select" or (mode == "auto" and n_long >= want_select):
        if n_long < want_select or n_long == 0:
            raise LongRopeError(select_error)
        tensors, used = _select(ids, length, want_select, bos_id, rng)
        info["reason"] = (f"selected {len(tensors):,} of {n_long:,} documents with >= {length:,} tokens, "
                          "each cut to its first tokens")
        return Samples(tensors, "select", {**info, "mode": "select"}, used)
    if joinable < want_join or joinable == 0:
        if mode == "auto":
            raise LongRopeError(f"{select_error}; joining all documents is not enough either: {join_error}")
        raise LongRopeError(join_error)
    tensors, used = _join(ids, length, want_join, bos_id, sep_id, rng)
    why = (f"only {n_long:,} documents have >= {length:,} tokens, fewer than {want_select:,}; "
           if mode == "auto" else "")
    info["reason"] = f"{why}joined {len(used):,} documents with separators into {len(tensors):,} samples"
    return Samples(tensors, "join", {**info, "mode": "join", "joined": len(used)}, used)
