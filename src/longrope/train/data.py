"""What `longrope finetune` trains on: documents joined into fixed-length samples, the plan of which
process takes which samples at which step, and the original-window pieces of a sample."""
from __future__ import annotations

import torch

from ..errors import LongRopeError
from .config import FinetuneConfig


def training_samples(cfg: FinetuneConfig, tok) -> tuple[torch.Tensor, list[dict]]:
    """[n, length] token ids: documents joined with EOS BOS into BOS-first samples (seeded), and the
    documents they hold by name and token count (what finetune.json cites)."""
    from ..data import build_samples, load_tokenized

    documents = load_tokenized(tok, cfg.data, cfg.split, cfg.cache_dir)
    ids = documents.ids
    bos, eos = tok.bos_token_id, tok.eos_token_id
    try:  # enough data for every step without repeating: build just that many
        samples = build_samples(ids, cfg.length, cfg.steps * cfg.batch_size, mode="join", bos_id=bos,
                                sep_id=eos, seed=cfg.seed)
    except LongRopeError:  # fewer: as many as the data hold, repeated in a new order each epoch
        samples = build_samples(ids, cfg.length, None, mode="join", bos_id=bos, sep_id=eos, seed=cfg.seed)
    if len(samples) < cfg.batch_size:
        raise LongRopeError(f"the data hold {sum(map(len, ids)):,} tokens: {len(samples)} samples of "
                            f"{cfg.length:,} tokens, fewer than one batch of {cfg.batch_size}")
    stacked = torch.stack(samples.tensors)  # [n, length]
    if cfg.passkey_share > 0:
        from ..data.passkey import mix_passkey_samples
        stacked = mix_passkey_samples(tok, stacked, cfg.passkey_share, seed=cfg.seed)
    return stacked, documents.cite(samples.used)


class BatchPlan:
    """Which samples each process trains on at each step, and which micro-batches are short-window.

    Global step s takes samples s*B .. s*B+B-1 of an endless stream: epoch e is a permutation of all
    samples drawn from torch.Generator(seed, e). The B samples form B/m micro-batches; process r of W
    takes the r-th contiguous share. Nothing depends on earlier steps, so a resume needs only `s`."""

    def __init__(self, samples: torch.Tensor, cfg: FinetuneConfig, rank: int, world: int):
        self.samples, self.cfg, self.rank, self.world = samples, cfg, rank, world
        micros = cfg.batch_size // cfg.micro_batch
        if micros % world:
            raise LongRopeError(f"--batch-size {cfg.batch_size} / --micro-batch {cfg.micro_batch} = {micros} "
                                f"micro-batches per step cannot be split over {world} processes")
        self.micros_per_rank = micros // world
        self.my_micros = range(rank * self.micros_per_rank, (rank + 1) * self.micros_per_rank)
        self._perms: dict[int, torch.Tensor] = {}

    def _index(self, i: int) -> int:
        n = len(self.samples)
        epoch, pos = divmod(i, n)
        if epoch not in self._perms:
            gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(n, generator=gen)}
        return int(self._perms[epoch][pos])

    def short_flags(self, step: int) -> list[bool]:
        """For every micro-batch of the global step: trained with the original rotation?"""
        micros = self.cfg.batch_size // self.cfg.micro_batch
        if self.cfg.mixed_window <= 0:
            return [False] * micros
        gen = torch.Generator().manual_seed(self.cfg.seed * 7_919 + step + 1)
        return (torch.rand(micros, generator=gen) < self.cfg.mixed_window).tolist()

    def micro_batches(self, step: int) -> list[tuple[torch.Tensor, bool]]:
        m, flags = self.cfg.micro_batch, self.short_flags(step)
        out = []
        for k in self.my_micros:
            first = step * self.cfg.batch_size + k * m
            rows = [self._index(first + j) for j in range(m)]
            out.append((self.samples[rows], flags[k]))
        return out


def short_pieces(x: torch.Tensor, window: int) -> torch.Tensor:
    """[m, N] -> [m * N//w, w]: independent original-window sequences (positions restart at 0),
    i.e. a block-diagonal attention mask; a tail shorter than the window is dropped."""
    w = min(window, x.shape[1])
    n = (x.shape[1] // w) * w
    return x[:, :n].reshape(-1, w)
