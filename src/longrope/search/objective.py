"""What the search minimises on a real model: perplexity at the target length, optionally counted
only on the answer tokens of needles planted early (LongRoPE2), scored data-parallel over the
processes of a `torchrun` launch.

Also here: the exact seed factors of PI, NTK and YaRN (lambda_i = theta_i / theta'_i, computed
from `longrope.rope.methods`) and LongRoPE2's theoretical critical dimension.
"""
from __future__ import annotations

import math
import os
import random
from typing import Sequence

import numpy as np
import torch

from ..data.passkey import KEY_LINE, QUESTION
from ..errors import LongRopeError
from .space import Candidate



# ---- seeds and the critical dimension ---------------------------------------------------------
def seed_factors(dim: int, base: float, original: int, scale: float) -> dict[str, np.ndarray]:
    """{'pi', 'ntk', 'yarn'}: the exact per-pair factors each method implies."""
    from ..rope import methods
    from ..rope.basis import factors_of

    out = {}
    for name, fn in (("pi", methods.linear), ("ntk", methods.ntk), ("yarn", methods.yarn)):
        inv, _ = fn(dim, base, original, factor=scale)
        out[name] = factors_of(inv, dim, base).numpy().astype(np.float64)
    return out


def carry_factors(factors, from_scale: float, to_scale: float) -> np.ndarray:
    """Another stage's factors (searched for scale `from_scale`) carried to `to_scale`, keeping each
    pair's place between "not interpolated" (1) and "fully interpolated" (the scale).

    YaRN writes pair i's frequency as a blend of the interpolated and the original one,
    1/lambda_i = (1 - g_i)/s + g_i; g_i is read off the old factors and reused with the new scale,
    so yarn:s0 carries to yarn:s exactly, PI to PI, no scaling to no scaling, and a pair the search
    pushed past s0 (g_i < 0) lands past s. A pair whose new frequency would be <= 0 gets +inf
    (the search clips it to the space's upper bound)."""
    lam = np.asarray(factors, dtype=np.float64)
    if not from_scale > 1.0 or not to_scale > 0.0:
        raise LongRopeError(f"cannot carry factors from scale {from_scale} to {to_scale}")
    g = (1.0 / lam - 1.0 / from_scale) / (1.0 - 1.0 / from_scale)
    inv = (1.0 - g) / to_scale + g
    with np.errstate(divide="ignore"):
        return np.where(inv > 0, 1.0 / np.where(inv > 0, inv, 1.0), np.inf)


def critical_dim(dim: int, base: float, original: int) -> int:
    """LongRoPE2's theoretical critical dimension d_tcd = 2*ceil((d/2) * log_b(L / (2*pi)))."""
    return 2 * math.ceil((dim / 2) * math.log(original / (2 * math.pi)) / math.log(base))


def resolve_critical(spec: str | int | None, dim: int, base: float, original: int) -> int | None:
    """`--critical-dim auto|K` -> an even dimension 0 < K < dim, or None when not set."""
    if spec is None or spec == "none":
        return None
    value = critical_dim(dim, base, original) if spec == "auto" else spec
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise LongRopeError(f"--critical-dim must be 'auto' or an even number, got {spec!r}") from None
    if value % 2 or not 0 < value < dim:
        raise LongRopeError(f"critical dimension {value} must be even and between 2 and {dim - 2} "
                            f"(rotary dim {dim})")
    return value


# ---- samples ----------------------------------------------------------------------------------
def needle_samples(ids: list[list[int]], tokenizer, length: int, count: int, *, bos_id: int | None,
                   seed: int = 0) -> tuple[list[torch.Tensor], tuple[int, int], list[int]]:
    """`count` samples of `length` tokens: BOS, a pass-key needle, document text, the question and
    the key as answer. Every answer has the same token count, so one position range covers them.
    Returns (samples, (first answer position, length), the documents used: indices into `ids`)."""
    rng = random.Random(seed)

    def enc(text):
        return list(tokenizer.encode(text, add_special_tokens=False))

    question = enc(" " + QUESTION)  # after the document text, as the next sentence
    answer_len = None
    out = []
    docs = [i for i, d in enumerate(ids) if d]
    used: set[int] = set()
    pos = 0
    for _ in range(count):
        for _ in range(1000):
            key = rng.randint(10000, 99999)
            ans = enc(f" {key}")
            if answer_len is None or len(ans) == answer_len:
                answer_len = len(ans)
                break
        else:  # pragma: no cover - tokenizers give five-digit numbers a steady length
            raise LongRopeError("cannot find pass keys of a steady token length for the needle objective")
        head = ([bos_id] if bos_id is not None else []) + enc(KEY_LINE.format(k=key) + " ")
        body = length - len(head) - len(question) - len(ans)
        if body < 1:
            raise LongRopeError(f"target length {length} is too short for the needle objective")
        if sum(len(ids[i]) for i in docs) < body:
            raise LongRopeError(f"the data holds too few tokens for needle samples of {length} tokens")
        text: list[int] = []
        while len(text) < body:  # documents in turn, joined when one is too short
            i = docs[pos % len(docs)]
            text.extend(ids[i])
            used.add(i)
            pos += 1
        out.append(torch.tensor(head + text[:body] + question + ans, dtype=torch.long))
    return out, (length - answer_len, length), sorted(used)


