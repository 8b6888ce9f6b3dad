"""Parsing of command-line values: comma lists, positive integers, KEY=VALUE params; the shared --include flag."""

from __future__ import annotations

import ast
import typing

from membench.runners.errors import UsageError


def positive_int(text: str, label: str = "value") -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise UsageError(f"{label} must be a positive integer, got {text!r}") from None
    if value < 1:
        raise UsageError(f"{label} must be a positive integer, got {text!r}")
    return value


def int_list(text: str, label: str) -> list[int]:
    """'64,128' -> [64, 128]; every item a positive integer."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UsageError(f"{label} needs at least one value, e.g. {label}=64,128")
    return [positive_int(t, label) for t in items]


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
