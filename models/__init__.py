"""models: every memory-architecture family behind one interface, in plain PyTorch.

    >>> from models import build_model
    >>> model = build_model("lstm", vocab_size=32, d_model=64, n_layers=2)
    >>> model(torch.zeros(2, 10, dtype=torch.long)).shape
    torch.Size([2, 10, 32])

Adding a family is one file in `models/families/` with a `@register_model("name")` subclass of
`MemoryModel`; the contract tests pick it up.
"""

from __future__ import annotations

import inspect

from membench.checks import ConfigError
from membench.models.base import MLP, Block, MemoryModel, Mixer, linear_flops
from membench.registry import Registry, UnknownNameError

MODELS: Registry[type[MemoryModel]] = Registry("model", package="membench.models.families", plugins=True)
_BASE_ARGS = ("vocab_size", "d_model", "n_layers")


def register_model(name: str, order: int = 100):
    """Class decorator: registers a MemoryModel subclass under `name` and sets its `family`. A sequence mixer
    class (an nn.Module built as Mixer(d_model, ...), as in a plugin folder) is registered wrapped in the shared
    blocks, as an import path would be (membench.plugins); the decorated class itself is returned unchanged."""

    def decorator(cls: type[MemoryModel]) -> type[MemoryModel]:
        model = cls
        if not (isinstance(cls, type) and issubclass(cls, MemoryModel)):
            from membench import plugins

            model = plugins.adapt("model", name, cls)
        MODELS.register(name, order)(model)
        model.family = name
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


def params_matched(
    name: str,
    target_params: int,
    vocab_size: int,
    n_layers: int = 2,
    multiple: int = 8,
    tolerance: float = 0.10,
    **params,
) -> MemoryModel:
    """Build family `name` at the width whose parameter count is closest to `target_params`.

    A bisection over multiples of `multiple` finds the neighbourhood (the count grows with width); every
    width in it is then tried, skipping widths the family rejects (e.g. not divisible by its head count),
    and the closest count wins, a multiple of `multiple` on ties. Raises ValueError when even the closest
    is off by more than `tolerance`.
    """

    def count(width: int) -> int | None:
        try:
            return build_model(name, vocab_size, d_model=width, n_layers=n_layers, **params).num_params()
        except ConfigError:
            return None  # a width this family does not allow

    def error(width: int) -> float:
        n = count(width)
        return float("inf") if n is None else abs(n - target_params)

    lo, hi = 1, 2  # in units of `multiple`
    while (count(hi * multiple) or 0) < target_params and hi < 4096:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # invariant: count(lo) < target <= count(hi), except at the bounds
        mid = (lo + hi) // 2
        if (count(mid * multiple) or 0) < target_params:
            lo = mid
        else:
            hi = mid
    nearby = range(max(1, lo * multiple - multiple), hi * multiple + multiple + 1)
    best = min(nearby, key=lambda w: (error(w), w % multiple != 0))  # closest; a multiple on ties
    if error(best) > tolerance * target_params:
        raise ConfigError(
            f"model {name} cannot be matched to {target_params} params within {tolerance:.0%} "
            f"(closest: d_model={best} with {count(best)} params); change n_layers or the target"
        )
    return build_model(name, vocab_size, d_model=best, n_layers=n_layers, **params)


__all__ = [
    "MLP", "MODELS", "Block", "MemoryModel", "Mixer", "UnknownNameError", "build_model", "family_params",
    "linear_flops", "list_models", "model_class", "params_matched", "register_model",
]
