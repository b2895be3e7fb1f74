"""Document sources: the built-in stdlib corpus and user data (text, JSON Lines, Parquet, HF datasets).

Every source yields `Document(name, text)` and is split into train / validation / test, so a
search (validation) is never judged, and a model never evaluated (test), on documents it saw:

- the built-in corpus (the running interpreter's standard-library `.py` files, test folders and
  site-packages left out, each file one document): by a SHA-1 of the path relative to the library
  root, [0, 900) per mille train, [900, 950) validation, [950, 1000) test;
- user data: the documents are ranked by a SHA-1 of their identity (the path relative to the
  folder or glob base; the row number in a .jsonl, .parquet or saved dataset); the first 5% (at
  least 1) are validation, the next 5% (at least 1) test, the rest train. The same data always
  gives the same split; a source with fewer than 3 documents (a single text file is one document)
  has no split, and asking it for one is a one-line error naming the fix;
- a `save_to_disk` DatasetDict keeps its own splits.

`split="all"` takes every document, unsplit, and says so on stderr (the caller gives up the
held-out guarantee).

The built-in corpus leaves out generated and tabular files (`is_tabular`): a module defining a
charmap codec table (`decoding_table =`, `encoding_table =`, `encoding_map =`, `decoding_map =` at
the start of a line: the `encodings/cp*.py`, `mac_*.py`, `hp_roman8.py`, ... code pages), or one of
at least 50 non-blank lines of which at least 60% hold nothing but literals (numbers, strings,
None/True/False, with separators and a comment), e.g. `pydoc_data/topics.py`, `html/entities.py`,
`_sysconfigdata_*.py`, `stringprep.py`. They teach nothing about long-context modelling and made up
half of the long validation/test files. `pydocs` (data/prose.py) is a second built-in source of
long natural prose, split by the same hash rule.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import sysconfig
from pathlib import Path

from ..errors import LongRopeError, warn
from .documents import SPLITS, Document

ALL = "all"  # every document, unsplit (loud)
USER_HELD_OUT = 0.05  # share of a user source's documents in validation, and again in test (at least 1 each)
# Per-mille boundaries of the hash split: [0, 900) train, [900, 950) validation, [950, 1000) test.
SPLIT_BOUNDS = {"train": (0, 900), "validation": (900, 950), "test": (950, 1000)}
_SKIP_DIRS = {"test", "tests", "site-packages", "dist-packages", "__pycache__", "idle_test"}
TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".text", ""}
_LITERAL = r"(0[xX][0-9a-fA-F]+|[-+]?\d+(\.\d+)?|[rbuRBU]?'(\\.|[^'\\])*'|[rbuRBU]?\"(\\.|[^\"\\])*\"|None|True|False)"
_LITERAL_LINE = re.compile(r"^\s*[\[\(\{]*\s*(" + _LITERAL + r"\s*[:,]?\s*)+[\]\)\}]*\s*,?\s*(#.*)?$")
_CODEC_TABLE = re.compile(r"^(decoding_table|encoding_table|encoding_map|decoding_map)\s*=", re.M)
TABULAR_MIN_LINES, TABULAR_SHARE = 50, 0.6


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(relpath: str) -> str:
    """The split of a stdlib file, from a stable hash of its POSIX path relative to the root."""
    h = int.from_bytes(hashlib.sha1(relpath.encode("utf-8")).digest()[:8], "big") % 1000
    for name, (lo, hi) in SPLIT_BOUNDS.items():
        if lo <= h < hi:
            return name
    raise AssertionError(h)  # pragma: no cover


def stdlib_files(root: Path | None = None) -> list[tuple[str, Path]]:
    """Sorted (relative POSIX path, path) of the corpus files under `root` (default: the stdlib)."""
    root = Path(root) if root is not None else stdlib_root()
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]  # prune: site-packages alone is huge
        for name in files:
            if name.endswith(".py"):
                p = Path(folder) / name
                out.append((p.relative_to(root).as_posix(), p))
    out.sort(key=lambda t: t[0])
    return out


def _check_split(split: str) -> None:
    if split not in SPLITS and split != ALL:
        raise LongRopeError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)} (or {ALL}: "
                            "every document, no held-out part)")


def _warn_all(what: str) -> None:
    warn(f"split {ALL!r} takes every document of {what}: nothing is held out, so search, training and "
         "evaluation may see the same documents")


def is_tabular(text: str) -> bool:
    """A generated table rather than code or prose: a charmap codec table, or >= TABULAR_SHARE of
    >= TABULAR_MIN_LINES non-blank lines holding only literals (see the module docstring)."""
    if _CODEC_TABLE.search(text):
        return True
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < TABULAR_MIN_LINES:
        return False
    return sum(bool(_LITERAL_LINE.match(line)) for line in lines) >= TABULAR_SHARE * len(lines)


def load_builtin(split: str = "test", root: Path | None = None) -> list[Document]:
    _check_split(split)
    if split == ALL:
        _warn_all("the built-in corpus")
    docs = []
    for rel, path in stdlib_files(root):
        if split != ALL and split_of(rel) != split:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip() and not is_tabular(text):
            docs.append(Document(rel, text))
    if not docs:
        raise LongRopeError(f"the built-in corpus has no documents in split {split!r} "
                            f"(stdlib at {root or stdlib_root()})")
    return docs


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LongRopeError(f"not a UTF-8 text file: {path}") from None


def _load_text_files(paths: list[Path], what: str, base: Path) -> tuple[list[Document], list[str]]:
    """Documents and their identities (the path relative to `base`, POSIX)."""
    docs, keys = [], []
    for p in paths:
        if (t := _read_text(p)).strip():
            docs.append(Document(str(p), t))
            keys.append(_relative(p, base))
    if not docs:
        raise LongRopeError(f"no non-empty text in {what}")
    return docs, keys


def _relative(p: Path, base: Path) -> str:
    try:
        return p.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return p.as_posix()


def _glob_base(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard: '/d/**/*.txt' -> '/d'."""
    parts = Path(pattern).expanduser().parts
    head = [q for q in parts[:next(i for i, q in enumerate(parts) if any(c in q for c in "*?["))]]
    return Path(*head) if head else Path(".")


