"""Argument groups shared by subcommands, so every command spells them the same way."""
from __future__ import annotations

import argparse


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="builtin",
                   help="local model folder, a .gguf file (or a folder holding one), 'smollm2' (make real-model), "
                        "or 'builtin' for the shipped small model (default)")
    g.add_argument("--dtype", default="float32", help="float32 (default), bfloat16 or float16")
    g.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="allow model code from the model folder (off by default)")


def add_data_args(p: argparse.ArgumentParser, *, split: str) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None,
                   help="'builtin' (stdlib sources, default), 'pydocs' (long chapters of the Python docs; "
                        "make prose-data), a .txt file, folder or glob of text files, "
                        ".jsonl[:FIELD], .parquet, or a save_to_disk dataset folder")
    g.add_argument("--split", default=split, help=f"split of the data: train, validation, test (default {split}), or all (unsplit, nothing held out)")


def load_model_from_args(args):
    from ..models import check_vocabulary, load_model, load_tokenizer

    model = load_model(args.model, dtype=args.dtype, device=args.device,
                       trust_remote_code=args.trust_remote_code)
    tok = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    check_vocabulary(model, tok, args.model)
    return model, tok


def int_list(text: str) -> list[int]:
    """Parse '256,512,2k' into [256, 512, 2048]; an empty list is an error (longrope.schema.parse_lengths)."""
    from ..schema import parse_lengths
    return parse_lengths(text)
