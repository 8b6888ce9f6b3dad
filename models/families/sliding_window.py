"""sliding_window: causal local attention; its memory is the last w tokens only.

Each layer is multi-head attention with rotary positions in which position t reads t-w+1 .. t:

    a_t = sum_{t-w < s <= t} softmax_s(q_t . k_s / sqrt(hd)) v_s          # (B, H, T, hd)

Both paths cut the sequence into query blocks of w positions; every query in block b reads keys
from at most the previous block and its own (t - s < w and t >= b*w imply s > (b-1)*w).

  fast      all blocks at once: keys [block b-1; block b] stacked to (B*H, nb, 2w, hd), a fixed
            (1, nb, w, 2w) band mask, one scaled_dot_product_attention call. T is padded to nb*w.
  reference a loop over query blocks; block b reads exactly keys max(0, bw-w+1) .. min(T, bw+w)-1
            with the explicit band mask 0 <= t - s < w, and computes q k^T, softmax, @ v by hand.

`flops` describes the reference: per block 4*B*D*Lq*Lk, Lq <= w queries and Lk <= 2w-1 keys, so
about 8*B*T*w*D in all. The fast path computes 2w keys per block (one more, always masked).

Worked example, w = 3, T = 7: blocks {0,1,2} {3,4,5} {6}; query 4 reads keys 2, 3, 4; the
reference gives block {3,4,5} keys 1..5 and masks 1 for query 4.

Shapes: tokens (B, T) int64 -> logits (B, T, V).
State size: keys and values of the window, 2*min(T, w)*D floats per layer. Cost: O(n*w).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from membench.models import MemoryModel, Mixer, register_model
from membench.models.layers import (
    RotaryEmbedding,
    attention_reference,
    check_heads,
    merge_heads,
    qkv_out_flops,
    split_heads,
)


def band_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int) -> torch.Tensor:
    """Bool (..., Lq, Lk): True where query position t may read key position s, 0 <= t - s < window."""
    lag = q_pos[..., :, None] - k_pos[..., None, :]
    return (lag >= 0) & (lag < window)


class WindowAttention(Mixer):
    """Causal multi-head attention over the last `window` positions, (B, T, D) -> (B, T, D)."""

    def __init__(self, d_model: int, n_heads: int, window: int) -> None:
        super().__init__()
        self.d_model, self.n_heads, self.window = d_model, n_heads, window
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.rotary = RotaryEmbedding(d_model // n_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        q, k, v = (split_heads(t, self.n_heads) for t in self.qkv(x).chunk(3, dim=-1))  # (B, H, T, hd)
        q, k = self.rotary(q), self.rotary(k)
        a = self._reference(q, k, v) if self.path == "reference" else self._fast(q, k, v)
        return self.out(merge_heads(a))  # (B, T, D)

    def _reference(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Loop over query blocks of w; each reads its exact key range under the band mask."""
        w, seq_len = self.window, q.shape[-2]
        pos = torch.arange(seq_len, device=q.device)
        outs = []
        for start in range(0, seq_len, w):
            stop, first = min(seq_len, start + w), max(0, start - w + 1)
            allowed = band_mask(pos[start:stop], pos[first:stop], w)  # (Lq, Lk)
            outs.append(attention_reference(q[:, :, start:stop], k[:, :, first:stop], v[:, :, first:stop], allowed))
        return torch.cat(outs, dim=2)  # (B, H, T, hd)

    def _fast(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """All query blocks at once: each reads [previous block; own block] under a band mask."""
        w = self.window
        batch, heads, seq_len, head_dim = q.shape
        blocks = math.ceil(seq_len / w)
        pad = (0, 0, 0, blocks * w - seq_len)

        def blocked(t: torch.Tensor) -> torch.Tensor:  # (B, H, T, hd) -> (B*H, nb, w, hd)
            return F.pad(t, pad).reshape(batch * heads, blocks, w, head_dim)

        def with_previous(t: torch.Tensor) -> torch.Tensor:  # (B*H, nb, w, hd) -> (B*H, nb, 2w, hd)
            previous = F.pad(t, (0, 0, 0, 0, 1, 0))[:, :-1]  # block b-1 at index b, zeros before block 0
            return torch.cat((previous, t), dim=2)

        kb, vb = with_previous(blocked(k)), with_previous(blocked(v))
        q_pos = torch.arange(blocks * w, device=q.device).view(blocks, w)  # (nb, w)
        k_pos = torch.cat((q_pos - w, q_pos), dim=1)  # (nb, 2w); negative = before the sequence
        allowed = band_mask(q_pos, k_pos, w) & (k_pos >= 0)[:, None, :]  # (nb, w, 2w)
        # a 4-d mask (1, nb, w, 2w) lets SDPA pick a fused kernel (flash on CPU) over the math fallback
        out = F.scaled_dot_product_attention(blocked(q), kb, vb, attn_mask=allowed[None])  # (B*H, nb, w, hd)
        return out.reshape(batch, heads, blocks * w, head_dim)[:, :, :seq_len]  # (B, H, T, hd)

    def state_size(self, seq_len: int) -> int:
        return 2 * min(seq_len, self.window) * self.d_model

    def flops(self, batch_size: int, seq_len: int) -> int:
        tokens = batch_size * seq_len
        projections = qkv_out_flops(tokens, self.d_model)
        return projections + self.attention_flops(batch_size, seq_len)

    def attention_flops(self, batch_size: int, seq_len: int) -> int:
        """q k^T and weights @ v of every reference block: 4*B*D*Lq*Lk summed over blocks."""
        w, pairs = self.window, 0
        for start in range(0, seq_len, w):
            stop = min(seq_len, start + w)
            pairs += (stop - start) * (stop - max(0, start - w + 1))
        return 4 * batch_size * pairs * self.d_model


@register_model("sliding_window", order=50)
class SlidingWindowModel(MemoryModel):
    """Params: `window` w (tokens each position reads, itself included) and `n_heads`;
    the state is bounded by w whatever the length."""

    memory_mechanism = "keys and values of the last w tokens, read by local softmax attention (RoPE)"
    cost_class = "O(n*w)"
    has_reference_path = True

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, *, window: int = 32,
                 n_heads: int = 4, mlp_ratio: int = 4) -> None:
        check_heads(d_model, n_heads, rope=True)
        attention = functools.partial(WindowAttention, d_model, n_heads, window)
        super().__init__(vocab_size, d_model, n_layers, lambda i: attention(), mlp_ratio=mlp_ratio)
