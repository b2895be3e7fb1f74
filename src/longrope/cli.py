"""The `longrope` command. Subcommands live in `longrope.commands.*`, one module each, found here
by name: a module defines `register(subparsers)`, adds its parser and sets `func=run` on it.

Errors the user can fix (`LongRopeError`, missing files, bad values) print one line and exit 2.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import __version__, commands
from .errors import LongRopeError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longrope",
        description="Extend the context window of RoPE language models with LongRoPE.",
    )
    parser.add_argument("--version", action="version", version=f"longrope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _quiet_libraries()
    try:
        rc = args.func(args)
    except LongRopeError as e:
        print(f"longrope {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"longrope {args.command}: error: {e.strerror}: {e.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"longrope {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


def _quiet_libraries() -> None:
    """Our own progress bars and messages only: transformers' load/save bars and warnings off."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
