"""The built-in tokenizer recipe: byte-level BPE, digits one by one, BOS added, stock-loadable."""
from __future__ import annotations

from tests.data.helpers import make_text, small_tokenizer
from longrope.data.bpe import train_bpe


def test_digits_are_single_tokens_and_bos_is_added():
    tok = small_tokenizer()
    ids = tok("The pass key is 40917.")["input_ids"]
    assert ids[0] == tok.bos_token_id == 1 and tok.eos_token_id == 2 and tok.pad_token_id == 0
    pieces = tok.convert_ids_to_tokens(ids)
    assert [p for p in pieces if any(c.isdigit() for c in p)] == ["4", "0", "9", "1", "7"]
    assert tok.decode(ids, skip_special_tokens=True) == "The pass key is 40917."


def test_round_trip_through_auto_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    tok = small_tokenizer()
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = "def f(x):\n    return x * 31 + 'ünï'\n"
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"], skip_special_tokens=True) == text


def test_training_is_deterministic_and_respects_vocab_size():
    texts = [make_text(800, s) for s in range(3)]
    a, b = train_bpe(texts, vocab_size=350), train_bpe(texts, vocab_size=350)
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    assert len(a) <= 350
