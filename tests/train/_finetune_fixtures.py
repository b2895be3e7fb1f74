"""The fine-tuning tests' helpers: the shared ones from tests/helpers.py (tokenizer without a BOS
template: samples get their BOS from build_samples) and the loss log reader."""
from __future__ import annotations

import json
from pathlib import Path

from helpers import cli_env, write_texts  # noqa: F401
from helpers import save_tiny as _save_tiny


def save_tiny(path: Path, **kw) -> Path:
    return _save_tiny(path, bos=False, **kw)


def losses(log: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in log.read_text().splitlines()]
