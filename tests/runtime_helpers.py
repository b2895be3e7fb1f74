"""Whole-array versions of the runtime parity figures, for short sequences in tests: the library
(`longrope.runtimes.parity`) only ever holds a chunk of positions at a time."""
from __future__ import annotations

import numpy as np
import torch

from longrope.runtimes import parity


def log_softmax(x: np.ndarray) -> np.ndarray:
    return torch.log_softmax(torch.as_tensor(x, dtype=torch.float64), dim=-1).numpy()


def transformers_logits(hf_dir, ids: list[int]) -> np.ndarray:
    """float32 [len(ids), vocab] from stock transformers in float32."""
    with torch.no_grad():
        return parity.load_transformers(hf_dir)(torch.tensor([ids])).logits[0].float().numpy()


def llama_cpp_logits(gguf, ids: list[int], n_ctx: int, threads: int = 2) -> tuple[np.ndarray, int]:
    """(float32 [len(ids), vocab], the context llama.cpp allocated)."""
    used, chunks = parity.llama_cpp_chunks(gguf, ids, n_ctx, threads)
    return np.concatenate([logits for _, logits in chunks]), used


def compare_logits(runtime: str, ours, ref, ids, context: int, gated: bool = True) -> parity.Row:
    tally = parity.Tally(ids)
    tally.add_logits(0, ours, ref)
    return tally.row(runtime, context, gated)


def compare_logprobs(runtime: str, theirs, ref, ids, context: int, gated: bool = True) -> parity.Row:
    """A runtime that returns log-probs for positions 0..len(ids)-2 (the next token and its top tokens)."""
    tally = parity.Tally(ids)
    tally.add_logprobs(0, theirs, ref[: len(theirs)])
    return tally.row(runtime, context, gated)
