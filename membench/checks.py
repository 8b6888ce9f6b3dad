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


def check_type(label: str, value: object, kind: type, what: str) -> object:
    """`value` if it is an instance of `kind`; `what` names the kind in the message ("a string")."""
    if not isinstance(value, kind):
        raise ConfigError(f"{label} must be {what}, got {value!r}")
    return value


def check_bool(label: str, value: object) -> bool:
    return check_type(label, value, bool, "true or false")


def check_text(label: str, value: object) -> str:
    return check_type(label, value, str, "a string")


def check_table(label: str, value: object) -> dict:
    return check_type(label, value, dict, "a table")


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


def number_or(word: str, low: float, high: float = math.inf, low_open: bool = False) -> Checker:
    """A number in the interval, or the string `word` (e.g. time_cap = "auto")."""
    def check(value, label):
        if value == word:
            return value
        try:
            return check_number(label, value, low, high, low_open)
        except ConfigError:
            raise ConfigError(f"{label} must be {word!r} or a number in {'(' if low_open else '['}{low:g}, "
                              f"{high:g}], got {value!r}") from None
    return check


def one_or_list(item: Checker) -> Checker:
    """A single value or a non-empty list of them (a sweep over the list), each checked by `item`."""
    def check(value, label):
        return list_of(item)(value, label) if isinstance(value, list) else item(value, label)
    return check


# --- limits on sizes ----------------------------------------------------------------------------------------
# Stated ceilings, checked when a spec or a flag is read (before anything trains or is written), so an
# impossible size fails in a second with one line instead of allocating gigabytes or running for days.
# Each is far above what a sweep on one GPU can use; where a real run needs more, raise the constant.
LIMITS = {
    "seed": 2**32 - 1,             # a seed is one torch generator seed: 0 <= seed < 2^32
    "length": 2**20,               # tokens per sequence (train, eval, show)
    "batch_tokens": 2**24,         # batch_size x length of one training step (16M tokens)
    "eval_tokens": 2**30,          # n_sequences x seq_len of one eval slice
    "eval_sequences": 2**20,       # held-out sequences of one eval slice
    "vocab_size": 2**20,           # tokens of a task's vocabulary (one output row each)
    "params": 10**9,               # parameters of one model (float32 weights + AdamW state: 16 bytes each)
    "d_model": 2**16,              # model width
    "n_layers": 256,               # model depth (a deeper model takes seconds to count even on the meta device)
    "learning_rate": 10.0,         # peak learning rate
    "cpu_threads": 1024,           # torch threads of a CPU trial
    "gpu_workers": 64,             # worker processes sharing one GPU (each holds a CUDA context, ~0.5 GB)
    "steps": 10**9,                # optimizer steps of a trial
    "repeats": 10**4,              # timed steps per point of `membench cost`
}


def check_limit(label: str, value: int | float, limit: str) -> None:
    """`value` must not exceed LIMITS[limit]: a one-line error naming the ceiling otherwise.

        >>> check_limit("lengths[0]", 10**9, "length")
        Traceback (most recent call last):
        membench.checks.ConfigError: lengths[0] = 1000000000 is above the limit of 1048576 (tokens per sequence); ...
    """
    ceiling = LIMITS[limit]
    if value > ceiling:
        raise ConfigError(f"{label} = {_show(value)} is above the limit of {_show(ceiling)} ({_LIMIT_TEXT[limit]}); "
                          f"see LIMITS in membench/checks.py")


def _show(value: int | float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


_LIMIT_TEXT = {
    "seed": "seeds are below 2^32", "length": "tokens per sequence", "batch_tokens": "batch_size x length tokens "
    "per step", "eval_tokens": "n_sequences x seq_len tokens per eval slice", "eval_sequences": "sequences per eval "
    "slice", "vocab_size": "tokens of a vocabulary", "params": "parameters of one model", "d_model": "model width",
    "n_layers": "layers", "learning_rate": "peak learning rate", "cpu_threads": "CPU threads",
    "gpu_workers": "workers per GPU",
    "steps": "steps of a trial", "repeats": "timed steps per point",
}


def check_name(label: str, value: object) -> str:
    """A display name (an eval slice's): a non-empty string without control characters (newlines, tabs)."""
    check_text(label, value)
    if not value.strip() or any(not ch.isprintable() for ch in value):
        raise ConfigError(f"{label} must be a non-empty name without newlines or control characters, got {value!r}")
    return value


def name(value: object, label: str) -> str:
    return check_name(label, value)


def limited(check: Checker, limit: str) -> Checker:
    """`check`, then the ceiling LIMITS[limit] (on each item of a list)."""
    def checked(value, label):
        value = check(value, label)
        for i, item in enumerate(value if isinstance(value, list) else [value]):
            check_limit(f"{label}[{i}]" if isinstance(value, list) else label, item, limit)
        return value
    return checked


def cpu_workers(value: object, label: str) -> int | str:
    """Worker processes of a sweep on the CPU: an integer in [1, 1024], or "cores" (one per core)."""
    if value == "cores":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
        raise ConfigError(f"{label} must be an integer in [1, 1024] or \"cores\" (one worker per core), got {value!r}")
    return value
