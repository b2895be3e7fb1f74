"""Fixtures of the evaluation tests: a character-level tokenizer, a tiny model saved to disk, a folder
of texts, one torch thread."""
from __future__ import annotations

import pytest

from tests.helpers import char_tokenizer, make_tiny, torch_threads, write_texts


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
    with torch_threads(1):
        yield
