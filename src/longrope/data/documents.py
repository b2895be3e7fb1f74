"""What every document source yields (sources.py, prose.py): a named `Document` in one of the
`SPLITS`."""
from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Document:
    name: str
    text: str
