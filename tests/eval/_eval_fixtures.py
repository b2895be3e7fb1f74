"""Helpers and fixtures for the evaluation tests (import them; a second conftest.py would clash): a character-level tokenizer and a tiny model saved to disk."""
from __future__ import annotations

import pytest

from conftest import make_tiny
from helpers import char_tokenizer, write_texts


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
    return write_texts(tmp_path / "texts", n=6, words=900)


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread, above all on a busy machine; restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
