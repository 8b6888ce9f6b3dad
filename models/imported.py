"""A sequence mixer from outside membench, built into a model exactly as membench's own families are.

A mixer is any `nn.Module` class whose constructor takes `d_model` (optionally `layer_idx`, as Zoology's
mixers do, plus its own params) and whose forward maps (B, T, D) -> (B, T, D), causally. `mixer_model_class`
turns it into a `MemoryModel` subclass: token embedding, `n_layers` pre-norm blocks (x + mixer(norm(x)), then
x + mlp(norm(x)) with `mlp_ratio`), final norm and head. Its params are the mixer constructor's own, plus
`mlp_ratio`, so `build_model`, `family_params` and `params_matched` treat it like any family.

    >>> from torch import nn
    >>> class Shift(nn.Module):            # y_t = W x_{t-1}: causal, remembers one step
    ...     def __init__(self, d_model, scale=1.0):
    ...         super().__init__()
    ...         self.proj, self.scale = nn.Linear(d_model, d_model), scale
    ...     def forward(self, x):          # (B, T, D) -> (B, T, D)
    ...         return self.scale * self.proj(nn.functional.pad(x, (0, 0, 1, 0))[:, :-1])
    >>> cls = mixer_model_class("demo:Shift", Shift)
    >>> model = cls(vocab_size=8, d_model=16, n_layers=2, scale=0.5)
    >>> model(torch.zeros(2, 5, dtype=torch.long)).shape
    torch.Size([2, 5, 8])
    >>> model.state_size(100) is None      # Shift declares no state_size(seq_len): unknown, not 0
    True
    >>> model.flops(2, 5) == 2 * (2 * 2 * 5 * 16 * 16) + model.mlp_flops(2, 5) + model.head_flops(10)
    True

Optional methods of the mixer: `state_size(seq_len)` (floats carried per sequence; absent: unknown, None) and
`flops(batch_size, seq_len)` (absent: the whole model's forward is counted once per shape with torch's
FlopCounterMode on the reference path, `counted_flops`); `cost_class` and `version` class attributes.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from membench.checks import ConfigError
from membench.models.base import MemoryModel, Mixer

_OWN = ("self", "d_model", "layer_idx")


def declares(obj: object, method: str) -> bool:
    """True when `obj` has `method` of its own, not the NotImplementedError stub of membench's Mixer."""
    found = getattr(type(obj), method, None)
    return callable(found) and found is not getattr(Mixer, method, None)


