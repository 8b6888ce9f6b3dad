"""based: Taylor linear attention plus sliding-window attention (Arora et al., 2024).

Layers follow `mixer_pattern`, a comma list cycled over the layers ("linear,window" by default):

"linear": linear attention whose feature map is the 2nd-order Taylor expansion of exp, on q and k
projected to a small feature dimension d' per head (default 16), after a short convolution; H heads
(`n_heads`, default 1 as in Based: one head whose values are all D channels):

    q, k, v = split(ShortConv_k(W_in x))                      # (H, d'), (H, d'), (H, P) per token, P = D/H
    phi(x)  = [1, x / d'^(1/4), vec(x x^T) / (sqrt(2) sqrt(d'))]  # (1 + d' + d'^2,)
    phi(q) . phi(k) = 1 + s + s^2 / 2,  s = q . k / sqrt(d')   # > 0 for every s: a valid attention weight
    S_t = S_{t-1} + phi(k_t) [v_t, 1]^T                       # (1 + d' + d'^2, P + 1) per head
    o_t = S_t^T phi(q_t) -> o_t[:P] / o_t[P]                  # normalised, as in linear_attention
    y_t = W_out concat_heads(o_t)

computed by the shared scan (`models.scan.scan_chunked` fast, `scan_reference` as the reference).

"window": softmax attention over the last w tokens (default 64) with `window_heads` heads (default 4),
the `sliding_window` family's own mixer (`WindowAttention`, RoPE), imported, not copied: exact local
recall beside the global summary.

Worked example (d' = 1, one head): q = k = 1 gives s = 1 and phi(q).phi(k) = 1 + 1 + 1/2 = 2.5,
against exp(1) = 2.72; s = -1 gives 0.5 against 0.37.

Shapes: (B, T, D) -> (B, T, D).
State per linear layer: H * (1 + d' + d'^2) * (P + 1) floats (S, with its normaliser column)
+ (k - 1) * (2 H d' + D) (the conv's last inputs); per window layer 2 * min(T, w) * D. Constant in length.
FLOPs per linear layer (reference): 2*B*T*D*(2Hd' + D) (W_in) + 2*B*T*(2Hd' + D)*k (conv)
+ 4*B*T*H*(1 + d' + d'^2)*(P + 1) (the scan's update and read-out) + 2*B*T*D*D (W_out); per window
layer those of `sliding_window`. Cost: O(n*w).
"""

from __future__ import annotations

import torch
from torch import nn

from membench.checks import ConfigError
from membench.models import MemoryModel, Mixer, linear_flops, register_model
from membench.models.families.sliding_window import WindowAttention
from membench.models.layers import ShortConv, check_heads
from membench.models.scan import scan_chunked, scan_reference

EPS = 1e-6
MIXER_KINDS = ("linear", "window")


def taylor_features(x: torch.Tensor) -> torch.Tensor:
    """(..., d') -> (..., 1 + d' + d'^2): phi(q) . phi(k) = 1 + s + s^2/2 with s = q . k / sqrt(d')."""
    d = x.shape[-1]
    x1 = x / d**0.25  # (..., d')
    x2 = (x1.unsqueeze(-1) * x1.unsqueeze(-2)).flatten(-2) / 2**0.5  # (..., d'^2): (q.k)^2 / (2 d')
    return torch.cat([torch.ones_like(x[..., :1]), x1, x2], dim=-1)


