"""models: every memory-architecture family behind one interface, in plain PyTorch.

    >>> import torch
    >>> from membench.models import build_model
    >>> model = build_model("lstm", vocab_size=32, d_model=64, n_layers=2)
    >>> model(torch.zeros(2, 10, dtype=torch.long)).shape
    torch.Size([2, 10, 32])

Adding a family is one file in `models/families/` with a `@register_model("name")` subclass of
`MemoryModel`; the contract tests pick it up.
"""

from __future__ import annotations

import inspect
import math

import torch

from membench.checks import LIMITS, ConfigError, check_int, check_limit
from membench.models.base import MLP, Block, MemoryModel, Mixer, linear_flops
from membench.registry import Registry, UnknownNameError

MODELS: Registry[type[MemoryModel]] = Registry("model", package="membench.models.families", plugins=True)
_BASE_ARGS = ("vocab_size", "d_model", "n_layers")


def register_model(name: str, order: int = 100):
    """Class decorator: registers a MemoryModel subclass under `name` (its `name`). A sequence mixer
    class (an nn.Module built as Mixer(d_model, ...), as in a plugin folder) is registered wrapped in the shared
    blocks, as an import path would be (membench.plugins); the decorated class itself is returned unchanged."""

    def decorator(cls: type[MemoryModel]) -> type[MemoryModel]:
        model = cls
        if not (isinstance(cls, type) and issubclass(cls, MemoryModel)):
            from membench import plugins

            model = plugins.adapt("model", name, cls)
        MODELS.register(name, order)(model)
        return cls

    return decorator


def list_models() -> list[str]:
    """Names of every registered family."""
    return MODELS.names()


def model_class(name: str) -> type[MemoryModel]:
    return MODELS.get(name)


def family_params(name: str) -> dict[str, object]:
    """The family's own params (beyond vocab_size, d_model, n_layers) with their defaults."""
    sig = inspect.signature(MODELS.get(name).__init__)
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.name not in ("self", *_BASE_ARGS) and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def build_model(name: str, vocab_size: int, d_model: int = 64, n_layers: int = 2, **params) -> MemoryModel:
    """Build family `name`. Unknown names or params raise an error listing the valid ones."""
    cls = MODELS.get(name)
    valid = family_params(name)
    for key in params:
        if key not in valid:
            raise ConfigError(
                f"unknown param {key!r} for model {name}; valid params: "
                f"{', '.join([*_BASE_ARGS[1:], *valid]) }"
            )
    return cls(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, **params)


SMALL_COUNT = {"d_model": 128, "vocab_size": 4096, "n_layers": 8}  # count_params builds up to these on the CPU


def count_params(name: str, vocab_size: int, d_model: int, n_layers: int = 2, **params) -> int:
    """Parameters of family `name` at this size. A large model is counted on the meta device: no memory is
    allocated, so a width of 65536 costs what a width of 8 does. A small one (every size within SMALL_COUNT)
    is built on the CPU, a few times faster (the meta device intercepts every op: the smoke preset's ~2,500
    counts take 2 s instead of 6.5 s), with the global random state restored after (counting draws nothing).

        >>> count_params("lstm", 64, d_model=64) == build_model("lstm", 64, d_model=64).num_params()
        True
    """
    sizes = {"d_model": d_model, "vocab_size": vocab_size, "n_layers": n_layers}
    small = all(isinstance(v, int) and v <= SMALL_COUNT[k] for k, v in sizes.items())
    with torch.random.fork_rng(devices=[]) if small else torch.device("meta"):
        return build_model(name, vocab_size, d_model=d_model, n_layers=n_layers, **params).num_params()


SDPA_HEAD_MULTIPLE = 8  # head width of softmax-attention families: a multiple of this lets SDPA use flash kernels


def width_step(name: str, multiple: int = 8, **params) -> int:
    """The grid of widths parameter matching searches first for family `name`.

    Softmax-attention families (cost class O(n^2) or O(n*w), with `n_heads`) step by 8 x n_heads, so the head
    width d_model / n_heads is a multiple of 8: scaled_dot_product_attention then has flash and
    memory-efficient kernels on a GPU (with a mask, a head width of e.g. 26 falls back to the math
    kernel, and timings stop being comparable). Other families with heads step by lcm(multiple, n_heads);
    the rest by `multiple`. Example: transformer with 4 heads -> 32; with 3 heads -> 24; ssm with 4 -> 8.
    """
    heads = _heads(name, params)
    if heads is None:
        return multiple
    return SDPA_HEAD_MULTIPLE * heads if _softmax_attention(name, params) else math.lcm(multiple, heads)