class ImportedMixer(Mixer):
    """Adapter: a user's (B, T, D) -> (B, T, D) module as a membench Mixer (path, state size, FLOPs)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        y = self.inner(x)
        if not isinstance(y, torch.Tensor) or y.shape != x.shape:
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ConfigError(f"mixer {type(self.inner).__name__} must map (B, T, D) = {tuple(x.shape)} to the "
                              f"same shape, got {shape}")
        return y

    def state_size(self, seq_len: int) -> int | None:
        return int(self.inner.state_size(seq_len)) if declares(self.inner, "state_size") else None

    def flops(self, batch_size: int, seq_len: int) -> int | None:
        return int(self.inner.flops(batch_size, seq_len)) if declares(self.inner, "flops") else None

    def attention_flops(self, batch_size: int, seq_len: int) -> int:
        return int(self.inner.attention_flops(batch_size, seq_len)) if declares(self.inner, "attention_flops") else 0


def counted_flops(model: MemoryModel, batch_size: int, seq_len: int) -> int:
    """Forward FLOPs of `model` on a (batch_size, seq_len) batch, counted by FlopCounterMode on the reference
    path (2 per multiply-accumulate, as membench's analytic formulas), once per shape (cached on the model).

    The batched matmuls (bmm) inside modules named like attention ("attn", "attention", not "linear_attn")
    are kept as the model's `_counted_attention_flops` for the same shape."""
    cache = model.__dict__.setdefault("_counted_flops", {})
    attention = model.__dict__.setdefault("_counted_attention_flops", {})
    if (batch_size, seq_len) not in cache:
        device = next(model.parameters()).device
        counter = count_reference_forward(model, torch.zeros(batch_size, seq_len, dtype=torch.long, device=device))
        cache[(batch_size, seq_len)] = int(counter.get_total_flops())
        attention[(batch_size, seq_len)] = _attention_part(counter.get_flop_counts())
    return cache[(batch_size, seq_len)]


def count_reference_forward(model: MemoryModel, tokens: torch.Tensor) -> FlopCounterMode:
    """One no-grad, eval-mode forward of `model` on the reference path under FlopCounterMode; the model's
    paths, mode and parameters' requires_grad are restored afterwards. Returns the finished counter.

    Parameters stop requiring grad while counting: under no_grad, FlopCounterMode's module tracker cannot hook
    a module input that is a leaf requiring grad ("Expected gradient function to be set"), and transformers'
    kernel function-modules take weights as inputs."""
    paths = {m: m.path for m in model.mixers()}
    own_path, training = getattr(model, "path", None), model.training
    trainable = [p for p in model.parameters() if p.requires_grad]
    try:
        model.set_path("reference").eval()
        for p in trainable:
            p.requires_grad_(False)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(tokens)
    finally:
        for p in trainable:
            p.requires_grad_(True)
        model.train(training)
        if own_path is not None:
            model.set_path(own_path)
        for mixer, path in paths.items():
            mixer.path = path
    return counter


def _attention_part(counts: dict[str, dict]) -> int:
    """bmm FLOPs of the outermost modules whose last name is attention-like (token-to-token products)."""
    def attention_like(name: str) -> bool:
        last = name.rsplit(".", 1)[-1].lower()
        return ("attn" in last or "attention" in last) and "linear" not in last

    chosen = [n for n in counts if attention_like(n)]
    outermost = [n for n in chosen if not any(n.startswith(o + ".") for o in chosen if o != n)]
    return int(sum(v for n in outermost for op, v in counts[n].items() if "bmm" in str(op)))


class ImportedMixerModel(MemoryModel):
    analytic_flops = False  # counted on a real forward unless every mixer declares its own
    """Base of the models built from an imported mixer class (see `mixer_model_class`)."""

    mixer_class: type[nn.Module] = nn.Module
    cost_class = "unknown"

    def state_size(self, seq_len: int) -> int | None:
        sizes = [m.state_size(seq_len) for m in self.mixers() if isinstance(m, ImportedMixer)]
        return None if any(s is None for s in sizes) else sum(sizes)

    def mlp_flops(self, batch_size: int, seq_len: int) -> int:
        return sum(b.mlp.flops(batch_size, seq_len) for b in self.blocks if b.mlp is not None)

    def flops(self, batch_size: int, seq_len: int) -> int:
        """The mixers' own `flops` when every one declares it (plus MLPs and head), else counted."""
        own = [m.flops(batch_size, seq_len) for m in self.mixers() if isinstance(m, ImportedMixer)]
        if any(f is None for f in own):
            return counted_flops(self, batch_size, seq_len)
        return sum(own) + self.mlp_flops(batch_size, seq_len) + self.head_flops(batch_size * seq_len)


def mixer_model_class(path: str, mixer: type[nn.Module]) -> type[ImportedMixerModel]:
    """A MemoryModel subclass whose blocks hold `mixer(d_model=D, [layer_idx=i,] **params)`; its signature
    (what `family_params` reads) is (vocab_size, d_model, n_layers, *, mlp_ratio=4, <the mixer's params>)."""
    signature = inspect.signature(mixer.__init__)
    takes_layer_idx = "layer_idx" in signature.parameters
    own = [p for p in signature.parameters.values()
           if p.name not in _OWN and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    required = [p.name for p in own if p.default is p.empty]

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, mlp_ratio: int = 4, **params) -> None:
        missing = [name for name in required if name not in params]
        if missing:
            raise ConfigError(f"model {path} needs param {', '.join(missing)} (its constructor has no default)")

        def make_mixer(layer_idx: int) -> ImportedMixer:
            extra = {"layer_idx": layer_idx} if takes_layer_idx else {}
            return ImportedMixer(mixer(d_model=d_model, **extra, **params))

        MemoryModel.__init__(self, vocab_size, d_model, n_layers, make_mixer, mlp_ratio)

    P = inspect.Parameter
    __init__.__signature__ = inspect.Signature([
        P("self", P.POSITIONAL_OR_KEYWORD), P("vocab_size", P.POSITIONAL_OR_KEYWORD),
        P("d_model", P.POSITIONAL_OR_KEYWORD, default=64), P("n_layers", P.POSITIONAL_OR_KEYWORD, default=2),
        P("mlp_ratio", P.KEYWORD_ONLY, default=4), *[p.replace(kind=P.KEYWORD_ONLY) for p in own],
    ])
    doc = (inspect.getdoc(mixer) or "").strip().splitlines()
    return type(mixer.__name__, (ImportedMixerModel,), {
        "__init__": __init__, "__module__": mixer.__module__, "__doc__": inspect.getdoc(mixer),
        "name": path, "mixer_class": mixer,
        "cost_class": getattr(mixer, "cost_class", "unknown"), "version": getattr(mixer, "version", 1),
        "memory_mechanism": doc[0] if doc else f"imported mixer {path}",
    })
