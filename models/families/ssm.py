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

Negative eigenvalues (`allow_neg_eigval`, off by default; Grazzi et al., ICLR 2025, "Unlocking State-Tracking
in Linear RNNs Through Negative Eigenvalues"): the decay exp(dt A) in (0, 1] becomes a = 2 exp(dt A) - 1 in
(-1, 1], so a state can flip its sign at every token (parity: a = -1 on the 1 bits, 1 on the 0 bits). Both
paths carry a as log|a| and its sign (`signed_decay`); the chunked scan sums the logs and multiplies the signs.
Worked example: dt A = 0 gives a = 1 (keep), dt A = -log 2 gives a = 0 (forget), dt A -> -inf gives a -> -1.

Shapes: (B, T, D) -> (B, T, D). Fast path: chunked scan (loop over chunks of `chunk_size`, none over
tokens); reference: the per-token recurrence `models.scan.scan_reference`. Both share projections
and the convolution. K is the `short_conv` param (Mamba's default 4; 0 = no convolution, x, B, C =
split(SiLU(xBC_t))). State per layer: d_inner * N (the SSM states) + (K - 1) * (d_inner + 2N)
(the last K - 1 conv inputs; none when K = 0), constant in length. Cost: O(n).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from membench.checks import ConfigError
from membench.models import MemoryModel, Mixer, linear_flops, register_model
from membench.models.layers import mamba_decay_params, optional_short_conv
from membench.models.scan import scan_chunked, scan_reference


def signed_decay(log_decay: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dt A <= 0 (B, T, H) -> (log|a|, sign of a), each (B, T, H), for a = 2 exp(dt A) - 1 in (-1, 1].

    |a| - 1 is formed without cancellation, as 2 expm1(dt A) where a >= 0 and -2 exp(dt A) where a < 0 (both
    finite everywhere, so neither branch puts a NaN in the gradient), so a decay close to 1 (a long memory)
    keeps its precision in log1p. |a| is floored at the dtype's eps: a = 0 exactly (dt A = -log 2) would
    give log 0 = -inf and NaN differences in the chunked scan.

    >>> log_abs, sign = signed_decay(torch.tensor([0.0, -math.log(4), -10.0], dtype=torch.float64))
    >>> [round(a, 5) for a in (sign * log_abs.exp()).tolist()]  # 2 exp(dt A) - 1
    [1.0, -0.5, -0.99991]
    """
    negative = log_decay < -math.log(2)  # (B, T, H): a < 0
    shift = torch.where(negative, -2 * log_decay.exp(), 2 * torch.expm1(log_decay))  # (B, T, H): |a| - 1 in [-1, 0]
    eps = torch.finfo(shift.dtype).eps
    sign = 1.0 - 2.0 * negative.to(shift.dtype)  # (B, T, H)
    return torch.log1p(shift.clamp(min=eps - 1)), sign


class SelectiveSSM(Mixer):
    """One Mamba-2-style selective SSM layer; see the module docstring."""

    def __init__(
        self, d_model: int, d_state: int, expand: int, n_heads: int, short_conv: int, chunk_size: int,
        allow_neg_eigval: bool = False,
    ) -> None:
        super().__init__()
        self.d_model, self.d_state, self.n_heads, self.chunk_size = d_model, d_state, n_heads, chunk_size
        self.allow_neg_eigval = allow_neg_eigval
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
        sign = None  # (B, T, H) of +-1 with allow_neg_eigval: a = sign exp(log_decay)
        if self.allow_neg_eigval:
            log_decay, sign = signed_decay(log_decay)
        q, k, v = c.unsqueeze(2), b.unsqueeze(2), x * dt.unsqueeze(-1)  # (B, T, 1, N), (B, T, 1, N), (B, T, H, P)
        if self.path == "reference":
            y = scan_reference(q, k, v, log_decay, sign)
        else:
            y = scan_chunked(q, k, v, log_decay, chunk_size=self.chunk_size, decay_sign=sign)
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
    """Params: `d_state` N, `expand` (d_inner = expand * D), `n_heads`, `short_conv` K (4, Mamba's),
    `chunk_size` and `allow_neg_eigval` (a = 2 exp(dt A) - 1 in (-1, 1]; off by default); no MLP by default
    (`mlp_ratio` 0), as Mamba's blocks have none."""

    memory_mechanism = "selective state-space scan: input-dependent decay and write per head (Mamba-2 style)"
    cost_class = "O(n)"
    has_reference_path = True

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, *, d_state: int = 16,
                 expand: int = 2, n_heads: int = 4, short_conv: int = 4, chunk_size: int = 64,
                 mlp_ratio: int = 0, allow_neg_eigval: bool = False) -> None:
        if (expand * d_model) % n_heads:
            raise ConfigError(f"expand * d_model ({expand * d_model}) must be a multiple of n_heads ({n_heads})")
        scan = functools.partial(SelectiveSSM, d_model, d_state, expand, n_heads, short_conv, chunk_size,
                                 allow_neg_eigval)
        super().__init__(vocab_size, d_model, n_layers, lambda i: scan(), mlp_ratio=mlp_ratio)
