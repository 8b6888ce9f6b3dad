"""transformer: a causal pre-norm decoder; its memory is the whole past, read by attention.

Each attention layer, with H heads of width hd = D/H and rotary positions (RoPE) on q and k:

    q, k, v = split(W_qkv x)                                     # (B, H, T, hd) each
    a_t     = sum_{s <= t} softmax_s(q_t . k_s / sqrt(hd)) v_s   # causal: nothing after t is read
    y       = W_o merge(a)                                       # (B, T, D)

The fast path is scaled_dot_product_attention(is_causal=True) (flash attention on GPU); the reference
path computes q k^T, the causal mask, the softmax and the product with v explicitly.

`mixer_pattern` is a comma list cycled over the layers, each item "attention" or "conv". A "conv"
layer is a gated short convolution (Zoology's BaseConv with a short filter):

    y = ShortConv_k(x) * (W x + b)  [+ x if conv_residual]       # depthwise causal, k = conv_kernel (4)

so mixer_pattern="conv,attention", mlp_ratio=0, position="none", conv_residual=True is the BaseConv +
attention hybrid (Zoology's uses conv_kernel=3, n_heads=1; its BaseConv adds its own input back inside
the block's residual branch, which conv_residual=True reproduces).

Shapes: tokens (B, T) int64 -> logits (B, T, V).
State size: the KV cache, 2*T*D floats per attention layer (plus (conv_kernel-1)*D per conv layer).
FLOPs per attention layer: 2*B*T*D*3D (qkv) + 2*B*T*D*D (output) + 4*B*T*T*D (the full square
q k^T and weights @ v, as the reference computes it; `attention_flops` reports this part).
Cost: O(n^2).
"""

from __future__ import annotations

import torch
from torch import nn

from membench.checks import ConfigError, check_choice
from membench.models import MemoryModel, Mixer, linear_flops, register_model
from membench.models.layers import SelfAttention, ShortConv, check_heads

POSITIONS = ("rope", "none")
MIXER_KINDS = ("attention", "conv")


class GatedConv(Mixer):
    """BaseConv: y = ShortConv(x) * (W x + b) [+ x], (B, T, D) -> (B, T, D). Its paths are the convolution's."""

    def __init__(self, d_model: int, kernel_size: int = 4, residual: bool = False) -> None:
        super().__init__()
        self.d_model, self.residual = d_model, residual
        self.conv = ShortConv(d_model, kernel_size)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        y = self.conv(x) * self.proj(x)
        return y + x if self.residual else y

    def state_size(self, seq_len: int) -> int:
        return self.conv.state_size()

    def flops(self, batch_size: int, seq_len: int) -> int:
        return self.conv.flops(batch_size, seq_len) + linear_flops(batch_size * seq_len, self.d_model, self.d_model)


def parse_mixer_pattern(pattern: str, n_layers: int) -> list[str]:
    """'conv,attention' -> the kind of each of the n_layers layers, cycling; at least one attention."""
    kinds = [item.strip() for item in str(pattern).split(",") if item.strip()]
    bad = [k for k in kinds if k not in MIXER_KINDS]
    if not kinds or bad:
        raise ConfigError(
            f"mixer_pattern must be a comma list of {', '.join(MIXER_KINDS)}, got {pattern!r}"
        )
    layers = [kinds[i % len(kinds)] for i in range(n_layers)]
    if "attention" not in layers:
        raise ConfigError(f"mixer_pattern {pattern!r} gives no attention layer in {n_layers} layers")
    return layers


@register_model("transformer", order=20)
class TransformerModel(MemoryModel):
    """Params: `n_heads`, `position` ("rope" or "none"), `mixer_pattern` (attention and gated-conv
    layers), and the conv layers' `conv_kernel` and `conv_residual`."""

    memory_mechanism = "KV cache of every past token, read by causal softmax attention (RoPE)"
    cost_class = "O(n^2)"
    has_reference_path = True
    attention_class: type = SelfAttention  # fox keeps these params and swaps the attention layer

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, *, n_heads: int = 4,
                 mlp_ratio: int = 4, position: str = "rope", mixer_pattern: str = "attention", conv_kernel: int = 4,
                 conv_residual: bool = False) -> None:
        check_choice("position", position, POSITIONS)
        check_heads(d_model, n_heads, position == "rope")
        kinds = parse_mixer_pattern(mixer_pattern, n_layers)

        def make_mixer(i: int) -> Mixer:
            if kinds[i] == "conv":
                return GatedConv(d_model, conv_kernel, conv_residual)
            return self.attention_class(d_model, n_heads, rope=position == "rope")

        super().__init__(vocab_size, d_model, n_layers, make_mixer=make_mixer, mlp_ratio=mlp_ratio)
