"""Helpers shared by the test packages (imported; `tests/` is on sys.path through conftest.py):
a character tokenizer, a tiny model folder, seeded text documents, and the environment for
`python -m longrope` subprocesses."""
from __future__ import annotations

import os
import random
import string
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0..3 match the tiny configs' pad/bos/eos


def char_tokenizer(bos: bool = True):
    """One token per printable character (vocab 104 < the tiny models' 128); `bos` adds <s> first."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for ch in string.printable:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


def save_tiny(path: Path, *, bos: bool = True, **kw) -> Path:
    """A tiny random Llama (window 32 unless told) with the character tokenizer, as a model folder."""
    from conftest import make_tiny

    make_tiny("llama", **kw).save_pretrained(path)
    char_tokenizer(bos).save_pretrained(path)
    return path


def write_texts(folder: Path, n: int = 6, words: int = 300, seed: int = 0) -> Path:
    """`n` seeded documents of `words` words each, one .txt file per document."""
    rng = random.Random(seed)
    vocab = ["alpha", "beta", "gamma", "delta", "river", "stone", "light", "north", "seven", "blue"]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"doc{i}.txt").write_text(" ".join(rng.choice(vocab) for _ in range(words)) + "\n",
                                            encoding="utf-8")
    return folder


def cli_env(threads: int = 1) -> dict:
    """Environment for a `python -m longrope` subprocess: the source tree importable, fixed threads,
    no launcher variables inherited."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = str(threads)
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env
