"""What the search minimises on a real model: perplexity at the target length, the NLL of the answer
tokens of needles planted in the documents (LongRoPE2's needle-driven objective), or the two
combined, scored data-parallel over the processes of a `torchrun` launch.

Also here: the exact seed factors of PI, NTK and YaRN (lambda_i = theta_i / theta'_i, computed
from `longrope.rope.methods`). LongRoPE2's settings (critical dimension, objectives) are in
search/longrope2.py.
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



# ---- seeds ---------------------------------------------------------------------------------
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


# ---- samples ----------------------------------------------------------------------------------
def needle_samples(texts: Sequence[torch.Tensor], tokenizer, *, bos_id: int | None,
                   seed: int = 0) -> tuple[list[torch.Tensor], int]:
    """The text samples with a pass-key needle planted in each and the question and key appended:
    BOS, document, needle, document, " What is the pass key? The pass key is", key; as long as the
    text sample it replaces (the document is cut to make room). Sample k of n has its needle at depth
    k/n of the document (0: right after BOS, the farthest from the question), so the samples cover
    distances from the whole length down; the keys are five-digit numbers of one token count, so
    one position range [answer start, length) covers every answer. Returns (samples, answer start).

    LongRoPE2 scores "the answer tokens of needles in long documents" from its own data set (its
    generator is not released); this is that shape on the search's own documents."""
    rng = random.Random(seed)

    def enc(text):
        return list(tokenizer.encode(text, add_special_tokens=False))

    question = enc(" " + QUESTION)  # after the document text, as the next sentence
    answer_len = None
    out = []
    head = [bos_id] if bos_id is not None else []
    for k, t in enumerate(texts):
        ids = t.reshape(-1).tolist()
        length = len(ids)
        for _ in range(1000):
            key = rng.randint(10000, 99999)
            ans = enc(f" {key}")
            if answer_len is None or len(ans) == answer_len:
                answer_len = len(ans)
                break
        else:  # pragma: no cover - tokenizers give five-digit numbers a steady length
            raise LongRopeError("cannot find pass keys of a steady token length for the needle objective")
        if out and length != out[0].numel():
            raise LongRopeError("needle samples need text samples of one length")
        needle = enc(KEY_LINE.format(k=key) + " ")
        doc = ids[len(head):] if head and ids[:1] == head else ids
        body = length - len(head) - len(needle) - len(question) - len(ans)
        if body < 1:
            raise LongRopeError(f"target length {length} is too short for the needle objective")
        at = (k * body) // len(texts)
        out.append(torch.tensor(head + doc[:at] + needle + doc[at:body] + question + ans, dtype=torch.long))
    if not out:
        raise LongRopeError("no text samples to plant needles in")
    return out, out[0].numel() - answer_len


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

    The score on the first `docs` samples is exp(mean of the per-sample loss), the mean taken in
    sample order; a sample's loss is its mean NLL, or with `terms` (`objective_terms`) the weighted
    sum of its ranges' mean NLLs. The mean is taken in sample order, so it is the same number whichever way the per-sample NLLs were obtained. They
    are cached per (candidate, sample): a candidate promoted from screening on one document to all
    documents only runs the documents it has not seen. Candidates are dealt round-robin over the
    processes and the scores gathered, so every process gets the full, identical list (a
    candidate's per-sample NLL does not depend on which process computed it).
    """

    def __init__(self, model, samples: Sequence[torch.Tensor], *, original: int, target: int,
                 terms: Sequence[tuple[int, int, float]] | None = None, chunk: int = 1024,
                 rank: int = 0, world: int = 1, on_score=None, make_scaling=None, store=None):
        self.model, self.samples, self.original, self.target = model, list(samples), original, target
        self.make_scaling = make_scaling  # Candidate -> Scaling; default: long factors at the target
        self.terms, self.chunk = (tuple(tuple(t) for t in terms) if terms else None), chunk
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
                groups = [[i] for i in todo] if self.terms else [todo]
                for g in groups:  # range NLLs are reported per call, so one sample per call
                    r = perplexity(self.model, [self.samples[i] for i in g], chunk=self.chunk,
                                   positions=[t[:2] for t in self.terms] if self.terms else None)
                    vals = [_terms_loss(r, self.terms)] if self.terms else r.doc_nll
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


def _terms_loss(r, terms) -> float:
    """sum of weight * mean NLL over the ranges of one scored sample (inf when a range is empty)."""
    total = 0.0
    for a, b, w in terms:
        nll = r.by_range[f"{a}-{b}"]["nll"]
        if nll is None:
            return float("inf")
        total += w * nll
    return total
