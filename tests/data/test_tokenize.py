"""The on-disk tokenization cache: keyed by tokenizer and content, never stale, dir chosen by argument."""
from __future__ import annotations

import pytest

from tests.data.helpers import make_text, small_tokenizer
from longrope.data import Document, tokenize_documents
from longrope.data import tokenize as tokmod


def docs(n=3, seed=0):
    return [Document(f"d{i}", make_text(200 + 50 * i, seed + i)) for i in range(n)]


def test_ids_match_the_tokenizer_without_special_tokens(tmp_path):
    tok = small_tokenizer()
    d = docs()
    ids = tokenize_documents(d, tok, cache_dir=tmp_path)
    assert ids == [tok(x.text, add_special_tokens=False)["input_ids"] for x in d]
    assert all(tok.bos_token_id not in x for x in ids)


def test_second_call_reads_the_cache(tmp_path, monkeypatch):
    tok = small_tokenizer()
    d = docs()
    first = tokenize_documents(d, tok, cache_dir=tmp_path)
    files = list((tmp_path / "tokens").glob("*.safetensors"))
    assert len(files) == 1

    def boom(*a, **k):
        raise AssertionError("re-tokenized although cached")

    monkeypatch.setattr(tokmod, "_encode", boom)
    assert tokenize_documents(d, tok, cache_dir=tmp_path) == first
    with pytest.raises(AssertionError, match="re-tokenized"):  # changed content: a new key
        tokenize_documents(d[:2] + [Document("d2", d[2].text + " more")], tok, cache_dir=tmp_path)


def test_key_changes_with_tokenizer_and_content():
    from longrope.data.bpe import train_bpe

    tok = small_tokenizer()
    other = train_bpe([make_text(500, 9)], vocab_size=300)
    d = docs()
    assert tokmod.cache_key(d, tok) == tokmod.cache_key(list(d), tok)
    assert tokmod.cache_key(d, tok) != tokmod.cache_key(d, other)
    assert tokmod.cache_key(d, tok) != tokmod.cache_key(d[::-1], tok)
    assert tokmod.tokenizer_fingerprint(tok) == tokmod.tokenizer_fingerprint(tok.backend_tokenizer)


def test_damaged_cache_entry_is_rebuilt(tmp_path):
    tok = small_tokenizer()
    d = docs()
    good = tokenize_documents(d, tok, cache_dir=tmp_path)
    (entry,) = (tmp_path / "tokens").glob("*.safetensors")
    entry.write_bytes(b"garbage")
    assert tokenize_documents(d, tok, cache_dir=tmp_path) == good


def test_default_cache_dir_follows_longrope_cache_dir(monkeypatch, tmp_path):
    """$LONGROPE_CACHE_DIR holds every cache (tokens/ and the search's scores/), else
    $XDG_CACHE_HOME/longrope, else ~/.cache/longrope."""
    from longrope.search.cache import default_dir

    monkeypatch.setenv("LONGROPE_CACHE_DIR", str(tmp_path / "mine"))
    tokenize_documents(docs(1), small_tokenizer())
    assert list((tmp_path / "mine" / "tokens").glob("*.safetensors"))
    assert default_dir() == tmp_path / "mine" / "scores"
    monkeypatch.delenv("LONGROPE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tokmod.default_cache_dir() == tmp_path / "xdg" / "longrope"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tokmod.default_cache_dir() == tmp_path / "home" / ".cache" / "longrope"
