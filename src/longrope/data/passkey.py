"""Passkey retrieval prompts in the format the papers used (see the facts file).

Lines joined with newlines: the intro; filler sentences ("The grass is green. The sky is blue.
The sun is yellow. Here we go. There and back again." repeated); "The pass key is K. Remember it.
K is the pass key." at `depth` (fraction of the filler before it); more filler; "What is the pass
key? The pass key is". The amount of filler is chosen, by whole sentences, so the prompt is as long
as possible without exceeding `length` tokens (special tokens the tokenizer adds included).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..errors import LongRopeError

INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
         "them. I will quiz you about the important information there.")
FILLER = ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
          "There and back again.")
KEY_LINE = "The pass key is {k}. Remember it. {k} is the pass key."
QUESTION = "What is the pass key? The pass key is"
KEY_MIN, KEY_MAX = 1, 50000  # the papers' key range


@dataclass
class PasskeyPrompt:
    input_ids: torch.Tensor  # 1-D LongTensor, at most `length` tokens
    key: int
    key_position: int  # index of the first token of the key line
    depth: float


def prompt_text(n_filler: int, depth: float, key: int, rotate: int = 0) -> tuple[str, int]:
    """The prompt with `n_filler` filler sentences, and the character offset of the key line."""
    sentences = [FILLER[(rotate + i) % len(FILLER)] for i in range(n_filler)]
    n_pre = int(round(depth * n_filler))
    parts = [INTRO]
    if n_pre:
        parts.append(" ".join(sentences[:n_pre]))
    key_at = len("\n".join(parts)) + 1
    parts.append(KEY_LINE.format(k=key))
    if n_filler - n_pre:
        parts.append(" ".join(sentences[n_pre:]))
    parts.append(QUESTION)
    return "\n".join(parts), key_at


def _encode(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]] | None]:
    try:
        enc = tokenizer(text, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    except (NotImplementedError, TypeError, ValueError):  # slow tokenizers have no offsets
        return list(tokenizer(text)["input_ids"]), None


def _key_token_index(tokenizer, text: str, ids, offsets, key_at: int) -> int:
    if offsets is not None:
        for i, (start, end) in enumerate(offsets):
            if end > start and end > key_at:
                return i
    return len(tokenizer(text[:key_at].rstrip("\n"))["input_ids"])  # pragma: no cover


def passkey_prompt(tokenizer, length: int, depth: float, key: int, *, seed: int = 0) -> PasskeyPrompt:
    """A passkey prompt of at most `length` tokens with `key` at `depth` (0 = start, 1 = end of filler).

    `seed` 0 gives the canonical filler; another seed starts the filler cycle at a sentence drawn
    from `random.Random(seed)` (variety for training, same length rule).
    """
    if not 0.0 <= depth <= 1.0:
        raise LongRopeError(f"passkey depth must be between 0 and 1, got {depth}")
    if not isinstance(key, int) or key < 0:
        raise LongRopeError(f"passkey must be a non-negative integer, got {key!r}")
    rotate = 0 if seed == 0 else random.Random(seed).randrange(len(FILLER))

    def size(n: int) -> int:
        return len(_encode(tokenizer, prompt_text(n, depth, key, rotate)[0])[0])

    base = size(0)
    if base > length:
        raise LongRopeError(f"a passkey prompt needs at least {base} tokens with this tokenizer, asked for {length}")
    # The most filler sentences that fit: size() grows with n, so bisect between a count that fits
    # (lo) and one that does not (hi). Each size() tokenizes the whole prompt, so a walk of one
    # sentence at a time from an estimate was quadratic (~12 s per 32k prompt); this is ~log2(n) calls.
    per = max((size(10) - base) / 10, 1.0)
    lo, hi = 0, max(int((length - base) / per), 1)
    while size(hi) <= length:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if size(mid) <= length else (lo, mid)
    n = lo
    text, key_at = prompt_text(n, depth, key, rotate)
    ids, offsets = _encode(tokenizer, text)
    pos = _key_token_index(tokenizer, text, ids, offsets, key_at)
    return PasskeyPrompt(torch.tensor(ids, dtype=torch.long), key, pos, depth)


def answer_ids(tokenizer, key: int) -> list[int]:
    """The tokens that complete a prompt correctly: " K." then EOS."""
    return list(tokenizer(f" {key}.", add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]


def mix_passkey_samples(tokenizer, samples: torch.Tensor, share: float, *, seed: int = 0) -> torch.Tensor:
    """Training rows with long-range retrieval in them: a seeded `share` of the rows of `samples`
    [n, L] are replaced by a passkey prompt of L/2..L tokens (random key and depth, varied filler),
    its answer and EOS, then the row's own text until L tokens (every token a real target, no padding).
    The other rows are returned unchanged."""
    n, length = samples.shape
    rng = random.Random(seed * 1_000_003 + 17)
    out = samples.clone()
    for row in sorted(rng.sample(range(n), int(round(share * n)))):
        key = rng.randint(KEY_MIN, KEY_MAX)
        answer = answer_ids(tokenizer, key)
        shortest = len(_encode(tokenizer, prompt_text(0, 0.0, key)[0])[0])  # no filler at all
        if shortest + len(answer) > length:
            raise LongRopeError(f"a {length:,}-token sample cannot hold a passkey prompt and its answer "
                                f"({shortest + len(answer)} tokens with this tokenizer); use a longer "
                                f"length or no passkey share")
        budget = rng.randint(max(length // 2, shortest), length - len(answer))
        prompt = passkey_prompt(tokenizer, budget, rng.randint(0, 1000) / 1000, key,
                                seed=rng.randint(1, 1 << 30)).input_ids.tolist()
        head = prompt + answer  # [<= L]
        out[row] = torch.tensor(head + samples[row, :length - len(head)].tolist(), dtype=samples.dtype)
    return out
