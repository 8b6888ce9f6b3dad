"""gated_deltaproduct: Gated DeltaProduct (Siems et al., "DeltaProduct", 2025), n_h delta-rule steps per token.

DeltaNet's transition I - beta k k^T is one generalised Householder reflection; a product of n_h of them can
rotate the memory (a permutation, a reflection), which state tracking needs. DeltaProduct takes n_h =
`n_householder` delta-rule steps per token, each with its own key, value and beta, then reads once; the
gated form decays the memory first, as Gated DeltaNet does. Per head (H heads of width d = D / H):

    q_t, k_t,j, v_t,j = SiLU(conv_K(W_q x, W_k,j x, W_v,j x))_t     # (d,) each, j = 1..n_h
    q_t, k_t,j = q_t / |q_t|, k_t,j / |k_t,j|                       # L2-normalised
    beta_t,j = 2 sigmoid(w_h,j . x_t)      (sigmoid without allow_neg_eigval)
    log a_t = -exp(A_log_h) softplus(w'_h . x_t + dt_bias_h)        # Mamba-2's decay, as in gated_deltanet
    S_t,0 = a_t S_{t-1};   S_t,j = (I - beta_t,j k_t,j k_t,j^T) S_t,j-1 + beta_t,j k_t,j v_t,j^T
    S_t = S_t,n_h = a_t H_t S_{t-1} + ...,   H_t = prod_j (I - beta_t,j k_t,j k_t,j^T)   # (d, d)
    o_t = RMSNorm(S_t^T q_t) * SiLU(W_g x_t)_h;   y_t = W_o concat_heads(o_t)

beta in (0, 2) (`allow_neg_eigval`, on by default as in the paper) gives each factor the eigenvalue 1 - beta in
(-1, 1) along its key; n_householder = 1 without it is gated_deltanet.

Both paths run the delta rule over the interleaved sequence of T n_h steps (token t's steps j = 1..n_h in a
row, the decay on the first, the query on the last, zero queries elsewhere), and keep every n_h-th output.
Worked example (n_h = 2, T = 2): steps (k_1,1 v_1,1 a_1) (k_1,2 v_1,2 q_1) (k_2,1 v_2,1 a_2) (k_2,2 v_2,2 q_2),
a (B, 4, H, d) sequence; outputs 2 and 4 are y_1 and y_2. With d = 1, k = q = 1, beta = 2 and no decay each
step is S -> -S + 2v: values 3 then 5 give S_1 = -(2 * 3) + 2 * 5 = 4.

Shapes: (B, T, D) -> (B, T, D). Fast path: `models.scan.delta_rule_chunked` over the interleaved steps
(`chunk_size` of them per chunk); reference: `models.scan.delta_rule_reference`, one step at a time.
State per layer: H d^2 = D^2 / H floats + (K - 1)(1 + 2 n_h) D (the convolution's last K - 1 inputs of q,
the n_h keys and the n_h values), constant in length: with D = 64, H = 4, K = 4, n_h = 2: 1,024 + 960 = 1,984.
FLOPs per layer (forward, reference path): 2 BT D ((1 + 2 n_h) D + n_h H + H) (q, keys, values, betas, decay)
+ 2 BT D^2 (gate) + 2 BT (1 + 2 n_h) D K (conv) + 2 BT D^2 (output) + the delta rule at every step (recall,
write and read, the read of a zero query included): 6 BT n_h H d^2. Cost: O(n).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from membench.models import MemoryModel, Mixer, linear_flops, register_model
from membench.models.layers import check_heads, mamba_decay_params, optional_short_conv, writing_strength
from membench.models.scan import carry_dtype, delta_rule_chunked, delta_rule_reference


class GatedDeltaProduct(Mixer):
    """One Gated DeltaProduct layer; see the module docstring. Its layers are named as gated_deltanet's (with
    n_householder = 1 the two hold the same weights)."""

    def __init__(self, d_model: int, n_heads: int, short_conv: int, chunk_size: int, n_householder: int,
                 allow_neg_eigval: bool) -> None:
        super().__init__()
        self.d_model, self.n_heads, self.chunk_size = d_model, n_heads, chunk_size
        self.d_head, self.steps, self.allow_neg_eigval = d_model // n_heads, n_householder, allow_neg_eigval
        self.qkv = nn.Linear(d_model, (1 + 2 * n_householder) * d_model, bias=False)  # q, then keys, then values
        self.conv = optional_short_conv((1 + 2 * n_householder) * d_model, short_conv)
        self.beta = nn.Linear(d_model, n_householder * n_heads, bias=False)
        self.norm = nn.RMSNorm(self.d_head, eps=1e-6)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.dt = nn.Linear(d_model, n_heads, bias=False)
        self.A_log, self.dt_bias = mamba_decay_params(n_heads)
        self.gate_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        batch, seq_len, _ = x.shape
        n_h, heads, d = self.steps, self.n_heads, self.d_head
        qkv = self.qkv(x)  # (B, T, (1 + 2 n_h) D)
        qkv = F.silu(qkv if self.conv is None else self.conv(qkv))
        q, k, v = qkv.view(batch, seq_len, 1 + 2 * n_h, heads, d).split([1, n_h, n_h], dim=2)  # (B, T, 1|n_h, H, d)
        q, k = F.normalize(q, dim=-1, eps=1e-6), F.normalize(k, dim=-1, eps=1e-6)
        beta = writing_strength(self.beta(x), self.allow_neg_eigval).view(batch, seq_len, n_h, heads)
        log_decay = -self.A_log.exp() * F.softplus(self.dt(x) + self.dt_bias)  # (B, T, H), <= 0
        # the interleaved steps (B, T n_h, ...): the query on each token's last step, its decay on the first
        q = F.pad(q, (0, 0, 0, 0, n_h - 1, 0))  # (B, T, n_h, H, d)
        log_decay = F.pad(log_decay.unsqueeze(2), (0, 0, 0, n_h - 1))  # (B, T, n_h, H)
        steps = [t.flatten(1, 2) for t in (q, k, v, beta, log_decay)]  # (B, T n_h, H, d / d / d / - / -)
        if self.path == "reference":
            o = delta_rule_reference(*steps)
        else:
            o = delta_rule_chunked(*steps, chunk_size=self.chunk_size)
        o = o.view(batch, seq_len, n_h, heads, d)[:, :, -1]  # (B, T, H, d): the read after the last step
        o = self.norm(o.to(carry_dtype(o))) * F.silu(self.gate_proj(x)).view_as(o)
        return self.out(o.reshape(batch, seq_len, self.d_model))

    def projections(self) -> list[nn.Linear]:
        """Every dense layer applied to each token (for `flops`)."""
        return [self.qkv, self.beta, self.out, self.dt, self.gate_proj]

    def state_size(self, seq_len: int) -> int:
        conv = 0 if self.conv is None else self.conv.state_size()
        return self.n_heads * self.d_head * self.d_head + conv

    def flops(self, batch_size: int, seq_len: int) -> int:
        tokens = batch_size * seq_len
        dense = sum(linear_flops(tokens, layer.in_features, layer.out_features) for layer in self.projections())
        conv = 0 if self.conv is None else self.conv.flops(batch_size, seq_len)
        return dense + conv + self.memory_flops(batch_size, seq_len)

    def memory_flops(self, batch_size: int, seq_len: int) -> int:
        # recall, write and read at each of the n_h steps a token: d x d multiply-adds each, per head
        return 3 * 2 * batch_size * seq_len * self.steps * self.n_heads * self.d_head * self.d_head


@register_model("gated_deltaproduct", order=49)
class GatedDeltaProductModel(MemoryModel):
    """Params: `n_heads` H (memory D^2 / H), `n_householder` n_h (delta steps a token, 2 as in the paper's
    main models), `allow_neg_eigval` (beta in (0, 2), on as in the paper), `short_conv` K (4; 0 = off) and
    `chunk_size` of the fast path, counted in steps."""

    memory_mechanism = "delta-rule matrix memory per head, n_h Householder-like steps a token, decayed (DeltaProduct)"
    cost_class = "O(n)"
    has_reference_path = True

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, *, n_heads: int = 4,
                 n_householder: int = 2, allow_neg_eigval: bool = True, short_conv: int = 4, chunk_size: int = 32,
                 mlp_ratio: int = 4) -> None:
        check_heads(d_model, n_heads, rope=False)
        super().__init__(vocab_size, d_model, n_layers,
                         lambda i: GatedDeltaProduct(d_model, n_heads, short_conv, chunk_size, n_householder,
                                                     allow_neg_eigval),
                         mlp_ratio=mlp_ratio)
