"""The `longrope` command. Subcommands live in `longrope.commands.*`, one module each, found here
by name: a module defines `register(subparsers)`, adds its parser and sets `func=run` on it.

Errors the user can fix (`LongRopeError`, missing files, bad values) print one line and exit 2;
the library's warnings (`longrope.errors.warn`) print one line and the command goes on.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings

from . import __version__, commands
from .errors import LongRopeError, LongRopeWarning


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (`longrope search: error: ...`), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
        with warnings.catch_warnings():
            warnings.showwarning = _warning_printer(args.command, warnings.showwarning)
            _check_common(args)
            rc = args.func(args)
    except LongRopeError as e:
        print(f"longrope {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # read-only file system, no space left, a file where a folder is expected, ...
        where = f": {e.filename}" if e.filename else ""
        print(f"longrope {args.command}: error: {_one_line(e.strerror or e)}{where}", file=sys.stderr)
        return 2
    except _safetensor_error() as e:  # a truncated or corrupt weights file read outside models.load_model
        print(f"longrope {args.command}: error: cannot read a safetensors file (truncated or corrupt?): "
              f"{_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"longrope {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


def _warning_printer(command: str, others):
    """`warnings.showwarning` for a command: ours on one line, everyone else's as before."""
    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, LongRopeWarning):
            print(f"longrope {command}: warning: {_one_line(message)}", file=sys.stderr, flush=True)
        else:
            others(message, category, filename, lineno, file, line)
    return show


def _safetensor_error() -> type:
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors is a dependency
        return LongRopeError
    return SafetensorError


def _one_line(msg) -> str:
    return " ".join(str(msg).split())


def _check_common(args) -> None:
    """What every command can check before loading anything: the device and the dtypes it names."""
    if isinstance(getattr(args, "device", None), str):
        from .models import check_device
        check_device(args.device)
    for name in ("dtype", "save_dtype"):
        if isinstance(getattr(args, name, None), str):
            from .models import torch_dtype
            torch_dtype(getattr(args, name))


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
