"""log_linear: log-linear Mamba-2 (Guo, Yang, Goel, Xing, Dao & Kim, 2025), O(log T) states per head.

Mamba-2 (see `ssm`) keeps one decayed state per head for the whole prefix: a fixed memory. Attention keeps every
token: a KV cache. Log-linear attention sits between them: the prefix is split into Fenwick-tree buckets (one per
set bit of the position, the nearest tokens in the smallest), each bucket keeps its own Mamba-2 state, and the
query weighs the buckets with data-dependent lambdas (`models.scan_log_linear` has the recurrence, the bucket
rule and a worked example). Per head (H heads of width d = D / H), for every token t:

    q_t, k_t, x_t = SiLU(conv_K(W_q x, W_k x, W_v x))_t              # (d,) each; K = short_conv (0: no conv)
    dt_t = softplus(w_h . x_t + dt_bias_h),  log a_t = -exp(A_log_h) dt_t   # Mamba-2's step and decay (<= 0)
    v_t = dt_t x_t                                                   # Mamba-2's discretised input
    lambda_t^(l) = softplus(sum_{m >= l} W_m x_t + b_m)_h             # l = 0 .. LEVELS - 1, >= 0
    S_t^(l) = sum_{j in bucket l of t} exp(L_t - L_j) k_j v_j^T       # (d, d) per level
    o_t = RMSNorm(sum_l lambda_t^(l) S_t^(l)T q_t) * SiLU(W_g x_t)_h  # (d,)
    y_t = W_o concat_heads(o_t)                                      # (D,)

The lambdas of level l are a linear function of x_t, one per level as in the paper, written as the sum of the
increments W_m of every level m >= l: the same functions, but a level that a training length never reaches
(level 11 needs 1,025 tokens) still has weights that shorter sequences trained, so evaluating at 2x or 4x the
trained length reads its new top level with trained lambdas. LEVELS = 21 covers every length membench accepts
(2^20 tokens).

Worked example (state size, D = 64, H = 4, d = 16, K = 4): at T = 1024 a layer carries levels(1024) = 11 states of
16 x 16 per head, 4 * 11 * 256 = 11,264 floats, + 3 * 192 = 576 for the convolution; at T = 2048, 12 states:
12,288 + 576. It grows by H d^2 each time T doubles (a transformer's KV cache: 2 T D = 131,072 at T = 1024).

Shapes: (B, T, D) -> (B, T, D). Fast path: `models.scan_log_linear.log_linear_chunked` (chunks of `chunk_size`, a
power of two, and a loop over chunks); reference: `log_linear_reference`, one token at a time with one state per
level. Both share the projections, the convolution, the norm and the gate.
State per layer: H levels(T) d^2 floats + (K - 1) 3D (the convolution), levels(T) = bit_length(T - 1) + 1.
FLOPs per layer (forward, reference path): 2 BT D (3D + H + H LEVELS) (q, k, v, dt, lambdas) + 2 BT D^2 (gate) +
2 BT 3D K (conv) + 2 BT D^2 (output) + the memory: a write k v^T and a read of every level per head and token,
2 BT H d^2 (1 + levels(T)). Cost: O(n log n) (compute T log T, state log T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from membench.checks import LIMITS
from membench.models import MemoryModel, register_model
from membench.models.layers import ConvQKVMixer, check_heads, mamba_decay_params
from membench.models.scan import carry_dtype
from membench.models.scan_log_linear import check_chunk_size, levels, log_linear_chunked, log_linear_reference

LEVELS = levels(LIMITS["length"])  # 21: lambdas for every level of the longest sequence accepted


class LogLinearMamba2(ConvQKVMixer):
    """One log-linear Mamba-2 layer; see the module docstring."""

    def __init__(self, d_model: int, n_heads: int, short_conv: int, chunk_size: int) -> None:
        super().__init__(d_model, n_heads, short_conv, chunk_size)
        self.dt = nn.Linear(d_model, n_heads, bias=False)  # dt_raw
        self.A_log, self.dt_bias = mamba_decay_params(n_heads)
        self.level_increments = nn.Linear(d_model, LEVELS * n_heads)  # W_m x + b_m of every level m and head
        self.norm = nn.RMSNorm(self.d_head, eps=1e-6)
        self.gate_proj = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def level_weights(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> lambdas (B, T, H, LEVELS) >= 0
        increments = self.level_increments(x).view(*x.shape[:2], LEVELS, self.n_heads)  # (B, T, LEVELS, H)
        from_top = increments.flip(2).cumsum(2).flip(2)  # level l: the sum over m >= l
        return F.softplus(from_top).transpose(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        batch, seq_len, _ = x.shape
        q, k, v = self.heads_qkv(x, F.silu)  # (B, T, H, d) each
        dt = F.softplus(self.dt(x) + self.dt_bias)  # (B, T, H) > 0
        log_decay = -self.A_log.exp() * dt  # (B, T, H) <= 0
        v = v * dt.unsqueeze(-1)  # (B, T, H, d)
        weights = self.level_weights(x)  # (B, T, H, LEVELS)
        if self.path == "reference":
            o = log_linear_reference(q, k, v, log_decay, weights)
        else:
            o = log_linear_chunked(q, k, v, log_decay, weights, chunk_size=self.chunk_size)
        o = self.norm(o.to(carry_dtype(o))) * F.silu(self.gate_proj(x)).view_as(o)  # (B, T, H, d)
        return self.out(o.reshape(batch, seq_len, self.d_model))

    def state_size(self, seq_len: int) -> int:
        return self.n_heads * levels(seq_len) * self.d_head * self.d_head + self.conv_state_size()

    def projections(self) -> list[nn.Linear]:
        """Every dense layer applied to each token (for `flops`)."""
        return [self.qkv, self.dt, self.level_increments, self.gate_proj, self.out]

    def memory_flops(self, batch_size: int, seq_len: int) -> int:
        # the memory: write k v^T, then read every level's d x d state, per head and token
        return 2 * batch_size * seq_len * self.n_heads * self.d_head * self.d_head * (1 + levels(seq_len))


@register_model("log_linear", order=48)
class LogLinearModel(MemoryModel):
    """Params: `n_heads` H (each level's state d^2 = (D / H)^2), `short_conv` K (4, Mamba's; 0 = off) and
    `chunk_size` of the fast path (a power of two)."""

    memory_mechanism = "Mamba-2 states over Fenwick buckets of the prefix (log T per head), weighted per level"
    cost_class = "O(n log n)"
    has_reference_path = True

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, *, n_heads: int = 4,
                 short_conv: int = 4, chunk_size: int = 64, mlp_ratio: int = 4) -> None:
        check_heads(d_model, n_heads, rope=False)
        check_chunk_size(chunk_size)
        super().__init__(vocab_size, d_model, n_layers,
                         lambda i: LogLinearMamba2(d_model, n_heads, short_conv, chunk_size), mlp_ratio=mlp_ratio)
