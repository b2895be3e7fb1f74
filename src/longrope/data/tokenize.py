"""Tokenize documents once: results are cached on disk, keyed by the tokenizer and the content.

The key is a SHA-256 over the tokenizer's full serialisation (vocabulary, merges, normalisers,
pre-tokenisers) and the SHA-256 of every document's text, so a changed tokenizer or a changed
document gives a new entry and a stale one is never read. Entries are safetensors files (flat
int32 token ids plus document offsets), written atomically; nothing is unpickled.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..errors import LongRopeError
from ..io import atomic_path
from .documents import Document

def default_cache_dir() -> Path:
    """longrope's cache folder (`$LONGROPE_CACHE_DIR`, else ~/.cache/longrope); tokens go in its tokens/."""
    from ..io import cache_root
    return cache_root()


def tokenizer_fingerprint(tokenizer) -> str:
    """A stable hash of everything that decides how `tokenizer` maps text to ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None and hasattr(tokenizer, "to_str"):  # a raw `tokenizers.Tokenizer`
        backend = tokenizer
    if backend is not None:
        blob = backend.to_str()
    else:  # a slow (Python) tokenizer: its vocabulary and class are the best handle we have
        blob = json.dumps([type(tokenizer).__name__, getattr(tokenizer, "name_or_path", ""),
                           sorted(tokenizer.get_vocab().items())])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    if hasattr(tokenizer, "encode_batch") and not hasattr(tokenizer, "backend_tokenizer"):
        return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return [list(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def cache_key(docs: list[Document], tokenizer) -> str:
    h = hashlib.sha256(tokenizer_fingerprint(tokenizer).encode())
    for d in docs:
        h.update(hashlib.sha256(d.text.encode("utf-8", errors="surrogatepass")).digest())
    return h.hexdigest()[:32]


def tokenize_documents(docs: list[Document], tokenizer, cache_dir: str | os.PathLike | None = None,
                       *, use_cache: bool = True, batch: int = 64) -> list[list[int]]:
    """Token ids of each document (no special tokens), read from / written to the disk cache.

    `cache_dir` defaults to `$LONGROPE_CACHE_DIR` (else ~/.cache/longrope); entries live in its `tokens/` folder.
    """
    from safetensors.torch import load_file, save_file

    path = None
    if use_cache:
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        path = root / "tokens" / f"{cache_key(docs, tokenizer)}.safetensors"
        if path.is_file():
            try:
                t = load_file(str(path))
                ids, offsets = t["ids"].tolist(), t["offsets"].tolist()
                if len(offsets) == len(docs) + 1:
                    return [ids[offsets[i]:offsets[i + 1]] for i in range(len(docs))]
            except Exception:  # a damaged entry is rebuilt below
                pass
    out: list[list[int]] = []
    for i in range(0, len(docs), batch):
        out.extend(_encode(tokenizer, [d.text for d in docs[i:i + batch]]))
    if path is not None:
        offsets = [0]
        for ids in out:
            offsets.append(offsets[-1] + len(ids))
        flat = torch.tensor([t for ids in out for t in ids], dtype=torch.int32)
        with atomic_path(path) as tmp:
            save_file({"ids": flat, "offsets": torch.tensor(offsets, dtype=torch.int64)}, str(tmp))
    return out


@dataclass
class Tokenized:
    """Documents as token ids, with their names: what outputs cite."""
    names: list[str]
    ids: list[list[int]]

    def cite(self, used: Sequence[int]) -> list[dict]:
        """The documents `used` (indices, e.g. `Samples.used`) by name and token count: what a
        search's state, compare's results.json and eval's JSON record, so a reader can check which
        documents were scored (and that they were held out)."""
        return [{"name": self.names[i], "tokens": len(self.ids[i])} for i in used]


def load_tokenized(tokenizer, source: str | None, split: str, cache_dir=None) -> Tokenized:
    """The documents of `source` (`sources.load_documents`) in `split`, tokenized (cached)."""
    from .sources import load_documents

    docs = load_documents(source, split)
    if not docs:
        raise LongRopeError(f"no documents in {source or 'the built-in corpus'} ({split})")
    return Tokenized([d.name for d in docs], tokenize_documents(docs, tokenizer, cache_dir))
