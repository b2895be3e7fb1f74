"""Passkey prompts: the facts-file format, the length rule, the key position, bad arguments."""
from __future__ import annotations

import pytest

from longrope.data.passkey import FILLER, INTRO, QUESTION, passkey_prompt, prompt_text
from longrope.errors import LongRopeError
from longrope.eval.passkey import parse_answer
from tests.data.helpers import small_tokenizer


@pytest.mark.parametrize("length", [256, 300, 1000])
def test_length_is_as_close_as_possible_without_exceeding(length):
    tok = small_tokenizer()
    p = passkey_prompt(tok, length, 0.5, 31415)
    n = len(p.input_ids)
    assert n <= length
    # one more filler sentence would not fit
    text, _ = prompt_text(0, 0.5, 31415)
    longest_sentence = max(len(tok(s, add_special_tokens=False)["input_ids"]) for s in FILLER) + 1
    assert length - n <= longest_sentence
    assert p.input_ids[0] == tok.bos_token_id


def test_format_and_key_position():
    tok = small_tokenizer()
    p = passkey_prompt(tok, 400, 0.3, 4242)
    text = tok.decode(p.input_ids, skip_special_tokens=True)
    lines = text.split("\n")
    assert lines[0] == INTRO and lines[-1] == QUESTION
    assert "The pass key is 4242. Remember it. 4242 is the pass key." in lines
    assert lines[1].startswith("The grass is green. The sky is blue.")
    assert tok.decode(p.input_ids[p.key_position:]).lstrip().startswith("The pass key is 4242.")
    assert p.key == 4242 and p.depth == 0.3


def test_depth_moves_the_key():
    tok = small_tokenizer()
    pos = [passkey_prompt(tok, 600, d, 7).key_position for d in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert pos == sorted(pos) and pos[0] < pos[-1]
    start = passkey_prompt(tok, 600, 0.0, 7)
    assert tok.decode(start.input_ids[1:start.key_position], skip_special_tokens=True).strip() == INTRO
    end = passkey_prompt(tok, 600, 1.0, 7)
    assert tok.decode(end.input_ids[end.key_position:], skip_special_tokens=True).split("\n")[1] == QUESTION


def test_seed_zero_is_canonical_and_other_seeds_rotate_filler():
    tok = small_tokenizer()
    canon = passkey_prompt(tok, 300, 0.5, 11)
    assert passkey_prompt(tok, 300, 0.5, 11, seed=0).input_ids.tolist() == canon.input_ids.tolist()
    starts = {tok.decode(passkey_prompt(tok, 300, 0.5, 11, seed=s).input_ids, skip_special_tokens=True)
              .split("\n")[1].split(".")[0] for s in range(1, 12)}
    assert len(starts) > 1
    assert all(len(passkey_prompt(tok, 300, 0.5, 11, seed=s).input_ids) <= 300 for s in range(5))


def test_bad_arguments():
    tok = small_tokenizer()
    with pytest.raises(LongRopeError, match="needs at least"):
        passkey_prompt(tok, 10, 0.5, 1)
    with pytest.raises(LongRopeError, match="between 0 and 1"):
        passkey_prompt(tok, 300, 1.5, 1)
    with pytest.raises(LongRopeError, match="non-negative integer"):
        passkey_prompt(tok, 300, 0.5, -3)


def test_mixed_passkey_samples_hold_prompt_answer_then_text():
    import torch

    from longrope.data.passkey import answer_ids, mix_passkey_samples
    tok = small_tokenizer()
    gen = torch.Generator().manual_seed(0)
    samples = torch.randint(5, tok.vocab_size, (12, 400), generator=gen)  # [n, L] stand-in text rows
    mixed = mix_passkey_samples(tok, samples, 0.25, seed=3)
    assert mixed.shape == samples.shape and mixed.dtype == samples.dtype
    changed = [i for i in range(12) if not torch.equal(mixed[i], samples[i])]
    assert len(changed) == 3  # round(0.25 * 12)
    q = tok(QUESTION, add_special_tokens=False)["input_ids"]
    for i in changed:
        row = mixed[i].tolist()
        text = tok.decode(row)
        assert text.startswith(tok.bos_token + INTRO) and QUESTION in text
        key = parse_answer(text[text.index("The pass key is"):])
        # the answer follows the question, then EOS, then the original row's first tokens
        end = max(j + len(q) for j in range(len(row) - len(q) + 1) if row[j:j + len(q)] == q)
        ans = answer_ids(tok, key)
        assert row[end:end + len(ans)] == ans and ans[-1] == tok.eos_token_id
        rest = row[end + len(ans):]
        assert rest == samples[i, :len(rest)].tolist()
        assert end >= 200  # the prompt takes at least half the row
    assert torch.equal(mix_passkey_samples(tok, samples, 0.25, seed=3), mixed)  # seeded
    assert not torch.equal(mix_passkey_samples(tok, samples, 0.25, seed=4), mixed)
    assert torch.equal(mix_passkey_samples(tok, samples, 0.0, seed=3), samples)


def _walk_filler(tok, length, depth, key):
    """The builder's earlier rule, one sentence at a time: the most filler sentences that fit."""
    n = 0
    while len(tok(prompt_text(n + 1, depth, key)[0])["input_ids"]) <= length:
        n += 1
    return n


@pytest.mark.parametrize("length,depth", [(300, 0.0), (777, 0.5), (1500, 1.0)])
def test_the_bisection_finds_the_most_filler_that_fits(length, depth):
    tok = small_tokenizer()
    p = passkey_prompt(tok, length, depth, 123)
    expect, _ = prompt_text(_walk_filler(tok, length, depth, 123), depth, 123)
    assert p.input_ids.tolist() == tok(expect)["input_ids"]


class _Denser:
    """A word tokenizer whose words past the 200th cost two tokens: the first 10 filler sentences
    underestimate a long prompt's rate, so the first guess overshoots by ~2x (as SmolLM2's did)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, text, return_offsets_mapping=False, **kw):
        import re
        self.calls += 1
        spans = [m.span() for m in re.finditer(r"\S+", text)]
        spans = [sp for i, sp in enumerate(spans) for _ in range(1 + (i >= 200))]
        out = {"input_ids": [1] * len(spans)}
        if return_offsets_mapping:
            out["offset_mapping"] = spans
        return out


def test_a_long_prompt_costs_logarithmically_many_tokenizations():
    tok = _Denser()
    p = passkey_prompt(tok, 20000, 0.5, 99)
    assert 19990 < p.input_ids.numel() <= 20000
    assert tok.calls <= 40  # one sentence at a time from the first guess took 2,610 calls here
