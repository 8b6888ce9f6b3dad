"""rnn_attention: an LSTM that attends over its own past hidden states (a short-term memory network).

Each layer runs an LSTM, then lets every step look back over the hidden states so far:

    h_1..h_T = LSTM(x_1..x_T)                                      # (B, T, D), state (h, c)
    q, k, v  = split(W_qkv h)                                      # (B, H, T, hd) each
    a_t      = sum_{s <= t} softmax_s(q_t . k_s / sqrt(hd)) v_s    # causal, over the hidden-state tape
    y_t      = W_o [h_t; a_t]                                      # (B, T, D): concat -> linear

The recurrence carries order, so there is no position embedding. Paths: fast = torch's fused LSTM and
scaled_dot_product_attention(is_causal=True) (the LSTM in float32 under autocast, as in
models/families/recurrent.py); reference = the per-step LSTM loop of
`recurrent_reference` and the explicit masked attention.

Shapes: tokens (B, T) int64 -> logits (B, T, V).
State size per layer: the tape of keys and values 2*T*D, plus the LSTM's h and c, 2*D.
FLOPs per layer: LSTM 2 * 2*B*T*D*4D, projections 2*B*T*D*3D + 2*B*T*2D*D, attention 4*B*T*T*D.
Cost: O(n^2).
"""

from __future__ import annotations

import torch
from torch import nn

from membench.models import MemoryModel, Mixer, linear_flops, register_model
from membench.models.families.recurrent import fused_recurrence, recurrent_flops, recurrent_reference, unit_forget_bias
from membench.models.layers import attention_flops, causal_attention, check_heads, merge_heads, split_heads


class LSTMAttention(Mixer):
    """LSTM, then causal multi-head attention over its hidden states, (B, T, D) -> (B, T, D)."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.d_model, self.n_heads = d_model, n_heads
        self.lstm = nn.LSTM(d_model, d_model, batch_first=True)
        unit_forget_bias(self.lstm)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(2 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        fast = self.path != "reference"
        h = fused_recurrence(self.lstm, x) if fast else recurrent_reference("lstm", self.lstm, x)  # (B, T, D)
        q, k, v = (split_heads(t, self.n_heads) for t in self.qkv(h).chunk(3, dim=-1))  # (B, H, T, hd)
        a = merge_heads(causal_attention(q, k, v, self.path))  # (B, T, D)
        return self.out(torch.cat((h, a), dim=-1))  # (B, T, 2D) -> (B, T, D)

    def state_size(self, seq_len: int) -> int:
        return 2 * seq_len * self.d_model + 2 * self.d_model

    def flops(self, batch_size: int, seq_len: int) -> int:
        tokens, d = batch_size * seq_len, self.d_model
        projections = linear_flops(tokens, d, 3 * d) + linear_flops(tokens, 2 * d, d)
        return recurrent_flops("lstm", batch_size, seq_len, d) + projections + self.attention_flops(batch_size, seq_len)

    def attention_flops(self, batch_size: int, seq_len: int) -> int:
        return attention_flops(batch_size, seq_len, self.d_model)


@register_model("rnn_attention", order=30)
class RNNAttentionModel(MemoryModel):
    memory_mechanism = "LSTM state plus causal attention over its own past hidden states"
    cost_class = "O(n^2)"
    has_reference_path = True
    compile_friendly = False  # the cuDNN LSTM call is a graph break: capture gains nothing
    token_latency = 5e-6  # cuDNN's LSTM steps through the tokens

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, *, n_heads: int = 4,
                 mlp_ratio: int = 4) -> None:
        check_heads(d_model, n_heads, rope=False)
        super().__init__(vocab_size, d_model, n_layers, lambda i: LSTMAttention(d_model, n_heads), mlp_ratio=mlp_ratio)
