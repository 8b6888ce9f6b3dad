"""fox: the Forgetting Transformer (Lin, Nikishin, He & Courville, ICLR 2025), softmax attention with a forget gate.

The transformer's decoder (see `transformer`: its params, blocks and conv layers) with every attention layer
swapped for Forgetting Attention. Each head h has a scalar forget gate per token, and the attention scores
are biased by the sum of the log forget gates between key and query:

    q, k, v = split(W_qkv x)                                    # (B, H, T, hd) each
    f_t     = sigmoid(w_h . x_t + b_h)                          # (B, H, T), in (0, 1): how much of the past t keeps
    D_ij    = sum_{l = j+1}^{i} log f_l = c_i - c_j             # c_i = log f_1 + ... + log f_i, so D_ii = 0
    a_i     = sum_{j <= i} softmax_j(q_i . k_j / sqrt(hd) + D_ij) v_j
    y       = W_o merge(a)                                      # (B, T, D)

D_ij <= 0 falls as the key recedes, so a head forgets its distant past at a data-dependent rate; with every
f = 1 it is the transformer's attention. FoX needs no position embedding (`position` defaults to "none" here;
"rope" adds the transformer's rotary positions to q and k as well).

Worked example (one head, T = 3, q . k = 0 everywhere, f = 1/2 at every step): D_2j = (log 1/2) (2 - j), so the
last query weighs its keys 1/4 : 1/2 : 1, i.e. 1/7, 2/7, 4/7 (the transformer: 1/3 each).

Shapes: tokens (B, T) -> logits (B, T, V). Fast path: scaled_dot_product_attention with the bias (and -inf above
the diagonal) as its float mask; reference: the scores, bias, causal mask, softmax and product with v spelt out.
The cumulative log gates c are taken in float32 at least.
State size per attention layer: the KV cache and each key's cumulative log gate per head, T (2D + H) floats.
FLOPs per attention layer: the transformer's (2 BT D 3D + 2 BT D D + 4 B T^2 D) + 2 BT D H (the forget gates).
Cost: O(n^2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from membench.models import linear_flops, register_model
from membench.models.families.transformer import TransformerModel
from membench.models.layers import SelfAttention, causal_mask, merge_heads, split_heads
from membench.models.scan import carry_dtype


def forget_bias(log_forget: torch.Tensor) -> torch.Tensor:
    """(B, H, T) log forget gates -> (B, H, T, T) bias D_ij = c_i - c_j (c the cumulative sum), -inf for j > i.

        >>> forget_bias(torch.log(torch.full((1, 1, 3), 0.5)))[0, 0, 2] / math.log(0.5)
        tensor([2., 1., -0.])
    """
    cum = log_forget.to(carry_dtype(log_forget)).cumsum(-1)  # (B, H, T): c_i
    bias = cum.unsqueeze(-1) - cum.unsqueeze(-2)  # (B, H, T, T): c_i - c_j
    return bias.masked_fill(~causal_mask(cum.shape[-1], cum.device), float("-inf"))


def forgetting_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                   log_forget: torch.Tensor) -> torch.Tensor:
    """Forgetting Attention spelt out: q, k, v (B, H, T, hd), log_forget (B, H, T) -> (B, H, T, hd)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, T)
    weights = (scores + forget_bias(log_forget).to(scores.dtype)).softmax(dim=-1)  # -inf above the diagonal: 0
    return weights @ v  # (B, H, T, hd)


class ForgettingAttention(SelfAttention):
    """SelfAttention (its q, k, v and output layers, optional rotary positions) with a forget gate per head."""

    def __init__(self, d_model: int, n_heads: int, rope: bool) -> None:
        super().__init__(d_model, n_heads, rope)
        self.forget = nn.Linear(d_model, n_heads)  # w_h, b_h of every head

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        q, k, v = (split_heads(t, self.n_heads) for t in self.qkv(x).chunk(3, dim=-1))  # (B, H, T, hd)
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        log_forget = F.logsigmoid(self.forget(x)).transpose(1, 2)  # (B, H, T): log f_t <= 0
        if self.path == "reference":
            a = forgetting_attention_reference(q, k, v, log_forget)
        else:
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=forget_bias(log_forget).to(q.dtype))
        return self.out(merge_heads(a))  # (B, T, D)

    def state_size(self, seq_len: int) -> int:
        return seq_len * (2 * self.d_model + self.n_heads)  # keys, values and each key's c per head

    def flops(self, batch_size: int, seq_len: int) -> int:
        return super().flops(batch_size, seq_len) + linear_flops(batch_size * seq_len, self.d_model, self.n_heads)


@register_model("fox", order=21)
class FoxModel(TransformerModel):
    """TransformerModel's params, with Forgetting Attention and no position embedding by default."""

    memory_mechanism = "KV cache read by causal softmax attention biased by cumulative data-dependent forget gates"
    attention_class = ForgettingAttention

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, *, n_heads: int = 4,
                 mlp_ratio: int = 4, position: str = "none", mixer_pattern: str = "attention", conv_kernel: int = 4,
                 conv_residual: bool = False) -> None:
        super().__init__(vocab_size, d_model, n_layers, n_heads=n_heads, mlp_ratio=mlp_ratio, position=position,
                         mixer_pattern=mixer_pattern, conv_kernel=conv_kernel, conv_residual=conv_residual)
