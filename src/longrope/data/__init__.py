"""Document sources, the tokenization cache and sample building (see docs/DESIGN.md, data contract)."""
from .samples import Samples, build_samples
from .documents import Document
from .sources import load_documents, split_of, stdlib_files
from .tokenize import Tokenized, load_tokenized, tokenize_documents

__all__ = ["Document", "Samples", "Tokenized", "build_samples", "load_documents", "load_tokenized",
           "tokenize_documents", "split_of", "stdlib_files"]
