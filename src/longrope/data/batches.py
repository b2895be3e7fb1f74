"""The batches `longrope pretrain` trains on: random crops of the training token stream and, with
probability `passkey_share`, synthetic passkey prompts followed by their answer, right-padded. Every
draw comes from one `torch.Generator`, so a resumed run (its generator state restored) repeats the
uninterrupted one."""
from __future__ import annotations

import torch

from ..errors import LongRopeError
from .passkey import KEY_MAX, KEY_MIN


class Batches:
    """Deterministic training batches from the token stream and synthetic passkey prompts."""

    def __init__(self, stream: torch.Tensor, tok, gen: torch.Generator, *, window: int, batch_size: int,
                 passkey_share: float):
        from .passkey import answer_ids, passkey_prompt, prompt_text

        self.stream, self.tok, self.gen = stream, tok, gen
        self.window, self.batch_size, self.passkey_share = window, batch_size, passkey_share
        self.passkey_prompt, self.answer_ids = passkey_prompt, answer_ids
        self.bos, self.pad = tok.bos_token_id, tok.pad_token_id
        # the shortest prompt (no filler) with the longest key: every drawn length must reach it
        self.min_len = len(tok(prompt_text(0, 0.0, KEY_MAX)[0])["input_ids"])
        if passkey_share > 0 and self.min_len + 8 > window:
            raise LongRopeError(f"a {window}-token window cannot hold a passkey sample "
                                f"(needs {self.min_len + 8} tokens); use --passkey-share 0")

    def _prompt(self, length: int, depth: float, key: int, seed: int) -> list[int]:
        return self.passkey_prompt(self.tok, length, depth, key, seed=seed).input_ids.tolist()

    def _rand(self, hi: int) -> int:
        return int(torch.randint(hi, (1,), generator=self.gen))

    def passkey_sample(self) -> tuple[list[int], list[int], int]:
        w = self.window
        key = KEY_MIN + self._rand(KEY_MAX - KEY_MIN + 1)
        depth = self._rand(1001) / 1000
        answer = self.answer_ids(self.tok, key)
        lo = self.min_len
        length = lo + self._rand(max(w - len(answer) - lo, 1) + 1)
        prompt = self._prompt(length, depth, key, 1 + self._rand(1 << 30))
        ids = (prompt + answer)[:w]
        labels = list(ids) + [-100] * (w - len(ids))
        return ids + [self.pad] * (w - len(ids)), labels, len(prompt)

    def text_sample(self) -> tuple[list[int], list[int], int]:
        body = self.window - 1
        start = self._rand(len(self.stream) - body)
        ids = [self.bos] + self.stream[start:start + body].tolist()
        return ids, list(ids), len(ids)

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """input ids, labels (-100 = not scored), answer mask (label positions of passkey answers)."""
        rows, labels, answers = [], [], []
        for _ in range(self.batch_size):
            is_key = float(torch.rand((1,), generator=self.gen)) < self.passkey_share
            ids, lab, answer_at = self.passkey_sample() if is_key else self.text_sample()
            rows.append(ids)
            labels.append(lab)
            answers.append([answer_at <= i < len(lab) and lab[i] != -100 for i in range(len(lab))])
        return torch.tensor(rows), torch.tensor(labels), torch.tensor(answers)
