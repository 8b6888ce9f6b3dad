"""The model interface: int64 tokens (B, T) -> float logits (B, T, vocab_size), causal.

Every family is a stack of pre-norm residual blocks around a token embedding and an output head:

    x = embed(tokens)                       # (B, T, D)
    for each block:  x = x + mixer(norm(x))  # sequence mixing: the family's memory, causal
                     x = x + mlp(norm(x))    # per-position channel mixing (optional)
    logits = head(norm(x))                  # (B, T, V)

A family supplies the `Mixer` (a (B, T, D) -> (B, T, D) module that knows its own state size and
analytic FLOPs). Families with a fast path keep a readable reference path beside it, chosen with
`model.set_path("reference")`; tests check that both agree.

FLOPs convention: 2 per multiply-accumulate of every matrix product (what torch's FlopCounterMode
counts), forward pass only; element-wise work (norms, activations, gates) is not counted.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable, ClassVar

import torch
from torch import nn

from membench.checks import ConfigError, check_bool, check_int

PATHS = ("fast", "reference")


class TwoPaths:
    """A module with a fast path and a readable reference path tested against it: every mixer, and layers
    inside mixers that have a faster form of their own (models.layers.ShortConv)."""

    path: str = "fast"  # "fast" or "reference"; set through MemoryModel.set_path


class Mixer(TwoPaths, nn.Module):
    """A causal sequence mixer (B, T, D) -> (B, T, D): output at t depends on inputs at <= t only."""

    def state_size(self, seq_len: int) -> int:
        """Floats of memory carried to predict the token at `seq_len` (per sequence)."""
        raise NotImplementedError

    def flops(self, batch_size: int, seq_len: int) -> int:
        """Analytic forward FLOPs of this mixer (2 per multiply-accumulate)."""
        raise NotImplementedError

    def fast_path_flops(self, batch_size: int, seq_len: int) -> int:
        """Forward FLOPs of the fast path, where it does less work than the reference that `flops` describes
        (hyena's FFT against its direct convolution); the cost model (runners/cost/estimate.py) uses it.
        FlopCounterMode does not count FFTs, so it is an analytic figure only."""
        return self.flops(batch_size, seq_len)

    def attention_flops(self, batch_size: int, seq_len: int) -> int:
        """The part of `flops` spent on token-to-token attention: softmax scores q.k over past tokens and
        their weighted sum of values (the O(n^2) or O(n*w) part). 0 for a mixer without attention."""
        return 0

    def memory_flops(self, batch_size: int, seq_len: int) -> int:
        """The part of `flops` spent on a recurrent or external memory: a scan's state update and read-out,
        an external memory's addressing, read and write. Attention is counted in `attention_flops`, not here;
        dense projections and gates in neither."""
        return 0


def linear_flops(tokens: int, d_in: int, d_out: int) -> int:
    """FLOPs of a dense layer applied to `tokens` vectors."""
    return 2 * tokens * d_in * d_out


class MLP(nn.Module):
    """Per-position feed-forward network: Linear(D, rD) -> GELU -> Linear(rD, D)."""

    def __init__(self, d_model: int, ratio: int = 4) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, ratio * d_model)
        self.down = nn.Linear(ratio * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        return self.down(nn.functional.gelu(self.up(x)))

    def flops(self, batch_size: int, seq_len: int) -> int:
        tokens = batch_size * seq_len
        return linear_flops(tokens, self.up.in_features, self.up.out_features) + linear_flops(
            tokens, self.down.in_features, self.down.out_features
        )


class Block(nn.Module):
    """Pre-norm residual block: x + mixer(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, d_model: int, mixer: Mixer | None, mlp_ratio: int) -> None:
        super().__init__()
        self.mixer = mixer
        self.norm1 = nn.LayerNorm(d_model) if mixer is not None else None
        self.mlp = MLP(d_model, mlp_ratio) if mlp_ratio > 0 else None
        self.norm2 = nn.LayerNorm(d_model) if self.mlp is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        if self.mixer is not None:
            x = x + self.mixer(self.norm1(x))
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))
        return x


# The rule for every model's params, applied before its __init__ body runs (every MemoryModel subclass gets it):
# a param annotated `int` is an integer >= 1, or >= 0 for the names below (0 switches that part off); one
# annotated `bool` is true or false. A family checks only what is its own (a choice of strings, head counts).
ZERO_MEANS_OFF = ("mlp_ratio", "short_conv")


def checks_params(init: Callable) -> Callable:
    """`init` with its int and bool params checked first (the rule above), e.g. build_model("ssm", 32,
    d_state=0) -> ConfigError: d_state must be an integer >= 1, got 0."""
    signature = inspect.signature(init)
    checks: dict[str, Callable[[object], object]] = {}
    for param in signature.parameters.values():
        if param.annotation in ("int", int):
            minimum = 0 if param.name in ZERO_MEANS_OFF else 1
            checks[param.name] = functools.partial(check_int, param.name, minimum=minimum)
        elif param.annotation in ("bool", bool):
            checks[param.name] = functools.partial(check_bool, param.name)

    @functools.wraps(init)
    def checked_init(self, *args, **kwargs) -> None:
        for name, value in signature.bind(self, *args, **kwargs).arguments.items():
            if name in checks:
                checks[name](value)
        init(self, *args, **kwargs)

    return checked_init