# ---- data-parallel scoring --------------------------------------------------------------------
def init_distributed(device: str) -> tuple[int, int, str]:
    """(rank, world size, device) from the launcher's environment (torchrun sets WORLD_SIZE, RANK,
    LOCAL_RANK, MASTER_ADDR/PORT); gloo on CPU, NCCL on GPU. A plain run is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    import torch.distributed as dist

    if device.startswith("cuda") and ":" not in device:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


class Objective:
    """Batch fitness: candidates -> perplexities at one of several fidelities (numbers of documents).

    The score on the first `docs` samples is exp(mean of the per-sample NLL), the mean taken in
    sample order, so it is the same number whichever way the per-sample NLLs were obtained. They
    are cached per (candidate, sample): a candidate promoted from screening on one document to all
    documents only runs the documents it has not seen. Candidates are dealt round-robin over the
    processes and the scores gathered, so every process gets the full, identical list (a
    candidate's per-sample NLL does not depend on which process computed it).
    """

    def __init__(self, model, samples: Sequence[torch.Tensor], *, original: int, target: int,
                 positions: tuple[int, int] | None = None, chunk: int = 1024,
                 rank: int = 0, world: int = 1, on_score=None, make_scaling=None, store=None):
        self.model, self.samples, self.original, self.target = model, list(samples), original, target
        self.make_scaling = make_scaling  # Candidate -> Scaling; default: long factors at the target
        self.positions, self.chunk = positions, chunk
        self.rank, self.world, self.on_score = rank, world, on_score
        self.forward_passes = 0  # sample forward passes run by this process
        self.nll: dict[tuple, float] = {}
        self.screen_samples: list[int] | None = None  # the cheap fitness's samples (default: the first)
        self.store = store  # a search.cache.ScoreCache shared across runs, or None
        self.cache_hits = 0  # sample NLLs taken from the store instead of a forward pass
        if store is not None:
            from .cache import sample_hashes
            self._sample_keys = sample_hashes(self.samples)

    def scaling(self, c: Candidate):
        from ..rope.scaling import Scaling

        if self.make_scaling is not None:
            return self.make_scaling(c)

        return Scaling(method="longrope", long_factor=list(c.factors), n_hat=int(c.n_hat),
                       original_max_position=self.original, target_length=self.target,
                       factor=self.target / self.original, attention=c.attn)

    def fitness(self, docs: int | None = None):
        """The batch fitness on the first `docs` samples (all by default)."""
        n = len(self.samples) if docs is None else min(docs, len(self.samples))
        return lambda cands: self.score_many([(self.scaling(c), c) for c in cands], n)

    def _sample_nlls(self, scaling, key, docs: int) -> list[float]:
        from .. import patch
        from ..eval.perplexity import perplexity

        idx = list(range(docs))
        if self.screen_samples is not None and docs < len(self.samples):
            idx = sorted(self.screen_samples[:docs])  # the mean in sample order, as for all samples
        todo = [i for i in idx if (key, i) not in self.nll]
        if todo and self.store is not None:
            from .cache import scaling_key
            skey = scaling_key(scaling)
            for i in list(todo):
                v = self.store.get(skey, self._sample_keys[i])
                if v is not None:
                    self.nll[(key, i)] = v
                    self.cache_hits += 1
                    todo.remove(i)
        if todo:
            patch.apply(self.model, scaling)
            try:
                groups = [[i] for i in todo] if self.positions else [todo]
                for g in groups:  # answer-only NLL is reported per call, so one sample per call
                    r = perplexity(self.model, [self.samples[i] for i in g], chunk=self.chunk,
                                   positions=[self.positions] if self.positions else None)
                    if self.positions:
                        nll = next(iter(r.by_range.values()))["nll"]
                        vals = [float("inf") if nll is None else nll]
                    else:
                        vals = r.doc_nll
                    for i, v in zip(g, vals):
                        self.nll[(key, i)] = float(v)
                        if self.store is not None:
                            self.store.put(skey, self._sample_keys[i], float(v))
                    self.forward_passes += len(g)
            finally:
                patch.remove(self.model)
        return [self.nll[(key, i)] for i in idx]

    def score_one(self, scaling, key, docs: int) -> float:
        nlls = self._sample_nlls(scaling, key, docs)
        if self.on_score:
            self.on_score()
        nll = sum(nlls) / len(nlls)
        return math.exp(nll) if nll < 700 else (float("inf") if nll == nll else nll)

    def counts(self) -> tuple[int, int]:
        """(sample forward passes, cache hits) of every process together; collective under a launcher."""
        if self.world == 1:
            return self.forward_passes, self.cache_hits
        import torch.distributed as dist

        parts: list = [None] * self.world
        dist.all_gather_object(parts, (self.forward_passes, self.cache_hits))
        return sum(p[0] for p in parts), sum(p[1] for p in parts)

    def score_many(self, items: list[tuple], docs: int | None = None) -> list[float]:
        """Scores of [(scaling, cache key), ...] on the first `docs` samples, gathered over ranks."""
        n = len(self.samples) if docs is None else docs
        mine = [self.score_one(sc, key, n) for sc, key in items[self.rank::self.world]]
        if self.world == 1:
            return mine
        import torch.distributed as dist

        parts: list = [None] * self.world
        dist.all_gather_object(parts, mine)
        out: list = [None] * len(items)
        for r, part in enumerate(parts):
            out[r::self.world] = part
        return out