def _split_field(source: str, suffix: str) -> tuple[Path, str]:
    """'data.jsonl:body' -> (Path('data.jsonl'), 'body'); no ':FIELD' -> field 'text'."""
    low = source.lower()
    i = low.rfind(suffix + ":")
    if i >= 0:
        return Path(source[: i + len(suffix)]).expanduser(), source[i + len(suffix) + 1:]
    return Path(source).expanduser(), "text"


def _load_jsonl(path: Path, field: str) -> list[Document]:
    docs = []
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # as file iteration: not at U+2028
    except UnicodeDecodeError as e:
        raise LongRopeError(f"{path} is not UTF-8 text (byte {e.start})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise LongRopeError(f"{path}: line {n} is not valid JSON ({e.msg})") from None
        if not isinstance(row, dict) or field not in row:
            keys = ", ".join(map(str, row)) if isinstance(row, dict) else type(row).__name__
            raise LongRopeError(f"{path}: line {n} has no field {field!r} (found: {keys}); "
                                f"name the field as {path}:FIELD")
        text = row[field]
        if not isinstance(text, str):
            raise LongRopeError(f"{path}: line {n} field {field!r} is not a string")
        if text.strip():
            docs.append(Document(f"{path.name}:{n}", text))
    if not docs:
        raise LongRopeError(f"no non-empty {field!r} texts in {path}")
    return docs


def _load_parquet(path: Path, field: str) -> list[Document]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LongRopeError("reading Parquet needs pyarrow: pip install 'longrope[data]'") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for unreadable files
        raise LongRopeError(f"cannot read Parquet file {path}: {str(e).splitlines()[0]}") from None
    if field not in table.column_names:
        raise LongRopeError(f"{path} has no column {field!r} (columns: {', '.join(table.column_names)})")
    texts = table.column(field).to_pylist()
    docs = [Document(f"{path.name}:{i}", t) for i, t in enumerate(texts, 1) if isinstance(t, str) and t.strip()]
    if not docs:
        raise LongRopeError(f"no non-empty {field!r} texts in {path}")
    return docs


def _is_hf_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _load_hf(path: Path, split: str, field: str = "text") -> tuple[list[Document], bool]:
    """Documents of a saved dataset, and whether they are already one split of a DatasetDict."""
    try:
        import datasets
    except ImportError:
        raise LongRopeError("reading a saved dataset needs `datasets`: pip install 'longrope[data]'") from None
    ds = datasets.load_from_disk(str(path))
    presplit = isinstance(ds, datasets.DatasetDict)
    if presplit:
        if split == ALL:
            _warn_all(f"dataset {path}")
            parts = list(ds.values())
        elif split not in ds:
            raise LongRopeError(f"dataset {path} has no split {split!r} (splits: {', '.join(ds)})")
        else:
            parts = [ds[split]]
    else:
        parts = [ds]
    docs = []
    for part in parts:
        if field not in part.column_names:
            raise LongRopeError(f"dataset {path} has no column {field!r} (columns: {', '.join(part.column_names)})")
        docs += [Document(f"{path.name}:{len(docs) + i}", t) for i, t in enumerate(part[field], 1)
                 if isinstance(t, str) and t.strip()]
    if not docs:
        raise LongRopeError(f"no non-empty {field!r} texts in dataset {path}")
    return docs, presplit


def _rank(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big")


def user_split(docs: list[Document], keys: list[str], split: str, what: str) -> list[Document]:
    """The documents of `split` of a user source (see the module docstring), in source order."""
    _check_split(split)
    if split == ALL:
        _warn_all(what)
        return docs
    n = len(docs)
    if n < 3:
        raise LongRopeError(f"{what} holds {n} document{'s' if n != 1 else ''}, too few for a train/"
                            f"validation/test split (3 needed): give a folder, .jsonl or .parquet with more "
                            f"documents, or pass --split {ALL} to use it unsplit (nothing held out)")
    held = max(1, round(n * USER_HELD_OUT))
    order = sorted(range(n), key=lambda i: (_rank(keys[i]), i))
    part = {i: "train" for i in range(n)}
    part.update({i: "validation" for i in order[:held]})
    part.update({i: "test" for i in order[held:2 * held]})
    return [d for i, d in enumerate(docs) if part[i] == split]


def split_sizes(source: str | None, split: str) -> str:
    """What a data error should say about the split it drew on: 'the validation split of D holds 1
    of 20 documents (user data: 5% validation, 5% test, at least 1 each, the rest train)'."""
    if split == ALL:
        return f"--split {ALL} takes every document of {source or 'the built-in corpus'}"
    try:
        if source is None or str(source) in ("builtin", "pydocs"):
            sizes = {s: len(load_documents(source, s)) for s in SPLITS}
            rule = "split 90/5/5 by a hash of each document's name"
        else:
            docs, keys = _load_user(str(source), split)
            if keys is None:
                return f"the {split} split of dataset {source} holds {len(docs):,} documents (its own split)"
            held = max(1, round(len(docs) * USER_HELD_OUT)) if len(docs) >= 3 else 0
            sizes = {"train": len(docs) - 2 * held, "validation": held, "test": held}
            rule = f"user data: {USER_HELD_OUT:.0%} validation, {USER_HELD_OUT:.0%} test, at least 1 each, the rest train"
    except LongRopeError:
        return ""
    total = sum(sizes.values())
    return (f"the {split} split of {source or 'the built-in corpus'} holds {sizes.get(split, 0):,} of {total:,} "
            f"documents ({rule}): give more or longer documents, fewer --docs, or --split {ALL}")


def load_documents(source: str | None = None, split: str = "test") -> list[Document]:
    """Documents of `source`: None/'builtin' (stdlib corpus, `split` applies), 'pydocs' (long chapters of
    the Python documentation, `split` applies; see data/prose.py) or a local path.

    Paths: a text file (one document), a folder (every text file below it, sorted) or a glob,
    `FILE.jsonl[:FIELD]`, `FILE.parquet[:COLUMN]` (default field `text`), or a `save_to_disk`
    dataset folder (a DatasetDict keeps its own splits).
    """
    if source is None or str(source) == "builtin":
        return load_builtin(split)
    _check_split(split)
    if str(source) == "pydocs":  # long chapters of the Python documentation (Debian python3.11-doc)
        from .prose import load_pydocs
        return load_pydocs(split)
    source = str(source)
    docs, keys = _load_user(source, split)
    if keys is None:  # already one split of a DatasetDict
        return docs
    return user_split(docs, keys, split, source)


def _load_user(source: str, split: str) -> tuple[list[Document], list[str] | None]:
    """All documents of a user source and their identities (None: the source split them itself)."""
    low = source.lower()
    if ".jsonl" in low:
        path, field = _split_field(source, ".jsonl")
        if path.is_file():
            docs = _load_jsonl(path, field)
            return docs, [d.name for d in docs]
    if ".parquet" in low:
        path, field = _split_field(source, ".parquet")
        if path.is_file():
            docs = _load_parquet(path, field)
            return docs, [d.name for d in docs]
    if any(c in source for c in "*?["):
        paths = sorted(Path(p) for p in glob.glob(str(Path(source).expanduser()), recursive=True))
        paths = [p for p in paths if p.is_file()]
        if not paths:
            raise LongRopeError(f"no files match {source}")
        return _load_text_files(paths, source, _glob_base(source))
    path = Path(source).expanduser()
    if not path.exists():
        raise LongRopeError(f"data not found: {source}")
    if path.is_dir():
        if _is_hf_dataset(path):
            docs, presplit = _load_hf(path, split)
            return docs, None if presplit else [d.name for d in docs]
        paths = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not paths:
            raise LongRopeError(f"no text files (.txt, .md, .rst, .py) in folder {path}")
        return _load_text_files(paths, f"folder {path}", path)
    text = _read_text(path)
    if not text.strip():
        raise LongRopeError(f"empty file: {path}")
    return [Document(str(path), text)], [path.name]
