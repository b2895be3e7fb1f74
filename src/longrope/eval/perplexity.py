"""Perplexity of a causal LM, lean on memory: the full `[length, vocab]` logits never exist at once.

The base model (the decoder without its LM head) runs once per window under `torch.inference_mode`
with SDPA and no KV cache; the LM head (`longrope.lm_head`: the family's final-logit transforms
included, as in training) is then applied to `chunk` positions at a time, the loss is taken in
float32 and summed. Only the positions that are scored pass through the head. In windows
longer than `mlp_chunk` the layers' MLPs run on that many positions at a time (exact, as an MLP acts
on each position alone), so the largest activations, [T, intermediate], never exist at full length.

Two modes, both following the Hugging Face perplexity guide:
- truncate (`stride=None`): each sample (already the evaluation length, BOS first) is scored in
  one forward pass; every token but the first is predicted from all tokens before it.
- sliding window (`stride=S`): windows of `window` tokens (default: the sample length) start every
  `S` tokens; each window scores only the tokens the previous window did not reach, so every token
  but the first is scored exactly once, with up to `window - 1` tokens of context.

The NLL is the mean over all scored tokens (equal to the mean over documents when every sample has
the same length, as in truncate mode); `ppl = exp(nll)`.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..errors import LongRopeError
from ..lm_head import LMHead, token_nll

MLP_CHUNK = 4096  # positions per MLP call in long windows (memory.py counts the same)


@dataclass
class PplResult:
    ppl: float
    nll: float          # mean negative log-likelihood per scored token (nats)
    tokens: int         # tokens scored
    docs: int           # samples scored
    seconds: float
    by_range: dict[str, dict] = field(default_factory=dict)  # "a-b" -> {"ppl", "nll", "tokens"}
    doc_nll: list[float] = field(default_factory=list)       # mean NLL of each sample

    def to_dict(self) -> dict:
        return {"ppl": self.ppl, "nll": self.nll, "tokens": self.tokens, "docs": self.docs,
                "seconds": self.seconds, "by_range": self.by_range}


def _base(model):
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        base = getattr(model, "model", None)
    if base is None:
        raise LongRopeError(f"cannot find the decoder inside {type(model).__name__}")
    return base


def _mlp_forward(forward, size: int, x: torch.Tensor, *args, **kwargs):
    n = x.shape[-2] if x.dim() >= 2 else 0
    if n <= size or args or kwargs:
        return forward(x, *args, **kwargs)
    first = forward(x[..., :size, :])
    out = first.new_empty(x.shape[:-1] + first.shape[-1:])
    out[..., :size, :] = first
    del first
    for i in range(size, n, size):
        out[..., i:i + size, :] = forward(x[..., i:i + size, :])
    return out


@contextmanager
def chunked_mlps(base, size: int | None):
    """Run the decoder layers' MLPs on `size` positions at a time. Exact: an MLP acts on each position
    alone, so only its [T, intermediate] activations change shape, to [size, intermediate]. Applies
    to modules named `*MLP` (Llama, Mistral, Qwen2/3, Phi-3, Gemma, ...); others run unchanged."""
    patched = []
    if size:
        for layer in getattr(base, "layers", ()):
            mlp = getattr(layer, "mlp", None)
            if isinstance(mlp, torch.nn.Module) and type(mlp).__name__.endswith("MLP") \
                    and "forward" not in mlp.__dict__:
                mlp.forward = lambda x, *a, _f=mlp.forward, **k: _mlp_forward(_f, size, x, *a, **k)
                patched.append(mlp)
    try:
        yield
    finally:
        for mlp in patched:
            mlp.__dict__.pop("forward", None)


def _parse_ranges(positions) -> list[tuple[int, int]]:
    out = []
    for r in positions or ():
        a, b = int(r[0]), int(r[1])
        if not 0 <= a < b:
            raise LongRopeError(f"bad position range {r!r}: need 0 <= start < end")
        out.append((a, b))
    return out


class _Acc:
    """Sums of NLL and token counts: total, per sample and per position range. The per-sample sums
    live on the model's device (the NLL's), so no chunk waits for a copy to the host."""

    def __init__(self, batch: int, ranges, device=None):
        self.doc_sum = torch.zeros(batch, dtype=torch.float64, device=device)
        self.doc_n = torch.zeros(batch, dtype=torch.long, device=device)
        self.ranges = ranges
        self.r_sum = [0.0] * len(ranges)
        self.r_n = [0] * len(ranges)

    def add(self, nll: torch.Tensor, first_pos: int) -> None:
        """`nll`: [batch, n] per-token NLL of target positions first_pos .. first_pos + n - 1."""
        self.doc_sum += nll.sum(dim=1, dtype=torch.float64)
        self.doc_n += nll.shape[1]
        last = first_pos + nll.shape[1]
        for k, (a, b) in enumerate(self.ranges):
            lo, hi = max(a, first_pos), min(b, last)
            if lo < hi:
                self.r_sum[k] += float(nll[:, lo - first_pos:hi - first_pos].sum(dtype=torch.float64))
                self.r_n[k] += (hi - lo) * nll.shape[0]


def _score_span(base, head: LMHead, ids: torch.Tensor, begin: int, lo: int, end: int, chunk: int,
                acc: _Acc, mlp_chunk: int | None) -> None:
    """Run the decoder on ids[:, begin:end] and add the NLL of target positions lo .. end-1."""
    window = ids[:, begin:end]
    if mlp_chunk and end - begin > mlp_chunk:
        with chunked_mlps(base, mlp_chunk):
            hidden = base(input_ids=window, use_cache=False).last_hidden_state
    else:
        hidden = base(input_ids=window, use_cache=False).last_hidden_state
    # the prediction of target position t comes from the hidden state at t - 1
    for s in range(lo, end, chunk):
        e = min(s + chunk, end)
        logits = head(hidden[:, s - 1 - begin:e - 1 - begin])
        tgt = ids[:, s:e]
        nll = token_nll(logits, tgt)  # [batch, e - s]
        acc.add(nll, s)
        del logits, nll
    del hidden


def _score_batch(base, head, ids: torch.Tensor, stride: int | None, window: int | None, chunk: int,
                 acc: _Acc, mlp_chunk: int | None) -> None:
    n = ids.shape[1]
    if stride is None:
        _score_span(base, head, ids, 0, 1, n, chunk, acc, mlp_chunk)
        return
    w = min(window or n, n)
    prev_end = 0
    for begin in range(0, n, stride):
        end = min(begin + w, n)
        _score_span(base, head, ids, begin, max(prev_end, begin + 1), end, chunk, acc, mlp_chunk)
        prev_end = end
        if end == n:
            break


def _batches(samples: Sequence[torch.Tensor], batch_size: int):
    """Consecutive runs of equal-length samples, at most `batch_size` each."""
    group: list[torch.Tensor] = []
    for s in samples:
        if group and (len(group) == batch_size or s.shape[-1] != group[0].shape[-1]):
            yield group
            group = []
        group.append(s)
    if group:
        yield group


def perplexity(model, samples: Sequence[torch.Tensor], *, stride: int | None = None,
               window: int | None = None, batch_size: int = 1, chunk: int = 1024,
               progress: bool = False, positions: Sequence[tuple[int, int]] | None = None,
               mlp_chunk: int | None = MLP_CHUNK) -> PplResult:
    """Perplexity of `model` over `samples` (1-D LongTensors of token ids, BOS first).

    stride: None for truncate mode, else the sliding-window stride (<= window).
    window: sliding-window length (default: each sample's length, i.e. a single window).
    batch_size: equal-length consecutive samples are scored together in one forward pass.
    chunk: positions per LM-head/loss chunk (bounds the logits memory to chunk x vocab floats).
    positions: optional [(start, end), ...] target-position ranges; their perplexities are
        reported in `by_range` under "start-end".
    mlp_chunk: windows longer than this run their MLPs this many positions at a time (exact; lower
        peak memory at long lengths); None disables.
    """
    if not samples:
        raise LongRopeError("no samples to score")
    if batch_size < 1 or chunk < 1:
        raise LongRopeError(f"batch_size and chunk must be >= 1 (got {batch_size}, {chunk})")
    if window is not None and window < 2:
        raise LongRopeError(f"window must be at least 2 tokens, got {window}")
    if stride is not None and (stride < 1 or stride > (window or min(s.shape[-1] for s in samples))):
        raise LongRopeError(f"stride must be between 1 and the window length, got {stride}")
    ranges = _parse_ranges(positions)
    base, head = _base(model), LMHead(model)
    device = head.weight.device
    t0 = time.perf_counter()
    doc_nll: list[float] = []
    tot_sum, tot_n = 0.0, 0
    r_sum, r_n = [0.0] * len(ranges), [0] * len(ranges)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(samples), desc="ppl", unit="doc", disable=None, leave=False)
    with torch.inference_mode():
        for group in _batches(samples, batch_size):
            if group[0].shape[-1] < 2:
                raise LongRopeError(f"a sample has {group[0].shape[-1]} tokens; need at least 2")
            ids = torch.stack([s.reshape(-1) for s in group]).to(device=device, dtype=torch.long)
            acc = _Acc(len(group), ranges, device)
            _score_batch(base, head, ids, stride, window, chunk, acc, mlp_chunk)
            for s, c in zip(acc.doc_sum.tolist(), acc.doc_n.tolist()):
                doc_nll.append(s / c)
            tot_sum += float(acc.doc_sum.sum())
            tot_n += int(acc.doc_n.sum())
            for k in range(len(ranges)):
                r_sum[k] += acc.r_sum[k]
                r_n[k] += acc.r_n[k]
            if bar is not None:
                bar.update(len(group))
    if bar is not None:
        bar.close()
    nll = tot_sum / tot_n
    by_range = {}
    for (a, b), s, c in zip(ranges, r_sum, r_n):
        by_range[f"{a}-{b}"] = ({"ppl": _exp(s / c), "nll": s / c, "tokens": c} if c
                                else {"ppl": None, "nll": None, "tokens": 0})
    return PplResult(ppl=_exp(nll), nll=nll, tokens=tot_n, docs=len(samples),
                     seconds=time.perf_counter() - t0, by_range=by_range, doc_nll=doc_nll)


def _exp(x: float) -> float:
    return math.exp(x) if x < 700 else float("inf")
