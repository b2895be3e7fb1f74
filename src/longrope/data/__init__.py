"""Document sources, the tokenization cache and sample building (see docs/DESIGN.md, data contract)."""
from .samples import Samples, build_samples
from .sources import Document, load_documents, split_of, stdlib_files
from .tokenize import tokenize_documents

__all__ = ["Document", "Samples", "build_samples", "load_documents", "tokenize_documents",
           "split_of", "stdlib_files"]
