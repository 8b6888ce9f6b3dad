"""`hf:MODEL_TYPE`: a Hugging Face `transformers` architecture, randomly initialised, as a membench model.

Optional extra: `pip install 'membench[hf]'` (it installs `transformers`). `hf:gpt2`, `hf:llama`, `hf:mamba`,
`hf:mamba2`, `hf:rwkv`, `hf:qwen3_next`, ... build `AutoModel.from_config(AutoConfig.for_model(TYPE, ...))`
(the backbone, with its own embedding and final norm) and put membench's head on it:

    tokens (B, T) -> backbone(input_ids=tokens).last_hidden_state (B, T, D) -> head (B, T, V)

The trial's vocabulary, width and layers are written onto the config's own attribute names (vocab_size;
hidden_size or n_embd or d_model; num_hidden_layers or n_layer or num_layers). Sizes that a config ties to
its (huge) defaults follow the width instead: the MLP is `mlp_ratio` x D (intermediate_size / n_inner), heads
are 16 wide (num_attention_heads = num_key_value_heads = D // 16, at least 1, dividing D), Mamba-2 has
16-wide heads and one group, Qwen3-Next's linear-attention heads match its attention heads and its MLP is
dense. Spec params are config overrides (`params = { num_attention_heads = 4 }`) and win over all of that.
Every dropout is 0 (membench's own families have none, so a train-mode forward is deterministic). Learned
position tables keep the config's length (GPT-2: n_positions = 1024): set it in params to train longer.

Nothing is downloaded: offline mode is forced (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE) and an attempt fails
with one line. The pure-PyTorch fallbacks' per-call warnings about missing CUDA kernels (mamba_ssm,
causal_conv1d, flash-linear-attention) are summarised in one note per kernel.

Cost: params counted; FLOPs counted by FlopCounterMode once per shape on the reference path (eager attention:
torch's CPU SDPA kernel is not counted), the attention part being the batched matmuls inside attention
modules. State size, where a formula exists (per sequence, summed over layers):

    attention (gpt2, llama, ...)  KV cache: 2 x kv_heads x head_dim x T per layer
    mamba                         conv (kernel - 1) x intermediate  +  SSM intermediate x state_size
    mamba2                        conv (kernel - 1) x (intermediate + 2 x groups x state_size)
                                  +  SSM heads x head_dim x state_size
    rwkv (v4)                     2 x D token shifts + 3 x attention_hidden (numerator, denominator, max)
    qwen3_next                    KV cache on full-attention layers; on linear-attention layers
                                  conv (kernel - 1) x (2 x key_dim + value_dim) + v_heads x k_dim x v_dim
    any other type                unknown (empty in the tables)
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import re
import sys
from typing import Callable

import torch
from torch import nn

from membench.checks import ConfigError
from membench.models.base import MemoryModel
from membench.models.imported import counted_flops

INSTALL = "pip install 'membench[hf]' (or pip install transformers)"
WIDTH, LAYERS, MLP_SIZE = ("hidden_size", "n_embd", "d_model"), ("num_hidden_layers", "n_layer", "num_layers"), \
    ("intermediate_size", "n_inner")
HEADS, KV_HEADS = ("num_attention_heads", "n_head"), ("num_key_value_heads",)
HEAD_WIDTH = 16
RECURRENT = {"mamba", "mamba2", "rwkv"}
_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
_FALLBACK = re.compile(r"`?(\w+)`? is falling back to its reference PyTorch implementation|fast path is not available")


def transformers_module():
    """`transformers`, imported in offline mode; ConfigError saying how to install it when absent."""
    os.environ.update(_OFFLINE)
    try:
        import huggingface_hub.constants
        import transformers
    except ImportError:
        raise ConfigError(f"hf: models need the Hugging Face extra: {INSTALL}") from None
    huggingface_hub.constants.HF_HUB_OFFLINE = True  # in case it was imported before the environment was set
    _summarise_fallback_warnings()
    return transformers


def _validation_error() -> type[Exception]:
    """The error huggingface_hub's strict config dataclasses raise for an inconsistent config."""
    from huggingface_hub import errors

    return getattr(errors, "StrictDataclassClassValidationError", ValueError)


class _FallbackNote(logging.Filter):
    """Drops transformers' per-call 'falling back to the reference PyTorch implementation' warnings, printing
    one note per kernel the first time instead."""

    seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        match = _FALLBACK.search(record.getMessage())
        if match is None:
            return True
        kernel = match.group(1) or "fast path"
        if kernel not in self.seen:
            self.seen.add(kernel)
            sys.stderr.write(f"membench: note: transformers runs {kernel} through its pure-PyTorch fallback "
                             f"(no CUDA kernel installed); further such warnings are silenced\n")
        return False


def _summarise_fallback_warnings() -> None:
    logger = logging.getLogger("transformers")
    note = next((f for f in logger.filters if isinstance(f, _FallbackNote)), None) or _FallbackNote()
    for target in [logger, *logger.handlers]:
        if note not in target.filters:
            target.addFilter(note)


