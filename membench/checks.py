"""Every validation rule of membench, and the one error type for bad configuration.

Tasks, models, specs and the command line all check their inputs here, so a rule is written once and
its message reads the same wherever it fires. A failed check raises `ConfigError` (a `ValueError`): the
CLI prints it as one line and exits 2. Any other exception is a bug and keeps its traceback.

Two forms of each check:
- `check_int(label, value, minimum=1)` checks one value now and returns it;
- `integer(minimum)` returns a checker `(value, label) -> value` for tables of settings (the spec).

    >>> check_int("num_kv_pairs", 8)
    8
    >>> check_int("num_kv_pairs", 0)
    Traceback (most recent call last):
    membench.checks.ConfigError: num_kv_pairs must be an integer >= 1, got 0
    >>> number(0, 1, low_open=True)(1.5, "threshold")
    Traceback (most recent call last):
    membench.checks.ConfigError: threshold must be a number in (0, 1], got 1.5
"""

from __future__ import annotations

import math
import re
from typing import Callable

Checker = Callable[[object, str], object]  # (value, label) -> the value, or ConfigError
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class ConfigError(ValueError):
    """Bad configuration (a task or model param, a spec key, a flag's value). The message names what is
    wrong and what is allowed, on one line."""


def check_int(label: str, value: object, minimum: int = 1, none_means: str | None = None,
              maximum: int | None = None) -> object:
    """`value` if it is an int in [minimum, maximum] (or None, when `none_means` says what None does)."""
    if value is None and none_means is not None:
        return value
    bad = isinstance(value, bool) or not isinstance(value, int) or value < minimum
    if bad or (maximum is not None and value > maximum):
        allowed = f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"
        allowed += f" or None ({none_means})" if none_means else ""
        raise ConfigError(f"{label} must be {allowed}, got {value!r}")
    return value


def check_number(label: str, value: object, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False) -> float:
    """`value` as a float if it is a finite real number in the interval; bools are not numbers."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ConfigError(f"{label} must be a number in {lo}{low:g}, {high:g}{hi}, got {value!r}")
    return float(value)


def check_choice(label: str, value: object, valid: tuple[str, ...] | list[str]) -> object:
    if value not in valid:
        raise ConfigError(f"{label} must be one of {', '.join(map(str, valid))}, got {value!r}")
    return value


def check_text(label: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{label} must be a string, got {value!r}")
    return value


def check_table(label: str, value: object) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{label} must be a table, got {value!r}")
    return value


def check_device(label: str, value: object) -> str:
    """A well-formed device name: auto, cpu, cuda or cuda:N (whether it exists is the executor's check)."""
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise ConfigError(f"{label} must be auto, cpu, cuda or cuda:N, got {value!r}")
    return value


def check_divides(label: str, value: int, divisor_label: str, divisor: int) -> None:
    """`value` must be a multiple of `divisor` (e.g. d_model of n_heads)."""
    if value % divisor:
        raise ConfigError(f"{label}={value} must be divisible by {divisor_label}={divisor}")


# --- checkers for tables of settings: each returns (value, label) -> value --------------------------------
def integer(minimum: int, maximum: int | None = None) -> Checker:
    return lambda value, label: check_int(label, value, minimum, maximum=maximum)


def number(low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False) -> Checker:
    return lambda value, label: check_number(label, value, low, high, low_open, high_open)


def choice(valid: tuple[str, ...]) -> Checker:
    return lambda value, label: check_choice(label, value, valid)


def text(value: object, label: str) -> str:
    return check_text(label, value)


def table(value: object, label: str) -> dict:
    return check_table(label, value)


def device(value: object, label: str) -> str:
    return check_device(label, value)


def list_of(item: Checker, allow_empty: bool = False) -> Checker:
    def check(value, label):
        if not isinstance(value, list) or (not value and not allow_empty):
            raise ConfigError(f"{label} must be a {'' if allow_empty else 'non-empty '}list, got {value!r}")
        return [item(v, f"{label}[{i}]") for i, v in enumerate(value)]
    return check


def one_or_list(item: Checker) -> Checker:
    """A single value or a non-empty list of them (a sweep over the list), each checked by `item`."""
    def check(value, label):
        return list_of(item)(value, label) if isinstance(value, list) else item(value, label)
    return check