def fast_attention_width(name: str, d_model: int, **params) -> bool:
    """False for a softmax-attention family at a width whose head width is not a multiple of 8."""
    heads = _heads(name, params)
    return not _softmax_attention(name, params) or (d_model % heads == 0 and (d_model // heads) % 8 == 0)


def _heads(name: str, params: dict) -> int | None:
    """The family's n_heads (None without heads, or a bad value, which the family's own check reports)."""
    heads = params.get("n_heads", family_params(name).get("n_heads"))
    return heads if isinstance(heads, int) and not isinstance(heads, bool) and heads >= 1 else None


def _softmax_attention(name: str, params: dict) -> bool:
    """Families that attend with softmax over heads (SDPA): a cost class of attention (O(n^2), O(n*w)), and n_heads."""
    return _heads(name, params) is not None and model_class(name).cost_class in ("O(n^2)", "O(n*w)")


def matched_width(name: str, target_params: int, vocab_size: int, n_layers: int = 2, multiple: int = 8,
                  tolerance: float = 0.10, **params) -> int:
    """The width whose parameter count is closest to `target_params` (see params_matched).

    Counts of large models are taken on the meta device (count_params) and the search is bounded (widths up
    to LIMITS["d_model"], about 30 counts), so an impossible request (a vocabulary whose embedding alone
    exceeds the target, a target above the model-size ceiling, thousands of layers) fails in well under a
    second with one line.
    """
    check_int("target_params", target_params)
    check_limit("target_params", target_params, "params")
    check_limit("vocab_size", check_int("vocab_size", vocab_size), "vocab_size")
    check_limit("n_layers", check_int("n_layers", n_layers), "n_layers")
    heads = _heads(name, params) or 1  # attention's width must be a multiple of its head count

    def exact(width: int) -> int | None:
        try:
            return count_params(name, vocab_size, width, n_layers, **params)
        except ConfigError:
            return None  # a width this family does not allow

    def by_depth(width: int) -> int | None:
        """The count at n_layers from those at 1 and 2 layers (a + b * layers): deep models cost two shallow
        builds per width; the chosen width is then counted exactly."""
        try:
            one, two = (count_params(name, vocab_size, width, n, **params) for n in (1, 2))
        except ConfigError:
            return None
        return one + (n_layers - 1) * (two - one)

    shallow = n_layers <= 4
    count = exact if shallow else by_depth
    best, counts = _closest_width(name, target_params, multiple, tolerance, heads, params, count)
    if not shallow and exact(best) != counts[best]:  # layers that differ (a mixer pattern): count every depth
        best, counts = _closest_width(name, target_params, multiple, tolerance, heads, params, exact)
    if counts[best] is None or abs(counts[best] - target_params) > tolerance * target_params:
        raise ConfigError(
            f"model {name} cannot be matched to {target_params} params within {tolerance:.0%} "
            f"(closest: d_model={best} with {counts[best]} params); change n_layers or the target"
        )
    return best


def _closest_width(name: str, target: int, multiple: int, tolerance: float, heads: int, params: dict,
                   counter) -> tuple[int, dict[int, int | None]]:
    """(the width closest to `target` params, every count taken); softmax attention first on its grid."""
    counts: dict[int, int | None] = {}
    attention = _softmax_attention(name, params)

    def count(width: int) -> int | None:
        if width not in counts:
            counts[width] = counter(width)
        return counts[width]

    def error(width: int) -> float:
        n = count(width)
        return float("inf") if n is None else abs(n - target)

    def search(step: int, grid: bool) -> int:
        top = LIMITS["d_model"] // step  # in units of `step`
        lo, hi = 1, 2
        while (count(hi * step) or 0) < target and hi < top:
            lo, hi = hi, min(hi * 2, top)
        while hi - lo > 1:  # invariant: count(lo) < target <= count(hi), except at the bounds
            mid = (lo + hi) // 2
            if (count(mid * step) or 0) < target:
                lo = mid
            else:
                hi = mid
        if grid:  # only the grid's widths
            nearby = range(max(1, lo - 1) * step, (hi + 1) * step + 1, step)
        else:  # every width near the bracket (attention: a multiple of its heads), a multiple of `multiple` on ties
            by = heads if attention else 1
            nearby = range(max(by, lo * step - step), hi * step + step + 1, by)
        return min(nearby, key=lambda w: (error(w), w % multiple != 0))

    best = search(width_step(name, multiple, **params), grid=attention)
    if error(best) > tolerance * target and attention:
        best = search(math.lcm(multiple, heads), grid=False)  # off the fast-kernel grid
    return best, counts


def params_matched(name: str, target_params: int, vocab_size: int, n_layers: int = 2, multiple: int = 8,
                   tolerance: float = 0.10, **params) -> MemoryModel:
    """Build family `name` at the width whose parameter count is closest to `target_params`.

    A bisection over the family's width grid (width_step: multiples of `multiple`, or of 8 x n_heads for
    softmax attention) finds the neighbourhood (the count grows with width); widths in it are then tried,
    skipping widths the family rejects, and the closest count wins, a multiple of `multiple` on ties.
    Softmax attention keeps to its grid (head width a multiple of 8) when a width on it is within
    `tolerance`; otherwise it takes the closest width off the grid (fast_attention_width tells; the spec
    notes it). Counts of large models are taken on the meta device; only the chosen width is built for real.
    Raises ConfigError when even the closest is off by more than `tolerance`.
    """
    width = matched_width(name, target_params, vocab_size, n_layers, multiple, tolerance, **params)
    return build_model(name, vocab_size, d_model=width, n_layers=n_layers, **params)


__all__ = [
    "MLP", "MODELS", "Block", "MemoryModel", "Mixer", "UnknownNameError", "build_model", "family_params",
    "linear_flops", "list_models", "model_class", "params_matched", "register_model",
    "count_params", "fast_attention_width", "matched_width", "width_step",
]