# --- config ---------------------------------------------------------------------------------------------
def config_params(config_cls) -> dict[str, object]:
    """The config constructor's own params and defaults (what spec params may override)."""
    return {p.name: p.default for p in inspect.signature(config_cls.__init__).parameters.values()
            if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _first(names: tuple[str, ...], params: dict) -> str | None:
    return next((n for n in names if n in params), None)


def _divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of n that is <= limit (at least 1)."""
    return next(h for h in range(max(1, min(limit, n)), 0, -1) if n % h == 0)


def tiny_config(model_type: str, params: dict, vocab_size: int, d_model: int, n_layers: int, mlp_ratio: int,
                overrides: dict) -> dict:
    """The config kwargs of one membench build: roles mapped, sizes following the width, dropouts 0, then
    the user's overrides on top.

    >>> from transformers import GPT2Config
    >>> kw = tiny_config("gpt2", config_params(GPT2Config), 16, 32, 2, 4, {"n_head": 4})
    >>> kw["n_embd"], kw["n_layer"], kw["n_inner"], kw["n_head"], kw["attn_pdrop"]
    (32, 2, 128, 4, 0.0)
    """
    kw: dict[str, object] = {"vocab_size": vocab_size}
    for role, value in ((WIDTH, d_model), (LAYERS, n_layers)):
        name = _first(role, params)
        if name is None:
            raise ConfigError(f"hf:{model_type}: its config has none of {', '.join(role)}; membench cannot set "
                              f"its size")
        kw[name] = value
    heads = _divisor_at_most(d_model, d_model // HEAD_WIDTH)
    for role, value in ((MLP_SIZE, mlp_ratio * d_model), (HEADS, heads), (KV_HEADS, heads)):
        if (name := _first(role, params)) is not None:
            kw[name] = value
    if "head_dim" in params and model_type != "mamba2":
        kw["head_dim"] = d_model // int(overrides.get(_first(HEADS, params) or "", heads))
    if model_type == "mamba2":
        inner = int(overrides.get("expand", params.get("expand", 2))) * d_model
        kw["num_heads"] = _divisor_at_most(inner, inner // HEAD_WIDTH)
        kw.update(head_dim=inner // kw["num_heads"], n_groups=1)
    if model_type == "qwen3_next":
        kw.update(linear_num_key_heads=heads, linear_num_value_heads=heads, linear_key_head_dim=d_model // heads,
                  linear_value_head_dim=d_model // heads, mlp_only_layers=list(range(n_layers)))
    for name, default in params.items():
        if "drop" in name and isinstance(default, float):
            kw[name] = 0.0
        if name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            kw[name] = None  # the defaults (e.g. GPT-2's 50256) lie outside a task's vocabulary
    return {**kw, **overrides}


# --- state size -----------------------------------------------------------------------------------------
def _kv_cache(config, seq_len: int) -> int:
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * kv * head_dim * seq_len


def _mamba(config, seq_len: int) -> int:
    return config.intermediate_size * (config.conv_kernel - 1) + config.intermediate_size * config.state_size


def _mamba2(config, seq_len: int) -> int:
    inner = config.expand * config.hidden_size
    conv = (inner + 2 * config.n_groups * config.state_size) * (config.conv_kernel - 1)
    return conv + config.num_heads * config.head_dim * config.state_size


def _rwkv(config, seq_len: int) -> int:
    return 2 * config.hidden_size + 3 * (config.attention_hidden_size or config.hidden_size)


def _qwen3_next_layer(config, seq_len: int, kind: str) -> int:
    if kind == "full_attention":
        return _kv_cache(config, seq_len)
    key_dim = config.linear_num_key_heads * config.linear_key_head_dim
    value_dim = config.linear_num_value_heads * config.linear_value_head_dim
    return (2 * key_dim + value_dim) * (config.linear_conv_kernel_dim - 1) + \
        config.linear_num_value_heads * config.linear_key_head_dim * config.linear_value_head_dim


PER_LAYER_STATE: dict[str, tuple[str, Callable]] = {
    "mamba": ("conv + SSM state", _mamba), "mamba2": ("conv + SSM state", _mamba2),
    "rwkv": ("token shifts + WKV state", _rwkv),
}


def state_formula(model_type: str, config) -> tuple[str, Callable[[int], int] | None]:
    """(what the state is, seq_len -> floats per sequence), or (why unknown, None)."""
    layers = config.num_hidden_layers
    if model_type in PER_LAYER_STATE:
        what, per_layer = PER_LAYER_STATE[model_type]
        return what, lambda n: layers * per_layer(config, n)
    if model_type == "qwen3_next":
        kinds = list(config.layer_types)
        return "KV cache + gated-delta-rule state", lambda n: sum(_qwen3_next_layer(config, n, k) for k in kinds)
    is_attention = getattr(config, "num_attention_heads", None) and not any(
        hasattr(config, a) for a in ("state_size", "layer_types", "attention_hidden_size"))
    if is_attention:
        return "KV cache", lambda n: layers * _kv_cache(config, n)
    return "no formula for this type", None


# --- the model ------------------------------------------------------------------------------------------
class HFModel(MemoryModel):
    """Base of the `hf:TYPE` models: a transformers backbone and membench's head (see the module doc)."""

    model_type: str = ""
    analytic_flops = False  # counted by FlopCounterMode on a real forward


    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, mlp_ratio: int = 4,
                 **overrides) -> None:
        nn.Module.__init__(self)
        transformers = transformers_module()
        config_cls = transformers.CONFIG_MAPPING[self.model_type]
        valid = config_params(config_cls)
        kwargs = tiny_config(self.model_type, valid, vocab_size, d_model, n_layers, mlp_ratio, overrides)
        try:
            config = transformers.AutoConfig.for_model(self.model_type, **kwargs)
            for name, value in vars(config).items():  # dropouts a config derives after its constructor
                if "drop" in name and isinstance(value, float) and name not in overrides:
                    setattr(config, name, 0.0)
            self.backbone = transformers.AutoModel.from_config(config)
        except OSError as err:  # OfflineModeIsEnabled and every other attempt to reach the Hub
            raise ConfigError(f"hf:{self.model_type} tried to download ({type(err).__name__}: {err}); membench "
                              f"builds hf: models offline, from their config alone") from None
        except (ValueError, TypeError, RuntimeError, AttributeError, AssertionError, _validation_error()) as err:
            raise ConfigError(f"hf:{self.model_type} cannot be built at d_model={d_model}, n_layers={n_layers}: "
                              f"{' '.join(str(err).split())[:300]}; set its config in params") from None
        self.config = config
        self.vocab_size, self.d_model, self.n_layers = vocab_size, d_model, n_layers
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.path = "fast"
        self.state_kind, self._state = state_formula(self.model_type, config)
        if getattr(config, "layer_types", None) and "full_attention" not in config.layer_types:
            self.cost_class = "O(n)"  # e.g. Qwen3-Next at 2 layers: every layer is linear attention
        self._fast_attention = config._attn_implementation

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 -> (B, T, D): the backbone's last (final-normed) hidden states."""
        return self.backbone(input_ids=tokens, use_cache=False).last_hidden_state  # (B, T, D)

    def set_path(self, path: str) -> "HFModel":
        super().set_path(path)
        if self._fast_attention not in (None, "eager"):
            self.backbone.set_attn_implementation("eager" if path == "reference" else self._fast_attention)
        self.path = path
        return self

    def state_size(self, seq_len: int) -> int | None:
        return None if self._state is None else int(self._state(seq_len))

    def flops(self, batch_size: int, seq_len: int) -> int:
        return counted_flops(self, batch_size, seq_len)

    def attention_flops(self, batch_size: int, seq_len: int) -> int:
        counted_flops(self, batch_size, seq_len)
        return self.__dict__["_counted_attention_flops"][(batch_size, seq_len)]