class TaylorLinearAttention(Mixer):
    """Based's linear attention layer; see the module docstring."""

    def __init__(self, d_model: int, n_heads: int, feature_dim: int, short_conv: int, chunk_size: int) -> None:
        super().__init__()
        self.d_model, self.n_heads, self.feature_dim, self.chunk_size = d_model, n_heads, feature_dim, chunk_size
        self.d_head = d_model // n_heads
        self.channels = 2 * n_heads * feature_dim + d_model
        self.in_proj = nn.Linear(d_model, self.channels, bias=False)
        self.conv = ShortConv(self.channels, short_conv) if short_conv else None
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        batch, seq_len, _ = x.shape
        u = self.in_proj(x)  # (B, T, 2Hd' + D)
        if self.conv is not None:
            u = self.conv(u)
        qk, v = u.split([2 * self.n_heads * self.feature_dim, self.d_model], dim=-1)
        q, k = qk.view(batch, seq_len, 2, self.n_heads, self.feature_dim).unbind(2)  # (B, T, H, d') each
        v = v.view(batch, seq_len, self.n_heads, self.d_head)  # (B, T, H, P)
        v1 = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)  # (B, T, H, P + 1): [v, 1]
        fq, fk = taylor_features(q), taylor_features(k)  # (B, T, H, 1 + d' + d'^2)
        if self.path == "reference":
            o1 = scan_reference(fq, fk, v1)
        else:
            o1 = scan_chunked(fq, fk, v1, chunk_size=self.chunk_size)
        o = o1[..., :-1] / (o1[..., -1:] + EPS)  # (B, T, H, P)
        return self.out(o.reshape(batch, seq_len, self.d_model))

    @property
    def expanded_dim(self) -> int:
        return 1 + self.feature_dim + self.feature_dim**2

    def state_size(self, seq_len: int) -> int:
        conv = self.conv.state_size() if self.conv is not None else 0
        return self.n_heads * self.expanded_dim * (self.d_head + 1) + conv

    def flops(self, batch_size: int, seq_len: int) -> int:
        tokens = batch_size * seq_len
        conv = self.conv.flops(batch_size, seq_len) if self.conv is not None else 0
        return (
            linear_flops(tokens, self.d_model, self.channels)
            + conv
            + self.memory_flops(batch_size, seq_len)
            + linear_flops(tokens, self.d_model, self.d_model)
        )

    def memory_flops(self, batch_size: int, seq_len: int) -> int:
        # the scan: the update phi(k) [v, 1]^T and the read-out phi(q)^T S, per head and token
        return 2 * 2 * batch_size * seq_len * self.n_heads * self.expanded_dim * (self.d_head + 1)


def parse_based_pattern(pattern: str, n_layers: int) -> list[str]:
    """'linear,window' -> the kind of each of the n_layers layers, cycling."""
    kinds = [item.strip() for item in str(pattern).split(",") if item.strip()]
    if not kinds or any(k not in MIXER_KINDS for k in kinds):
        raise ConfigError(f"mixer_pattern must be a comma list of {', '.join(MIXER_KINDS)}, got {pattern!r}")
    return [kinds[i % len(kinds)] for i in range(n_layers)]


@register_model("based", order=80)
class BasedModel(MemoryModel):
    """Params: `mixer_pattern` (layer kinds), `n_heads` and `feature_dim` d' of the Taylor layers,
    `window_heads` and `window` w of the window layers, `short_conv` k.
    Defaults: the Based paper's 360M recipe, scaled down."""

    memory_mechanism = "Taylor-feature linear attention (global summary) + sliding-window softmax (local, exact)"
    cost_class = "O(n*w)"
    has_reference_path = True

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, *, n_heads: int = 1,
                 feature_dim: int = 16, window_heads: int = 4, window: int = 64, short_conv: int = 3,
                 mixer_pattern: str = "linear,window", chunk_size: int = 64, mlp_ratio: int = 4) -> None:
        kinds = parse_based_pattern(mixer_pattern, n_layers)
        check_heads(d_model, n_heads, rope=False)
        if "window" in kinds:
            check_heads(d_model, window_heads, rope=True)

        def make_mixer(i: int) -> Mixer:
            if kinds[i] == "window":
                return WindowAttention(d_model, window_heads, window)
            return TaylorLinearAttention(d_model, n_heads, feature_dim, short_conv, chunk_size)

        super().__init__(vocab_size, d_model, n_layers, make_mixer=make_mixer, mlp_ratio=mlp_ratio)
