"""Parsing of command-line values: comma lists, positive integers, KEY=VALUE params; the shared --include flag."""

from __future__ import annotations

import argparse
import ast
import typing

from membench.checks import check_limit
from membench.runners.errors import UsageError


def positive_int(text: str, label: str = "value", limit: str | None = None) -> int:
    """'64' -> 64; with `limit`, also at most membench.checks.LIMITS[limit] (a one-line error naming it)."""
    if not isinstance(text, str) or not text.strip().isascii() or not text.strip().isdigit():
        raise UsageError(f"{label} must be a positive integer, got {text!r}")
    value = int(text)
    if value < 1:
        raise UsageError(f"{label} must be a positive integer, got {text!r}")
    if limit is not None:
        check_limit(label, value, limit)
    return value


def growth_factor(text: str) -> float:
    """argparse type of --retrain-under-trained: a number above 1 and at most 100 ('2' -> 2.0)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 1 < value <= 100:
        raise argparse.ArgumentTypeError(f"must be a number above 1 (how many times the steps), at most 100, "
                                         f"got {text!r}; e.g. 2")
    return value


def out_dir(text: str) -> str:
    """argparse type of every --out (and DIR) flag: a non-empty path (an empty one would mean the current
    directory, whose files a sweep would overwrite)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty; give a directory, e.g. --out results/mine")
    return text


def seed_list(text: str) -> list[int]:
    """'0,1' -> [0, 1]; every item an integer in [0, 2^32)."""
    seeds = []
    for item in name_list(text):
        if not (item.isascii() and item.isdigit()):
            raise UsageError(f"--seeds must be integers >= 0 separated by commas, got {text!r}")
        seeds.append(int(item))
        check_limit("--seeds", seeds[-1], "seed")
    if not seeds:
        raise UsageError("--seeds needs at least one value, e.g. --seeds 0,1")
    return seeds


def int_list(text: str, label: str, limit: str | None = None) -> list[int]:
    """'64,128' -> [64, 128]; every item a positive integer (at most LIMITS[limit] with `limit`)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UsageError(f"{label} needs at least one value, e.g. {label}=64,128")
    return [positive_int(t, label, limit) for t in items]


def name_list(text: str) -> list[str]:
    """'a,b' -> ['a', 'b']."""
    return [t.strip() for t in text.split(",") if t.strip()]


def literal(text: str) -> object:
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, 'none' -> None, anything else stays a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def key_values(pairs: list[str] | None, field_types: dict[str, object] | None = None) -> dict[str, object]:
    """['a=1', 'b=x'] -> {'a': 1, 'b': 'x'}; values checked against `field_types` where given."""
    result: dict[str, object] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UsageError(f"--param expects KEY=VALUE, got {pair!r}")
        key, text = pair.split("=", 1)
        value = literal(text)
        expected = (field_types or {}).get(key.strip())
        if expected is not None and not _matches(value, expected):
            raise UsageError(f"param {key.strip()} must be {_type_name(expected)}, got {text!r}")
        result[key.strip()] = value
    return result


def _matches(value: object, expected: object) -> bool:
    args = typing.get_args(expected) or (expected,)
    for arg in args:
        if arg is type(None) and value is None:
            return True
        if arg is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if arg is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if isinstance(arg, type) and arg not in (int, float) and isinstance(value, arg):
            return True
    return False


def _type_name(expected: object) -> str:
    args = typing.get_args(expected) or (expected,)
    return " or ".join(getattr(a, "__name__", str(a)).replace("NoneType", "none") for a in args)


def add_include_flag(parser) -> None:
    """`--include DIR` (repeatable): plugin folders whose *.py files the CLI imports before the command runs."""
    parser.add_argument("--include", action="append", metavar="DIR", default=[],
                        help="import every *.py file in DIR first (its @register_model/@register_task run); "
                             "repeatable")