def hf_model_class(model_type: str) -> type[HFModel]:
    """The MemoryModel subclass of `hf:model_type`; its params are the config's constructor params."""
    transformers = transformers_module()
    types = list(transformers.CONFIG_MAPPING.keys())
    if model_type not in types:
        close = difflib.get_close_matches(model_type, types, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(f'hf:{c}' for c in close)}?" if close else ""
        raise ConfigError(f"unknown Hugging Face model type {model_type!r}{hint} (transformers "
                          f"{transformers.__version__} knows {len(types)} types, e.g. hf:gpt2, hf:llama, hf:mamba)")
    config_cls = transformers.CONFIG_MAPPING[model_type]
    base = next((c for c in config_cls.__mro__ if c.__name__.lower() == "pretrainedconfig"), None)
    fixed = {"vocab_size", *WIDTH, *LAYERS, *(config_params(base) if base is not None else {})}
    P = inspect.Parameter
    signature = inspect.Signature([
        P("self", P.POSITIONAL_OR_KEYWORD), P("vocab_size", P.POSITIONAL_OR_KEYWORD),
        P("d_model", P.POSITIONAL_OR_KEYWORD, default=64), P("n_layers", P.POSITIONAL_OR_KEYWORD, default=2),
        P("mlp_ratio", P.KEYWORD_ONLY, default=4),
        *[P(name, P.KEYWORD_ONLY, default=default) for name, default in config_params(config_cls).items()
          if name not in fixed and name.isidentifier()],
    ])

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, mlp_ratio: int = 4, **overrides):
        HFModel.__init__(self, vocab_size, d_model, n_layers, mlp_ratio, **overrides)

    __init__.__signature__ = signature
    attention = any(n in config_params(config_cls) for n in HEADS)
    return type(f"HF_{model_type}", (HFModel,), {
        "__init__": __init__, "__module__": __name__, "model_type": model_type, "name": f"hf:{model_type}",
        "cost_class": "O(n)" if model_type in RECURRENT else ("O(n^2)" if attention else "unknown"),
        "has_reference_path": attention and model_type not in RECURRENT,
        "memory_mechanism": f"Hugging Face {config_cls.__name__.removesuffix('Config')} (transformers, random init)",
    })
