"""Helpers and fixtures for the evaluation tests (import them; a second conftest.py would clash): a character-level tokenizer and a tiny model saved to disk."""
from __future__ import annotations

import string

import pytest

from conftest import make_tiny

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0..3 match the tiny configs' pad/bos/eos


def char_tokenizer():
    """A fast tokenizer with one token per printable character (vocab 104 < the tiny models' 128)."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for ch in string.printable:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


@pytest.fixture
def char_tok():
    return char_tokenizer()


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A tiny random Llama (window 32) and the character tokenizer, saved as a model folder."""
    path = tmp_path / "tiny-model"
    make_tiny("llama").save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


@pytest.fixture
def text_dir(tmp_path):
    """A folder of a few deterministic text documents (a few thousand characters each)."""
    import random

    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "light", "north", "seven", "blue"]
    d = tmp_path / "texts"
    d.mkdir()
    for i in range(6):
        text = " ".join(rng.choice(words) for _ in range(900))
        (d / f"doc{i}.txt").write_text(text + "\n", encoding="utf-8")
    return d


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread, above all on a busy machine; restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
