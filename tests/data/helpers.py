"""Helpers for the data and pretrain tests (`from tests.data.helpers import ...`):
a small seeded text corpus, a BPE tokenizer trained on it, and a model folder holding that tokenizer."""
from __future__ import annotations

import random
from pathlib import Path

WORDS = ("alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega river stone cloud "
         "green blue yellow grass sky sun pass key remember value return import def class self "
         "for while if else list dict tuple number string print the and of to in is").split()


def make_text(n_words: int, seed: int) -> str:
    rng = random.Random(seed)
    lines, line = [], []
    for _ in range(n_words):
        line.append(rng.choice(WORDS) if rng.random() > 0.1 else str(rng.randint(0, 99999)))
        if len(line) >= rng.randint(6, 14):
            lines.append(" ".join(line).capitalize() + ".")
            line = []
    return "\n".join(lines + [" ".join(line)])


def write_corpus(folder: Path, sizes=(2000, 300, 1500, 80, 900, 120, 60, 2500), seed: int = 0) -> Path:
    """Text files doc00.txt, doc01.txt, ... of the given word counts."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(sizes):
        (folder / f"doc{i:02d}.txt").write_text(make_text(n, seed + i), encoding="utf-8")
    return folder


_TOK = None


def small_tokenizer():
    """A byte-level BPE (vocab 400) trained on the seeded corpus plus the passkey sentences."""
    global _TOK
    if _TOK is None:
        from longrope.data.bpe import train_bpe
        from longrope.data.passkey import FILLER, INTRO, KEY_LINE, QUESTION

        texts = [make_text(3000, s) for s in range(4)] + [INTRO, " ".join(FILLER) * 5, KEY_LINE, QUESTION]
        _TOK = train_bpe(texts, vocab_size=400)
    return _TOK


def tokenizer_model_dir(path: Path) -> Path:
    """A folder that `longrope.models.load_tokenizer` accepts: the small tokenizer plus a config.json."""
    from transformers import LlamaConfig

    path.mkdir(parents=True, exist_ok=True)
    LlamaConfig(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                num_attention_heads=1, head_dim=64).save_pretrained(path)
    small_tokenizer().save_pretrained(path)
    return path
