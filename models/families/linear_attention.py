"""linear_attention: causal linear attention (Katharopoulos et al., 2020), a fixed-size matrix memory.

Per head (d = d_model / n_heads), with the positive feature map phi(x) = elu(x) + 1:

    q_t, k_t, v_t = conv_K(W_q x, W_k x, W_v x)_t      # (d,) each; conv_K: the optional short convolution
    S_t = S_{t-1} + phi(k_t) v_t^T                     # (d, d)   the memory
    z_t = z_{t-1} + phi(k_t)                           # (d,)     the normaliser
    o_t = S_t^T phi(q_t) / (z_t . phi(q_t) + eps)      # (d,)
    y_t = W_o concat_heads(o_t)

The normaliser is kept (as in the paper): with phi > 0 it makes o_t a convex combination of the
values seen so far, o_t = sum_{j<=t} w_tj v_j with w_tj = phi(q_t).phi(k_j) / sum_j' phi(q_t).phi(k_j'),
so the output stays on the scale of one value however long the sequence grows (without it, S_t
and o_t grow linearly in t and the next layer sees inputs of ever larger scale). It is computed by
the same scan as S, by appending a constant 1 to every value: [S_t | z_t] = sum_j phi(k_j) [v_j, 1]^T.

`short_conv` = K > 0 puts a depthwise causal convolution of K taps (`models.layers.ShortConv`) on q, k
and v before the feature map, as Mamba, DeltaNet and GLA do; the default 0 is the plain layer above.

Shapes: (B, T, D) -> (B, T, D). Fast path: `models.scan.scan_chunked` (masked quadratic inside
chunks of `chunk_size`, state carried by matmuls between chunks); reference: the per-token
recurrence `models.scan.scan_reference`.
State per layer: n_heads * d * (d + 1) floats (S and z), plus (K - 1) * 3D for the convolution's last
K - 1 inputs when it is on; constant in length. Cost: O(n).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from membench.models import MemoryModel, register_model
from membench.models.layers import ConvQKVMixer, check_heads
from membench.models.scan import scan_chunked, scan_reference

EPS = 1e-6


def feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1 > 0, element-wise."""
    return F.elu(x) + 1.0


class LinearAttention(ConvQKVMixer):
    """Multi-head causal linear attention with the normaliser; see the module docstring."""

    def __init__(self, d_model: int, n_heads: int, chunk_size: int, short_conv: int = 0) -> None:
        super().__init__(d_model, n_heads, short_conv, chunk_size)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        batch, seq_len, _ = x.shape
        q, k, v = self.heads_qkv(x)  # (B, T, H, d) each
        v1 = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)  # (B, T, H, d + 1): [v, 1]
        if self.path == "reference":
            o1 = scan_reference(feature_map(q), feature_map(k), v1)
        else:
            o1 = scan_chunked(feature_map(q), feature_map(k), v1, chunk_size=self.chunk_size)
        o = o1[..., :-1] / (o1[..., -1:] + EPS)  # (B, T, H, d): S^T phi(q) / z . phi(q)
        return self.out(o.reshape(batch, seq_len, self.d_model))

    def state_size(self, seq_len: int) -> int:
        return self.n_heads * self.d_head * (self.d_head + 1) + self.conv_state_size()

    def projections(self) -> list[nn.Linear]:
        """Every dense layer applied to each token (for `flops`)."""
        return [self.qkv, self.out]

    def memory_flops(self, batch_size: int, seq_len: int) -> int:
        # the recurrence: the update phi(k) [v, 1]^T and the read-out phi(q)^T [S | z], per head and token
        return 2 * 2 * batch_size * seq_len * self.n_heads * self.d_head * (self.d_head + 1)


@register_model("linear_attention", order=40)
class LinearAttentionModel(MemoryModel):
    """Params: `n_heads` H (head width D / H), `chunk_size` of the fast scan, `short_conv` K
    (off by default, so results from before the option are unchanged)."""

    memory_mechanism = "sum of key-value outer products per head, normalised (elu+1 feature map)"
    cost_class = "O(n)"
    has_reference_path = True

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, *, n_heads: int = 4,
                 chunk_size: int = 64, short_conv: int = 0, mlp_ratio: int = 4) -> None:
        check_heads(d_model, n_heads, rope=False)
        attention = functools.partial(LinearAttention, d_model, n_heads, chunk_size, short_conv)
        super().__init__(vocab_size, d_model, n_layers, lambda i: attention(), mlp_ratio=mlp_ratio)
