"""ssm: a Mamba-2-style selective state-space layer (SSD: scalar decay per head, i.e. A = -a_h I).

With d_inner = expand * d_model split into n_heads heads of P = d_inner / n_heads channels, and a
state of d_state = N per channel:

    z, xBC, dt_raw = W_in u_t                          # (d_inner,), (d_inner + 2N,), (H,)
    x, B, C = split(SiLU(conv_K(xBC)_t))               # short causal depthwise conv over time, K taps
    dt_h = softplus(dt_raw_h + dt_bias_h)              # input-dependent step, > 0
    A_h = -exp(A_log_h) < 0                            # one learned decay rate per head
    S_h,t = exp(dt_h A_h) S_h,t-1 + B_t (dt_h x_h,t)^T # (N, P) per head: selective (input-dependent) update
    y_h,t = S_h,t^T C_t + D_h x_h,t                    # read-out plus skip
    out_t = W_out (y_t * SiLU(z_t))                    # gated, projected back to d_model

A scalar decay per head is a diagonal A (all N state dims of a head share it), which is what makes
the scan a masked matmul inside a chunk (`models.scan.scan_chunked`, with q = C, k = B shared by
all heads, v = dt x, log-decay dt A <= 0). Stability: decays are summed as logs within a chunk and
only causal differences are exponentiated, so every factor lies in [0, 1].

Shapes: (B, T, D) -> (B, T, D). Fast path: chunked scan (loop over chunks of `chunk_size`, none over
tokens); reference: the per-token recurrence `models.scan.scan_reference`. Both share projections
and the convolution. K is the `short_conv` param (Mamba's default 4; 0 = no convolution, x, B, C =
split(SiLU(xBC_t))). State per layer: d_inner * N (the SSM states) + (K - 1) * (d_inner + 2N)
(the last K - 1 conv inputs; none when K = 0), constant in length. Cost: O(n).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from membench.checks import ConfigError
from membench.models import MemoryModel, Mixer, linear_flops, register_model
from membench.models.layers import mamba_decay_params, optional_short_conv
from membench.models.scan import scan_chunked, scan_reference


class SelectiveSSM(Mixer):
    """One Mamba-2-style selective SSM layer; see the module docstring."""

    def __init__(
        self, d_model: int, d_state: int, expand: int, n_heads: int, short_conv: int, chunk_size: int
    ) -> None:
        super().__init__()
        self.d_model, self.d_state, self.n_heads, self.chunk_size = d_model, d_state, n_heads, chunk_size
        self.d_inner = expand * d_model
        self.head_dim = self.d_inner // n_heads
        self.conv_channels = self.d_inner + 2 * d_state
        self.in_proj = nn.Linear(d_model, self.d_inner + self.conv_channels + n_heads, bias=False)
        self.conv = optional_short_conv(self.conv_channels, short_conv)  # over x, B and C together, or None
        self.A_log, self.dt_bias = mamba_decay_params(n_heads)  # Mamba's initialisation
        self.D = nn.Parameter(torch.ones(n_heads))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        batch, seq_len, _ = u.shape
        z, xbc, dt_raw = self.in_proj(u).split([self.d_inner, self.conv_channels, self.n_heads], dim=-1)
        xbc = xbc if self.conv is None else self.conv(xbc)
        x, b, c = F.silu(xbc).split([self.d_inner, self.d_state, self.d_state], dim=-1)
        x = x.view(batch, seq_len, self.n_heads, self.head_dim)  # (B, T, H, P)
        dt = F.softplus(dt_raw + self.dt_bias)  # (B, T, H)
        log_decay = -self.A_log.exp() * dt  # (B, T, H): dt A <= 0
        q, k, v = c.unsqueeze(2), b.unsqueeze(2), x * dt.unsqueeze(-1)  # (B, T, 1, N), (B, T, 1, N), (B, T, H, P)
        if self.path == "reference":
            y = scan_reference(q, k, v, log_decay)
        else:
            y = scan_chunked(q, k, v, log_decay, chunk_size=self.chunk_size)
        y = y + self.D[:, None] * x  # (B, T, H, P)
        return self.out_proj(y.reshape(batch, seq_len, self.d_inner) * F.silu(z))

    def state_size(self, seq_len: int) -> int:
        return self.d_inner * self.d_state + (0 if self.conv is None else self.conv.state_size())

    def flops(self, batch_size: int, seq_len: int) -> int:
        tokens = batch_size * seq_len
        return (
            linear_flops(tokens, self.d_model, self.in_proj.out_features)
            + (0 if self.conv is None else self.conv.flops(batch_size, seq_len))
            + self.memory_flops(batch_size, seq_len)
            + linear_flops(tokens, self.d_inner, self.d_model)
        )

    def memory_flops(self, batch_size: int, seq_len: int) -> int:
        # the scan: the update B (dt x)^T and the read-out S^T C, per head and token
        return 2 * 2 * batch_size * seq_len * self.d_inner * self.d_state


@register_model("ssm", order=45)
class SSMModel(MemoryModel):
    """Params: `d_state` N, `expand` (d_inner = expand * D), `n_heads`, `short_conv` K (4, Mamba's) and
    `chunk_size`; no MLP by default (`mlp_ratio` 0), as Mamba's blocks have none."""

    memory_mechanism = "selective state-space scan: input-dependent decay and write per head (Mamba-2 style)"
    cost_class = "O(n)"
    has_reference_path = True

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, *, d_state: int = 16,
                 expand: int = 2, n_heads: int = 4, short_conv: int = 4, chunk_size: int = 64,
                 mlp_ratio: int = 0) -> None:
        if (expand * d_model) % n_heads:
            raise ConfigError(f"expand * d_model ({expand * d_model}) must be a multiple of n_heads ({n_heads})")
        scan = functools.partial(SelectiveSSM, d_model, d_state, expand, n_heads, short_conv, chunk_size)
        super().__init__(vocab_size, d_model, n_layers, lambda i: scan(), mlp_ratio=mlp_ratio)
