"""Document sources: the built-in stdlib corpus and user data (text, JSON Lines, Parquet, HF datasets).

Every source yields `Document(name, text)`. The built-in corpus is the running interpreter's
standard-library `.py` files (test folders and site-packages left out), each file one document,
split into train / validation / test by a SHA-1 of its path relative to the library root, so a
file never moves between splits. Generated and tabular files are left out of the built-in corpus
(`is_tabular`): a module defining a charmap codec table (`decoding_table =`, `encoding_table =`,
`encoding_map =`, `decoding_map =` at the start of a line: the `encodings/cp*.py`, `mac_*.py`,
`hp_roman8.py`, ... code pages), or one of at least 50 non-blank lines of which at least 60% hold
nothing but literals (numbers, strings, None/True/False, with separators and a comment), e.g.
`pydoc_data/topics.py`, `html/entities.py`, `_sysconfigdata_*.py`, `stringprep.py`. They teach nothing
about long-context modelling and made up half of the long validation/test files. For user data
the `split` argument only matters for a `save_to_disk` DatasetDict (it picks that split); other
formats have no splits.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ..errors import LongRopeError

SPLITS = ("train", "validation", "test")
# Per-mille boundaries of the hash split: [0, 900) train, [900, 950) validation, [950, 1000) test.
SPLIT_BOUNDS = {"train": (0, 900), "validation": (900, 950), "test": (950, 1000)}
_SKIP_DIRS = {"test", "tests", "site-packages", "dist-packages", "__pycache__", "idle_test"}
TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".text", ""}
_LITERAL = r"(0[xX][0-9a-fA-F]+|[-+]?\d+(\.\d+)?|[rbuRBU]?'(\\.|[^'\\])*'|[rbuRBU]?\"(\\.|[^\"\\])*\"|None|True|False)"
_LITERAL_LINE = re.compile(r"^\s*[\[\(\{]*\s*(" + _LITERAL + r"\s*[:,]?\s*)+[\]\)\}]*\s*,?\s*(#.*)?$")
_CODEC_TABLE = re.compile(r"^(decoding_table|encoding_table|encoding_map|decoding_map)\s*=", re.M)
TABULAR_MIN_LINES, TABULAR_SHARE = 50, 0.6


@dataclass(frozen=True)
class Document:
    name: str
    text: str


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
    if split not in SPLITS:
        raise LongRopeError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    docs = []
    for rel, path in stdlib_files(root):
        if split_of(rel) != split:
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


def _load_text_files(paths: list[Path], what: str) -> list[Document]:
    docs = [Document(str(p), t) for p in paths if (t := _read_text(p)).strip()]
    if not docs:
        raise LongRopeError(f"no non-empty text in {what}")
    return docs


def _split_field(source: str, suffix: str) -> tuple[Path, str]:
    """'data.jsonl:body' -> (Path('data.jsonl'), 'body'); no ':FIELD' -> field 'text'."""
    low = source.lower()
    i = low.rfind(suffix + ":")
    if i >= 0:
        return Path(source[: i + len(suffix)]).expanduser(), source[i + len(suffix) + 1:]
    return Path(source).expanduser(), "text"


def _load_jsonl(path: Path, field: str) -> list[Document]:
    docs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
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


def _load_hf(path: Path, split: str, field: str = "text") -> list[Document]:
    try:
        import datasets
    except ImportError:
        raise LongRopeError("reading a saved dataset needs `datasets`: pip install 'longrope[data]'") from None
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise LongRopeError(f"dataset {path} has no split {split!r} (splits: {', '.join(ds)})")
        ds = ds[split]
    if field not in ds.column_names:
        raise LongRopeError(f"dataset {path} has no column {field!r} (columns: {', '.join(ds.column_names)})")
    docs = [Document(f"{path.name}:{i}", t) for i, t in enumerate(ds[field], 1) if isinstance(t, str) and t.strip()]
    if not docs:
        raise LongRopeError(f"no non-empty {field!r} texts in dataset {path}")
    return docs


def load_documents(source: str | None = None, split: str = "test") -> list[Document]:
    """Documents of `source`: None/'builtin' (stdlib corpus, `split` applies), 'pydocs' (long chapters of
    the Python documentation, `split` applies; see data/prose.py) or a local path.

    Paths: a text file (one document), a folder (every text file below it, sorted) or a glob,
    `FILE.jsonl[:FIELD]`, `FILE.parquet[:COLUMN]` (default field `text`), or a `save_to_disk`
    dataset folder (`split` picks the split of a DatasetDict).
    """
    if source is None or str(source) == "builtin":
        return load_builtin(split)
    if str(source) == "pydocs":  # long chapters of the Python documentation (Debian python3.11-doc)
        from .prose import load_pydocs
        return load_pydocs(split)
    source = str(source)
    low = source.lower()
    if ".jsonl" in low:
        path, field = _split_field(source, ".jsonl")
        if path.is_file():
            return _load_jsonl(path, field)
    if ".parquet" in low:
        path, field = _split_field(source, ".parquet")
        if path.is_file():
            return _load_parquet(path, field)
    if any(c in source for c in "*?["):
        paths = sorted(Path(p) for p in glob.glob(str(Path(source).expanduser()), recursive=True))
        paths = [p for p in paths if p.is_file()]
        if not paths:
            raise LongRopeError(f"no files match {source}")
        return _load_text_files(paths, source)
    path = Path(source).expanduser()
    if not path.exists():
        raise LongRopeError(f"data not found: {source}")
    if path.is_dir():
        if _is_hf_dataset(path):
            return _load_hf(path, split)
        paths = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not paths:
            raise LongRopeError(f"no text files (.txt, .md, .rst, .py) in folder {path}")
        return _load_text_files(paths, f"folder {path}")
    text = _read_text(path)
    if not text.strip():
        raise LongRopeError(f"empty file: {path}")
    return [Document(str(path), text)]


def split_stats(root: Path | None = None) -> dict[str, dict[str, int]]:
    """Files and characters per split of the built-in corpus (no tokenization)."""
    stats = {s: {"docs": 0, "chars": 0} for s in SPLITS}
    for rel, path in stdlib_files(root):
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            s = stats[split_of(rel)]
            s["docs"] += 1
            s["chars"] += len(text)
    return stats
