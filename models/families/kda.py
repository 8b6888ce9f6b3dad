"""kda: Kimi Delta Attention (Kimi Team, "Kimi Linear", 2025), the delta rule with a decay per key channel.

Gated DeltaNet (see `gated_deltanet`) decays a head's whole memory by one scalar a_t; KDA gives every key
channel (every row of the memory) its own rate alpha_t, as GLA does for linear attention, so a head can keep
some features for long and let others go at once. Per head (H heads of width d = D / H), for every token t:

    q_t, k_t, v_t = SiLU(conv_K(W_q x, W_k x, W_v x))_t                 # (d,) each; K = short_conv (0: no conv)
    q_t, k_t = q_t / |q_t|, k_t / |k_t|                                 # L2-normalised
    beta_t = sigmoid(w_h . x_t)     (2 sigmoid with allow_neg_eigval)    # writing strength in (0, 1) or (0, 2)
    log alpha_t = -5 (1 - exp(-A dt_t / 5)),  dt_t = softplus(W_up W_down x_t + dt_bias)   # (d,) in (-5, 0]
    S_t = (I - beta_t k_t k_t^T) Diag(alpha_t) S_{t-1} + beta_t k_t v_t^T   # (d, d): the memory, S_0 = 0
    o_t = RMSNorm(S_t^T q_t) * sigmoid(G_up G_down x_t)_h               # (d,), gated read-out
    y_t = W_o concat_heads(o_t)                                         # (D,)

The decay and the output gate are low-rank (D -> d -> D), as in the paper. The decay is Mamba-2's, -A dt with
A = exp(A_log) and dt_bias per channel, saturated softly at -5 a token (alpha >= e^-5; -A dt to first order):
that floor lets the chunked form factor the decay inside chunks of up to 16 tokens without overflow
(models.scan_vector_decay.MIN_LOG_DECAY, MAX_CHUNK), as fla's bounded ("safe") KDA gate does with a sigmoid.
With `allow_neg_eigval` (Grazzi et al. 2025) beta lies in (0, 2), so I - beta k k^T has the eigenvalue
1 - beta in (-1, 1) along k: the memory can flip a sign.

Worked example (d = 2, one head, beta = 1, alpha = (1/2, 1) at every step): write v = 1 under k = e1, then
v = 5 under e2, then nothing (beta = 0). The memory's rows are (1, 0), (1/2, 5), (1/4, 5): q = e1 reads
1, 1/2, 1/4 (that channel forgets by halves) while q = e2 reads 0, 5, 5 (this one keeps).

Shapes: (B, T, D) -> (B, T, D). Fast path: `models.scan_vector_decay.vector_decay_delta_chunked` (the UT
transform inside chunks of `chunk_size` <= 16, the decays folded into keys and queries, a backward pass
written by hand); reference:
`vector_decay_delta_reference`, one token at a time. Both share the projections, the convolution, the
norm and the gate. State per layer: H d^2 = D^2 / H floats (the memories S) + (K - 1) * 3D (the
convolution's last K - 1 inputs), constant in length: with D = 64, H = 4, K = 4: 1,024 + 576 = 1,600.
FLOPs per layer (forward, reference path): 2 BT D (3D + H) (q, k, v, beta) + 2 BT 4 D d (the decay's and the
gate's low-rank pairs, D -> d -> D) + 2 BT 3D K (conv) + 2 BT D^2 (output) + the delta rule, three d x d matrix-vector
products per head and token (recall, write, read): 6 BT H d^2 = 6 BT D d. Cost: O(n).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from membench.checks import check_int
from membench.models import MemoryModel, register_model
from membench.models.layers import ConvQKVMixer, check_heads, delta_rule_inputs, mamba_decay_params
from membench.models.scan import carry_dtype
from membench.models.scan_vector_decay import (
    MAX_CHUNK,
    MIN_LOG_DECAY,
    vector_decay_delta_chunked,
    vector_decay_delta_reference,
)


class KimiDeltaAttention(ConvQKVMixer):
    """One KDA layer; see the module docstring."""

    # recall S^T k, write k u^T, read S^T q: d x d multiply-adds each, per head and token (the decay is element-wise)
    memory_products = 3

    def __init__(self, d_model: int, n_heads: int, short_conv: int, chunk_size: int, allow_neg_eigval: bool) -> None:
        super().__init__(d_model, n_heads, short_conv, chunk_size)
        self.allow_neg_eigval = allow_neg_eigval
        self.beta = nn.Linear(d_model, n_heads, bias=False)
        self.decay_down = nn.Linear(d_model, self.d_head, bias=False)  # W_down: rank d
        self.decay_up = nn.Linear(self.d_head, d_model, bias=False)  # W_up
        self.A_log, self.dt_bias = mamba_decay_params(d_model)  # one per key channel
        self.gate_down = nn.Linear(d_model, self.d_head, bias=False)
        self.gate_up = nn.Linear(self.d_head, d_model, bias=False)
        self.norm = nn.RMSNorm(self.d_head, eps=1e-6)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        batch, seq_len, _ = x.shape
        q, k, v, beta = delta_rule_inputs(self, x)  # (B, T, H, d) each, beta (B, T, H)
        log_decay = self.log_decay(x)  # (B, T, H, d)
        if self.path == "reference":
            o = vector_decay_delta_reference(q, k, v, beta, log_decay)
        else:
            o = vector_decay_delta_chunked(q, k, v, beta, log_decay, chunk_size=self.chunk_size)
        gate = torch.sigmoid(self.gate_up(self.gate_down(x))).view(batch, seq_len, self.n_heads, self.d_head)
        o = self.norm(o.to(carry_dtype(o))) * gate  # (B, T, H, d); the norm in float32 at least
        return self.out(o.reshape(batch, seq_len, self.d_model))

    def log_decay(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> log alpha (B, T, H, d) in (MIN_LOG_DECAY, 0]: Mamba-2's -A dt, saturated softly at the floor."""
        dt = F.softplus(self.decay_up(self.decay_down(x)) + self.dt_bias)  # (B, T, D)
        log_decay = MIN_LOG_DECAY * -torch.expm1(self.A_log.exp() * dt / MIN_LOG_DECAY)  # -5 (1 - exp(-A dt / 5))
        return log_decay.view(*x.shape[:2], self.n_heads, self.d_head)

    def projections(self) -> list[nn.Linear]:
        """Every dense layer applied to each token (for `flops`)."""
        return [self.qkv, self.beta, self.decay_down, self.decay_up, self.gate_down, self.gate_up, self.out]


@register_model("kda", order=48)
class KimiDeltaAttentionModel(MemoryModel):
    """Params: `n_heads` H (memory D^2 / H), `short_conv` K (4; 0 = off), `chunk_size` of the fast path (16:
    the most the decay floor allows, and the fastest on a CPU) and `allow_neg_eigval` (beta in (0, 2) instead
    of (0, 1))."""

    memory_mechanism = "delta-rule matrix memory per head with a decay per key channel (Kimi Delta Attention)"
    cost_class = "O(n)"
    has_reference_path = True

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, *, n_heads: int = 4,
                 short_conv: int = 4, chunk_size: int = 16, allow_neg_eigval: bool = False,
                 mlp_ratio: int = 4) -> None:
        check_heads(d_model, n_heads, rope=False)
        check_int("chunk_size", chunk_size, maximum=MAX_CHUNK)
        super().__init__(vocab_size, d_model, n_layers,
                         lambda i: KimiDeltaAttention(d_model, n_heads, short_conv, chunk_size, allow_neg_eigval),
                         mlp_ratio=mlp_ratio)
