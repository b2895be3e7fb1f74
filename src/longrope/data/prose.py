"""`--data pydocs`: long natural-language documents from the Python documentation, offline.

The Debian package `python3.11-doc` (`make prose-data`, i.e. `apt-get install python3.11-doc`) installs
the HTML documentation of CPython 3.11 under /usr/share/doc/python3.11/html. Licence: the Python
documentation is distributed under the PSF License Agreement, version 2 (its code examples also under
the Zero-Clause BSD licence; https://docs.python.org/3/license.html).

A document is one chapter of that book, read in its table-of-contents order: every chapter of the
Library Reference (`library/index.html`, e.g. "Text Processing Services" = text.html, string.html,
re.html, ...) and of the C API Reference, and the Tutorial, Language Reference, Extending and
Embedding, Using Python, HOWTOs, FAQs and What's New books whole. A page's text is its Sphinx main
body (`div role=main`) with the markup stripped: tags removed, entities decoded, scripts and header
permalinks left out, block elements ending a line; code examples stay as the text they show. Chapters
shorter than MIN_CHARS = 140,000 characters are left out: SmolLM2's tokenizer spends 3.5 to 4.3
characters per token on these texts, so every kept document has more than 32,768 tokens (`pydocs_stats`
measures the real counts). A page listed by two documents belongs to the first one only.

Splits use the built-in corpus's hash rule (a SHA-1 of the document name, per mille); its bounds
(5% validation, 5% test) would leave one document or none in an evaluation split of this 22-document
corpus, so the bounds here are [0, 400) train, [400, 800) validation, [800, 1000) test (picked after
looking at the 22 hashes, so that each evaluation split holds at least four documents; a document never
moves between splits).
"""
from __future__ import annotations

import hashlib
import html
import posixpath
import re
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath

from ..errors import LongRopeError
from .documents import SPLITS, Document

NAME = "pydocs"
HTML_ROOT = Path("/usr/share/doc/python3.11/html")
PACKAGE = "python3.11-doc"
INSTALL = f"apt-get install {PACKAGE} (Debian; or: make prose-data)"
MIN_CHARS = 140_000
BOUNDS = {"train": (0, 400), "validation": (400, 800), "test": (800, 1000)}
CHAPTERED = ("library/index.html", "c-api/index.html")  # each toctree entry is one document
BOOKS = ("tutorial/index.html", "reference/index.html", "extending/index.html", "using/index.html",
         "howto/index.html", "faq/index.html", "whatsnew/index.html")  # each is one document
_BLOCK = {"p", "div", "pre", "li", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "table",
          "section", "blockquote", "br", "ul", "ol", "dl"}
_DROP = {"script", "style", "nav"}


