"""Run identities for `extend --resume`: single-file (GGUF) models and named data sources too."""
from __future__ import annotations

import os

from longrope.fingerprint import data_identity, model_identity, mismatch, run_fingerprint


def test_a_gguf_file_model_has_an_identity_that_follows_the_file(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    first = model_identity(str(gguf))
    assert first["model"] == str(gguf.resolve()) and model_identity(str(gguf)) == first
    gguf.write_bytes(b"GGUF" + b"\0" * 61)  # another file at the same path
    os.utime(gguf, (1, 1))
    assert model_identity(str(gguf)) != first
    a = run_fingerprint({"stages": []}, str(gguf), None)
    assert mismatch(a, a) is None


def test_named_data_sources_have_identities():
    assert data_identity(None) == data_identity("builtin") == {"data": "builtin"}
    doc = data_identity("pydocs")
    assert doc["data"] == "pydocs" and doc["files"]  # a digest, or "missing" without the package
