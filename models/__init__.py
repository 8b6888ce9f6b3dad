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

from memtasks.registry import Registry, UnknownNameError
from models.base import MLP, Block, MemoryModel, Mixer, linear_flops

MODELS: Registry[type[MemoryModel]] = Registry("model", package="models.families")
_BASE_ARGS = ("vocab_size", "d_model", "n_layers")


def register_model(name: str, order: int = 100):
    """Class decorator: registers a MemoryModel subclass under `name` and sets its `family`."""

    def decorator(cls: type[MemoryModel]) -> type[MemoryModel]:
        MODELS.register(name, order)(cls)
        cls.family = name
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
            raise ValueError(
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
    """Build family `name` with the width (a multiple of `multiple`) whose parameter count is closest
    to `target_params`; raise ValueError if none lands within +-`tolerance` of it.

    The parameter count grows monotonically with width, so a bisection over widths finds it.
    """

    def count(width: int) -> int:
        return build_model(name, vocab_size, d_model=width, n_layers=n_layers, **params).num_params()

    lo, hi = 1, 2
    while count(hi * multiple) < target_params and hi < 4096:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # invariant: count(lo) < target <= count(hi), except at the bounds
        mid = (lo + hi) // 2
        if count(mid * multiple) < target_params:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda k: abs(count(k * multiple) - target_params))
    model = build_model(name, vocab_size, d_model=best * multiple, n_layers=n_layers, **params)
    if abs(model.num_params() - target_params) > tolerance * target_params:
        raise ValueError(
            f"model {name} cannot be matched to {target_params} params within {tolerance:.0%} "
            f"(closest: d_model={best * multiple} with {model.num_params()} params); "
            f"change n_layers or the target"
        )
    return model


__all__ = [
    "MLP", "MODELS", "Block", "MemoryModel", "Mixer", "UnknownNameError", "build_model", "family_params",
    "linear_flops", "list_models", "model_class", "params_matched", "register_model",
]