class _Page(HTMLParser):
    """The text inside the Sphinx main body, and the pages its table of contents lists first-level."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.toc: list[str] = []
        self.depth = 0  # div nesting inside the main body (0: outside)
        self.drop = 0   # inside a dropped element
        self.pre = 0
        self.toc_item = False

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if self.depth == 0:
            self.depth = int(tag == "div" and a.get("role") == "main")
            return
        self.depth += tag == "div"
        if tag == "li" and "toctree-l1" in a.get("class", ""):
            self.toc_item = True
        elif tag == "a" and self.toc_item:
            self.toc_item = False
            self.toc.append(a.get("href", "").split("#")[0])
        if tag in _DROP or (tag == "a" and "headerlink" in a.get("class", "")):
            self.drop += 1
        self.pre += tag == "pre"
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if self.depth == 0:
            return
        if tag in _DROP or (tag == "a" and self.drop):
            self.drop = max(0, self.drop - 1)
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in _BLOCK:
            self.parts.append("\n")
        self.depth -= tag == "div"

    def handle_data(self, data):
        if self.depth and not self.drop:
            self.parts.append(data if self.pre else re.sub(r"\s+", " ", data))


def parse_page(page: str) -> tuple[str, list[str]]:
    """(main-body text with the markup stripped, first-level table-of-contents links) of a Sphinx page."""
    parser = _Page()
    parser.feed(page)
    parser.close()
    text = html.unescape("".join(parser.parts)).replace("\u00b6", "")
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n", parser.toc


def split_of(name: str) -> str:
    h = int.from_bytes(hashlib.sha1(name.encode("utf-8")).digest()[:8], "big") % 1000
    return next(s for s, (lo, hi) in BOUNDS.items() if lo <= h < hi)


def _root(root: Path | None) -> Path:
    root = Path(root) if root is not None else HTML_ROOT
    if not (root / "library" / "index.html").is_file():
        raise LongRopeError(f"--data {NAME} needs the Python documentation at {root}: {INSTALL}")
    return root


def _read(root: Path, rel: str, cache: dict) -> tuple[str, list[str]]:
    if rel not in cache:
        path = root / rel
        cache[rel] = parse_page(path.read_text(encoding="utf-8", errors="replace")) if path.is_file() else ("", [])
    return cache[rel]


def _pages(root: Path, rel: str, cache: dict, seen: set) -> list[str]:
    """`rel` and, depth first in table-of-contents order, every page it lists (not yet `seen`)."""
    if rel in seen or not (root / rel).is_file():
        return []
    seen.add(rel)
    out = [rel]
    folder = PurePosixPath(rel).parent
    for link in _read(root, rel, cache)[1]:
        if link and "://" not in link:
            out += _pages(root, posixpath.normpath((folder / link).as_posix()), cache, seen)
    return out


def chapters(root: Path | None = None) -> list[tuple[str, Path]]:
    """(document name, first page) of every candidate document, in a fixed order."""
    root = _root(root)
    cache: dict = {}
    out = []
    for index in CHAPTERED:
        folder = PurePosixPath(index).parent
        for link in _read(root, index, cache)[1]:
            rel = posixpath.normpath((folder / link).as_posix())
            out.append((rel.removesuffix(".html"), root / rel))
    out += [(b.removesuffix("/index.html"), root / b) for b in BOOKS]
    return out


def documents(root: Path | None = None) -> list[tuple[str, list[str]]]:
    """(name, pages in reading order) of every candidate document; a page goes to the first document
    that lists it, so no text is shared between documents (or splits)."""
    root = _root(root)
    cache: dict = {}
    seen: set = set()
    return [(name, _pages(root, first.relative_to(root).as_posix(), cache, seen)) for name, first in chapters(root)]


def load_pydocs(split: str = "test", root: Path | None = None, min_chars: int = MIN_CHARS) -> list[Document]:
    """The documents of `split` with at least `min_chars` characters, as `Document("pydocs:NAME", text)`."""
    if split not in SPLITS:
        raise LongRopeError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    root = _root(root)
    cache: dict = {}
    docs = []
    for name, rels in documents(root):
        if split_of(name) != split:
            continue
        text = "\n".join(t for rel in rels if (t := _read(root, rel, cache)[0]).strip())
        if len(text) >= min_chars:
            docs.append(Document(f"{NAME}:{name}", text))
    if not docs:
        raise LongRopeError(f"--data {NAME} has no document of >= {min_chars} characters in split {split!r} "
                            f"under {root}")
    return docs


def pydocs_stats(tokenizer=None, root: Path | None = None, min_chars: int = MIN_CHARS) -> list[dict]:
    """Per kept document: split, characters and (with a tokenizer) tokens; for the docs and the tests."""
    rows = []
    for split in SPLITS:
        try:
            docs = load_pydocs(split, root, min_chars)
        except LongRopeError:
            continue
        for d in docs:
            row = {"name": d.name, "split": split, "chars": len(d.text)}
            if tokenizer is not None:
                row["tokens"] = len(tokenizer(d.text, add_special_tokens=False).input_ids)
            rows.append(row)
    return rows
