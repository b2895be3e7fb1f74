"""One schema for options: the config dataclasses' field types checked in one place, lengths parsed
in one place (`2k` everywhere), and argparse options generated from the fields so that every
default is written once (in the dataclass).

A field's metadata may hold `help` (the option's help text, or a function returning it), `length` (True: parsed with
`parse_length`, so `2k` works) and `choices`.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from typing import Any, Iterable

from .errors import LongRopeError


def parse_length(text: str | int) -> int:
    """'2048', '2k', '1.5K', 2048 -> a positive number of tokens."""
    if isinstance(text, bool):
        raise LongRopeError(f"not a length: {text!r}")
    if isinstance(text, int):
        value = text
    else:
        part = str(text).strip()
        mult = 1024 if part[-1:] in ("k", "K") else 1
        try:
            number = float(part[:-1] if mult > 1 else part)
        except ValueError:
            raise LongRopeError(f"not a length: {text!r}") from None
        if not math.isfinite(number) or number * mult != int(number * mult):
            raise LongRopeError(f"not a whole number of tokens: {text!r}")
        value = int(number * mult)
    if value <= 0:
        raise LongRopeError(f"lengths must be positive, got {value}")
    return value


def parse_lengths(text: str | Iterable) -> list[int]:
    """'256,512,2k' (or a list) -> [256, 512, 2048]; an empty list is an error."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = [parse_length(t) for t in items if not (isinstance(t, str) and not t.strip())]
    if not out:
        raise LongRopeError("the list of lengths is empty")
    return out


# fields of other components' configs that are token lengths (their dataclasses carry no metadata)
LENGTH_FIELDS = {"target_length", "length", "lengths", "short_length"}


def _is_length(f) -> bool:
    return bool(f.metadata.get("length")) or f.name in LENGTH_FIELDS


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _kinds(tp) -> tuple[list, bool]:
    """(the non-None alternatives of a type, whether None is allowed)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        return [a for a in args if a is not type(None)], type(None) in args
    return [tp], tp is type(None)


def _fits(value, tp) -> bool:
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (Any,)
        return isinstance(value, (list, tuple)) and all(_fits(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp) if isinstance(tp, type) else True


def _type_name(tp) -> str:
    alts, optional = _kinds(tp)
    names = [getattr(a, "__name__", str(a)).replace("typing.", "") if typing.get_origin(a) is None
             else f"list of {getattr(typing.get_args(a)[0], '__name__', 'values')}" for a in alts]
    return " or ".join(names) + (" (or null)" if optional else "")


def check_types(obj, where: str) -> None:
    """Every field of the dataclass `obj` holds a value of its declared type (ints for floats are
    fine; bools are not ints); `length` fields are positive. One-line LongRopeError naming the field."""
    for f in dataclasses.fields(obj):
        tp = _hints(type(obj))[f.name]
        value = getattr(obj, f.name)
        alts, optional = _kinds(tp)
        if value is None and optional:
            continue
        if not any(_fits(value, a) for a in alts):
            raise LongRopeError(f"{where}: {f.name} must be {_type_name(tp)}, got {value!r}")
        if _is_length(f):
            if isinstance(value, (list, tuple)) and not value:
                raise LongRopeError(f"{where}: {f.name} must hold at least one length, got []")
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if v <= 0:
                    raise LongRopeError(f"{where}: {f.name} must be a positive length, got {v!r}")
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise LongRopeError(f"{where}: {f.name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def coerce_lengths(kw: dict, cls) -> dict:
    """Recipe values like '2k' in the length fields of `cls` turned into token counts."""
    out = dict(kw)
    for f in dataclasses.fields(cls):
        if _is_length(f) and f.name in out and out[f.name] is not None:
            v = out[f.name]
            if isinstance(v, str) or (isinstance(v, (list, tuple)) and any(isinstance(x, str) for x in v)):
                try:
                    out[f.name] = parse_lengths(v) if isinstance(v, (list, tuple)) or "," in v else parse_length(v)
                except LongRopeError as e:
                    raise LongRopeError(f"{f.name}: {e}") from None
    return out


def build(cls, where: str, **kw):
    """`cls(**kw)` with unknown keys and wrong types refused in one line."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(kw) - names
    if unknown:
        raise LongRopeError(f"{where}: unknown option(s) {', '.join(sorted(unknown))}")
    try:
        obj = cls(**coerce_lengths(kw, cls))
    except TypeError as e:  # a required field missing
        raise LongRopeError(f"{where}: {e}") from None
    check_types(obj, where)
    return obj


def parse_floats(text: str) -> list[float]:
    try:
        out = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise LongRopeError(f"not a list of numbers: {text!r}") from None
    if not out:
        raise LongRopeError("the list of numbers is empty")
    return out


def _str_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _parser_for(f, tp):
    alts, _ = _kinds(tp)
    tp = alts[0]
    origin = typing.get_origin(tp)
    if _is_length(f):
        return parse_lengths if origin in (list, tuple) else parse_length
    if origin in (list, tuple):
        inner = (typing.get_args(tp) or (str,))[0]
        return parse_floats if inner is float else _str_list
    return {int: _int, float: _float}.get(tp, str)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise LongRopeError(f"not an integer: {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise LongRopeError(f"not a number: {text!r}") from None


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def add_config_args(parser, cls, names: Iterable[str], *, suppress: bool = False, rename: dict | None = None,
                    helps: dict | None = None, choices: dict | None = None, required: Iterable[str] = ()):
    """One `--field-name` option per field in `names`, its type, default and help taken from the
    dataclass. suppress=True leaves unset options out of the namespace (to tell given from default).
    A bool field becomes a switch that flips its default (`--no-X` when the default is True). `helps`
    and `choices` supply what the field's metadata lacks; `required` names fields the CLI insists on."""
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    rename = rename or {}
    for name in names:
        f = fields[name]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        text = f.metadata.get("help") or (helps or {}).get(name, "")
        text = text() if callable(text) else text  # a help naming what is registered when the parser is built
        shown = "" if default is None or isinstance(default, bool) else f" (default {_show(default)})"
        kw: dict[str, Any] = {"dest": name, "help": text + shown}
        missing = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name in required or (missing and not suppress):
            kw["required"], kw["help"] = True, text
        elif suppress:
            kw["default"] = argparse.SUPPRESS
        else:
            kw["default"] = default
        flag = rename.get(name) or "--" + name.replace("_", "-")
        if hints[name] is bool:
            if default:
                flag = rename.get(name) or "--no-" + name.replace("_", "-")
            parser.add_argument(flag, action="store_false" if default else "store_true", **kw)
            continue
        if f.metadata.get("choices") or (choices or {}).get(name):
            kw["choices"] = f.metadata.get("choices") or choices[name]
        parser.add_argument(flag, metavar=name.upper(), **kw)  # text, parsed by from_args

def from_args(args, cls, names: Iterable[str]) -> dict:
    """The values of `names` present in the argparse namespace, parsed by their field's type (a bad
    value is a one-line LongRopeError naming the option)."""
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for n in names:
        if not hasattr(args, n):
            continue
        value = getattr(args, n)
        if isinstance(value, str) and hints[n] is not str:
            try:
                value = _parser_for(fields[n], hints[n])(value)
            except LongRopeError as e:
                raise LongRopeError(f"--{n.replace('_', '-')}: {e}") from None
        out[n] = value
    return out


# -- argparse types for numeric options: a bad value is argparse's one-line error, before any work --
def _number(kind, text: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = _number(float, text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value:g}")
    return value