class MemoryModel(nn.Module):
    """Embedding -> blocks -> norm -> head. Subclasses pass `make_mixer(layer_index) -> Mixer | None`.

    Subclasses are registered with @register_model("name"); their `__init__` keyword arguments
    (beyond vocab_size, d_model, n_layers) are the family's params accepted by `build_model`.
    """

    name: ClassVar[str] = "model"  # set by @register_model (the registry name)
    cost_class: ClassVar[str] = "O(n)"  # time per sequence as length n grows: O(n), O(n*w), O(n log n), O(n^2)
    memory_mechanism: ClassVar[str] = ""  # one line for the model table
    # bump whenever a change to the family changes what it computes or learns (architecture, init): it is
    # part of every trial's id and stored with every result, so old results are never mistaken for new ones
    version: ClassVar[int] = 1
    # True when the mixers have a separate readable reference path (set_path("reference")), tested equal
    has_reference_path: ClassVar[bool] = False
    # False when capturing the training step (torch.compile, CUDA graphs) does not pay for this family: its
    # graph breaks (cuDNN RNNs) or its trace unrolls every token; compile = "auto" then runs it eagerly
    compile_friendly: ClassVar[bool] = True
    # False when `flops` is counted by running a forward (Hugging Face and imported models) rather than
    # computed from the shapes: such a model cannot be costed on the meta device
    analytic_flops: ClassVar[bool] = True
    # seconds per token and layer (forward + backward) that the fast path spends stepping through the tokens one
    # at a time on a GPU (cuDNN's RNNs, a per-token loop), 0 for a family that processes a sequence at once: the
    # cost model's token_latency for the family wherever a spec sets none (runners/cost/estimate.py)
    token_latency: ClassVar[float] = 0.0

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = checks_params(cls.__init__)

    @checks_params
    def __init__(self, vocab_size: int, d_model: int, n_layers: int, make_mixer: Callable[[int], Mixer | None],
                 mlp_ratio: int = 4) -> None:  # mlp_ratio 0 = no MLP
        super().__init__()
        self.vocab_size, self.d_model, self.n_layers = vocab_size, d_model, n_layers
        self.embed = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(Block(d_model, make_mixer(i), mlp_ratio) for i in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    # --- forward ---------------------------------------------------------------------------
    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 -> (B, T, D): the final normed hidden states, before the output head."""
        x = self.embed(tokens)  # (B, T, D)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 -> (B, T, V) logits."""
        return self.head(self.features(tokens))

    # --- paths -----------------------------------------------------------------------------
    def set_path(self, path: str) -> "MemoryModel":
        """Choose the fast path or the readable reference path in every mixer (and every layer with paths of
        its own); returns self."""
        if path not in PATHS:
            raise ConfigError(f"path must be one of {', '.join(PATHS)}, got {path!r}")
        for module in self.modules():
            if isinstance(module, TwoPaths):
                module.path = path
        return self

    # --- what it costs ---------------------------------------------------------------------
    def mixers(self) -> list[Mixer]:
        return [m for m in self.modules() if isinstance(m, Mixer)]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def state_size(self, seq_len: int) -> int:
        """Floats of memory the model carries to predict the token at `seq_len`, per sequence."""
        return sum(m.state_size(seq_len) for m in self.mixers())

    def flops(self, batch_size: int, seq_len: int) -> int:
        """Analytic forward FLOPs for a (batch_size, seq_len) batch, attention and head included."""
        total = sum(m.flops(batch_size, seq_len) for m in self.mixers())
        total += sum(b.mlp.flops(batch_size, seq_len) for b in self.blocks if b.mlp is not None)
        return total + self.head_flops(batch_size * seq_len)

    def fast_path_flops(self, batch_size: int, seq_len: int) -> int:
        """`flops` with each mixer's fast path counted instead of its reference (see Mixer.fast_path_flops)."""
        faster = [m for m in self.mixers() if type(m).fast_path_flops is not Mixer.fast_path_flops]
        saved = sum(m.flops(batch_size, seq_len) - m.fast_path_flops(batch_size, seq_len) for m in faster)
        return self.flops(batch_size, seq_len) - saved

    def head_flops(self, rows: int) -> int:
        """FLOPs of the output head on `rows` positions (training runs it only at scored positions)."""
        return linear_flops(rows, self.d_model, self.vocab_size)

    def attention_flops(self, batch_size: int, seq_len: int) -> int:
        """The part of `flops` spent on token-to-token attention (see Mixer.attention_flops)."""
        return sum(m.attention_flops(batch_size, seq_len) for m in self.mixers())

    def memory_flops(self, batch_size: int, seq_len: int) -> int:
        """The part of `flops` spent on a recurrent or external memory (see Mixer.memory_flops)."""
        return sum(m.memory_flops(batch_size, seq_len) for m in self.mixers())
