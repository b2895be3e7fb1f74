"""perplexity() against straightforward references: full float32 logits and transformers' own loss."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import FAMILIES, make_tiny
from longrope.errors import LongRopeError
from longrope.eval.perplexity import perplexity

pytestmark = pytest.mark.usefixtures("one_thread")


def _samples(n: int, length: int, vocab: int = 128, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(3, vocab, (length,), generator=g)
        ids[0] = 1  # BOS
        out.append(ids)
    return out


def _ref_truncate(model, samples) -> float:
    """Mean token NLL from the full float32 logits of one forward pass per sample."""
    tot, n = 0.0, 0
    with torch.no_grad():
        for s in samples:
            logits = model(s[None]).logits[0].float()
            tot += F.cross_entropy(logits[:-1], s[1:], reduction="sum").item()
            n += len(s) - 1
    return tot / n


def _ref_sliding(model, samples, stride: int, window: int) -> float:
    """The Hugging Face perplexity-guide loop: labels masked with -100, the model's own loss."""
    nll_sum, n_tokens = 0.0, 0
    with torch.no_grad():
        for s in samples:
            seq_len, prev_end = len(s), 0
            for begin in range(0, seq_len, stride):
                end = min(begin + window, seq_len)
                trg_len = end - prev_end
                ids = s[begin:end][None]
                labels = ids.clone()
                labels[:, :-trg_len] = -100
                count = int((labels[:, 1:] != -100).sum())
                loss = model(ids, labels=labels).loss.item()
                nll_sum += loss * count
                n_tokens += count
                prev_end = end
                if end == seq_len:
                    break
    return nll_sum / n_tokens, n_tokens


@pytest.mark.parametrize("family", FAMILIES)
def test_truncate_matches_full_logits(family):
    model = make_tiny(family)
    samples = _samples(3, 40)
    res = perplexity(model, samples, chunk=7)
    ref = _ref_truncate(model, samples)
    assert res.nll == pytest.approx(ref, rel=1e-4)
    assert res.ppl == pytest.approx(math.exp(ref), rel=1e-4)
    assert res.tokens == 3 * 39 and res.docs == 3
    assert len(res.doc_nll) == 3 and res.seconds > 0


@pytest.mark.parametrize("stride,window", [(8, 16), (16, 16), (5, 24), (24, 24)])
def test_sliding_window_matches_hf_guide(tiny_llama, stride, window):
    samples = _samples(2, 61, seed=1)
    res = perplexity(tiny_llama, samples, stride=stride, window=window, chunk=4)
    ref, count = _ref_sliding(tiny_llama, samples, stride, window)
    assert res.nll == pytest.approx(ref, rel=1e-4)
    assert res.tokens == count
    if stride < window:  # overlapping windows: every token but the first is scored exactly once
        assert res.tokens == 2 * 60


def test_sliding_with_full_window_equals_truncate(tiny_llama):
    samples = _samples(2, 30, seed=2)
    a = perplexity(tiny_llama, samples)
    b = perplexity(tiny_llama, samples, stride=10)  # window defaults to the sample length
    assert a.nll == pytest.approx(b.nll, rel=1e-6) and a.tokens == b.tokens


def test_batched_equals_unbatched_and_mixed_lengths(tiny_llama):
    samples = _samples(3, 32, seed=3) + _samples(2, 20, seed=4)
    one = perplexity(tiny_llama, samples, batch_size=1)
    many = perplexity(tiny_llama, samples, batch_size=3)
    assert many.nll == pytest.approx(one.nll, rel=1e-5)
    assert many.doc_nll == pytest.approx(one.doc_nll, rel=1e-5)
    assert many.tokens == 3 * 31 + 2 * 19


def test_position_ranges(tiny_llama):
    samples = _samples(2, 40, seed=5)
    res = perplexity(tiny_llama, samples, positions=[(0, 10), (10, 40), (30, 100)], chunk=6)
    with torch.no_grad():
        per_tok = torch.stack([F.cross_entropy(tiny_llama(s[None]).logits[0, :-1].float(), s[1:],
                                               reduction="none") for s in samples])  # targets 1..39
    assert res.by_range["0-10"]["tokens"] == 2 * 9
    assert res.by_range["0-10"]["nll"] == pytest.approx(per_tok[:, :9].mean().item(), rel=1e-4)
    assert res.by_range["10-40"]["nll"] == pytest.approx(per_tok[:, 9:].mean().item(), rel=1e-4)
    assert res.by_range["30-100"]["tokens"] == 2 * 10


def test_bf16_model_is_close(tiny_llama):
    samples = _samples(2, 32, seed=6)
    ref = perplexity(tiny_llama, samples).nll
    bf = perplexity(tiny_llama.to(torch.bfloat16), samples).nll
    assert bf == pytest.approx(ref, rel=2e-2)


def test_bad_arguments(tiny_llama):
    s = _samples(1, 20)
    with pytest.raises(LongRopeError):
        perplexity(tiny_llama, [])
    with pytest.raises(LongRopeError):
        perplexity(tiny_llama, s, stride=30, window=16)
    with pytest.raises(LongRopeError):
        perplexity(tiny_llama, s, positions=[(5, 5)])


@pytest.mark.parametrize("family", ["llama", "phi3"])
def test_chunked_mlps_exact_and_restored(family):
    model = make_tiny(family)
    samples = _samples(2, 50, seed=7)
    whole = perplexity(model, samples, mlp_chunk=None)
    calls, inner = [], []
    mlp = model.model.layers[0].mlp
    mlp.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[-2]))
    mlp.down_proj.register_forward_hook(lambda m, i, o: inner.append(i[0].shape[-2]))
    chunked = perplexity(model, samples, mlp_chunk=16)
    assert chunked.nll == pytest.approx(whole.nll, rel=1e-6)
    assert calls == [50, 50] and inner == [16, 16, 16, 2] * 2  # one call per sample, chunked inside
    assert "forward" not in mlp.__dict__  # restored
    ref = _ref_truncate(model, samples)
    assert chunked.nll == pytest.approx(ref, rel=1e-4)
