"""deltanet: DeltaNet (Schlag et al. 2021; Yang et al. 2024), a matrix memory written by the delta rule.

Linear attention only ever adds k v^T to its memory, so a key written twice recalls the sum of its values.
DeltaNet first recalls what the key already holds and writes only the error, so the newer value replaces
the older. Per head (H heads of width d = D / H), for every token t:

    q_t, k_t, v_t = SiLU(conv_K(W_q x, W_k x, W_v x))_t        # (d,) each; K = short_conv (0: no conv)
    q_t, k_t = q_t / |q_t|, k_t / |k_t|                        # L2-normalised
    beta_t = sigmoid(w_h . x_t)                                # writing strength in (0, 1), per head
                                                               #   (0, 2) with allow_neg_eigval: 2 sigmoid
    S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T    # (d, d): the memory, S_0 = 0
        = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T         # write the error of the recall
    o_t = RMSNorm(S_t^T q_t)                                   # (d,), one norm shared by the heads
    y_t = W_o concat_heads(o_t)                                # (D,)

Worked example (d = 2, beta = 1, keys e1, e2, e1 with values 3, 5, 7): S^T e1 = 3, then S^T e2 = 5, then
the recall of e1 is 3, the error 7 - 3 = 4 is written and S^T e1 = 7 (linear attention: 3 + 7 = 10).

Negative eigenvalues (`allow_neg_eigval`, fla's name; Grazzi et al., ICLR 2025, "Unlocking State-Tracking in
Linear RNNs Through Negative Eigenvalues"): for a unit key the transition I - beta k k^T has the eigenvalue
1 - beta along k and 1 on the rest, so beta in (0, 1) keeps every eigenvalue in (0, 1] and beta = 2 sigmoid(.)
in (0, 2) allows (-1, 1]. A transition with eigenvalue -1 flips the sign of what the key recalls, which is
how one layer tracks parity at any length: with d = 1 and k = 1, once S holds s, a 1 bit written with
beta -> 2 and v = 0 maps it to (1 - 2) s = -s and a 0 bit with beta -> 0 keeps it, so S = (-1)^(ones so far) s.
Off by default (the paper's DeltaNet); the chunked form takes beta in (0, 2) unchanged.

Shapes: (B, T, D) -> (B, T, D). Fast path: `models.scan.delta_rule_chunked` (the WY / UT-transform form,
matmuls inside chunks of `chunk_size`, a loop over chunks only); reference: the per-token recurrence
`models.scan.delta_rule_reference`. Both share the projections, the convolution and the norm.
State per layer: H d^2 = D^2 / H floats (the memories S) + (K - 1) * 3D (the convolution's last K - 1
inputs of q, k, v), constant in length. With D = 64, H = 4, K = 4: 1,024 + 576 = 1,600.
FLOPs per layer (forward, reference path): 2 BT D (3D + H) (q, k, v and beta) + 2 BT 3D K (conv) +
2 BT D^2 (output) + the delta rule, three d x d matrix-vector products per head and token (the recall
S^T k, the write k u^T, the read S^T q): 6 BT H d^2 = 6 BT D d. Cost: O(n).
"""

from __future__ import annotations

import torch
from torch import nn

from membench.models import MemoryModel, register_model
from membench.models.layers import ConvQKVMixer, check_heads, delta_rule_inputs
from membench.models.scan import carry_dtype, delta_rule_chunked, delta_rule_reference


class DeltaNet(ConvQKVMixer):
    """One DeltaNet layer; see the module docstring. Subclasses add a decay (`log_decay`) and an output
    gate (`gate`) and list their extra projections in `projections`."""

    # the memory: recall S^T k, write k u^T, read S^T q, each d x d multiply-adds per head and token
    memory_products = 3

    def __init__(self, d_model: int, n_heads: int, short_conv: int, chunk_size: int,
                 allow_neg_eigval: bool = False) -> None:
        super().__init__(d_model, n_heads, short_conv, chunk_size)
        self.allow_neg_eigval = allow_neg_eigval
        self.beta = nn.Linear(d_model, n_heads, bias=False)
        self.norm = nn.RMSNorm(self.d_head, eps=1e-6)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        batch, seq_len, _ = x.shape
        q, k, v, beta = delta_rule_inputs(self, x)  # (B, T, H, d) each, beta (B, T, H)
        log_decay = self.log_decay(x)  # (B, T, H) or None
        if self.path == "reference":
            o = delta_rule_reference(q, k, v, beta, log_decay)
        else:
            o = delta_rule_chunked(q, k, v, beta, log_decay, chunk_size=self.chunk_size)
        o = self.gate(x, self.norm(o.to(carry_dtype(o))))  # (B, T, H, d); the norm in float32 at least
        return self.out(o.reshape(batch, seq_len, self.d_model))

    def log_decay(self, x: torch.Tensor) -> torch.Tensor | None:
        """(B, T, D) -> the log-decays (B, T, H); DeltaNet does not decay (None)."""
        return None

    def gate(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """The normed read-out o (B, T, H, d), gated by the input x (B, T, D); DeltaNet does not gate."""
        return o

    def projections(self) -> list[nn.Linear]:
        """Every dense layer applied to each token (for `flops`)."""
        return [self.qkv, self.beta, self.out]


@register_model("deltanet", order=46)
class DeltaNetModel(MemoryModel):
    """Params: `n_heads` H (memory D^2 / H), `short_conv` K (4, as in the paper; 0 = off), `chunk_size` of the
    fast path and `allow_neg_eigval` (beta = 2 sigmoid: transitions with eigenvalues in (-1, 1]; off by default)."""

    memory_mechanism = "matrix memory per head written by the delta rule: recall, then write the error"
    cost_class = "O(n)"
    has_reference_path = True
    mixer_class: type = DeltaNet  # gated_deltanet keeps these params and swaps the mixer

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, *, n_heads: int = 4,
                 short_conv: int = 4, chunk_size: int = 32, mlp_ratio: int = 4,
                 allow_neg_eigval: bool = False) -> None:
        check_heads(d_model, n_heads, rope=False)
        mixer = self.mixer_class
        super().__init__(vocab_size, d_model, n_layers,
                         lambda i: mixer(d_model, n_heads, short_conv, chunk_size, allow_neg_eigval=allow_neg_eigval),
                         mlp_ratio=mlp_ratio)
