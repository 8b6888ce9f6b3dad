"""gated_deltanet: Gated DeltaNet (Yang, Kautz & Hatamizadeh, 2025), the delta rule with a data-dependent decay.

DeltaNet (see `deltanet`) replaces the value of a key it writes again, but never forgets the rest; Mamba-2's
decay forgets everything alike. Gated DeltaNet does both: the memory decays by a_t, then the delta rule
writes. Per head (H heads of width d = D / H), for every token t:

    q_t, k_t, v_t = SiLU(conv_K(W_q x, W_k x, W_v x))_t            # (d,) each; K = short_conv (0: no conv)
    q_t, k_t = q_t / |q_t|, k_t / |k_t|                            # L2-normalised
    beta_t = sigmoid(w_h . x_t)                                    # writing strength in (0, 1)
                                                                   #   (0, 2) with allow_neg_eigval: 2 sigmoid
    log a_t = -exp(A_log_h) softplus(w'_h . x_t + dt_bias_h)       # <= 0: a_t in (0, 1], Mamba-2's decay
    S_t = a_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T    # (d, d): the memory, S_0 = 0
    o_t = RMSNorm(S_t^T q_t) * SiLU(W_g x_t)_h                     # (d,), gated read-out
    y_t = W_o concat_heads(o_t)                                    # (D,)

Worked example (d = 1, k = q = 1, beta = 1/2, constant a = 1/2, v = 1 at every step): S_t = S_{t-1}/4 + 1/2,
so y = 1/2, 5/8, 21/32, ... -> 2/3, where DeltaNet (a = 1) tends to 1: the decay keeps the memory short.

`allow_neg_eigval` (off by default) is deltanet's: beta = 2 sigmoid(.), so the transition a_t (I - beta_t k_t
k_t^T) has its eigenvalues in (-a_t, a_t], within (-1, 1] (Grazzi et al., ICLR 2025); the decay is unchanged.

Shapes: (B, T, D) -> (B, T, D). Fast path: `models.scan.delta_rule_chunked` with the log-decays (chunks of
`chunk_size`, decays summed as logs inside a chunk, only causal differences exponentiated); reference:
`models.scan.delta_rule_reference`. Both share the projections, the convolution, the norm and the gate.
State per layer: H d^2 = D^2 / H floats (the memories S) + (K - 1) * 3D (the convolution's last K - 1
inputs), constant in length: the same as deltanet's. FLOPs per layer (forward, reference path):
2 BT D (3D + 2H) (q, k, v, beta, decay) + 2 BT D^2 (gate) + 2 BT 3D K (conv) + 2 BT D^2 (output) +
the delta rule 6 BT H d^2 = 6 BT D d. Cost: O(n).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from membench.models import register_model
from membench.models.families.deltanet import DeltaNet, DeltaNetModel
from membench.models.layers import mamba_decay_params


class GatedDeltaNet(DeltaNet):
    """One Gated DeltaNet layer: DeltaNet plus a decay per head and token and an output gate."""

    def __init__(self, d_model: int, n_heads: int, short_conv: int, chunk_size: int,
                 allow_neg_eigval: bool = False) -> None:
        super().__init__(d_model, n_heads, short_conv, chunk_size, allow_neg_eigval)
        self.dt = nn.Linear(d_model, n_heads, bias=False)  # dt_raw: how much of the memory a token lets go
        self.A_log, self.dt_bias = mamba_decay_params(n_heads)
        self.gate_proj = nn.Linear(d_model, d_model, bias=False)

    def log_decay(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, H), <= 0
        return -self.A_log.exp() * F.softplus(self.dt(x) + self.dt_bias)

    def gate(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:  # o (B, T, H, d) -> (B, T, H, d)
        return o * F.silu(self.gate_proj(x)).view_as(o)

    def projections(self) -> list[nn.Linear]:
        return [*super().projections(), self.dt, self.gate_proj]


@register_model("gated_deltanet", order=47)
class GatedDeltaNetModel(DeltaNetModel):
    """DeltaNetModel's params and blocks with the gated mixer."""

    memory_mechanism = "delta-rule matrix memory per head with a data-dependent decay (Mamba-2 gate) and output gate"
    mixer_class = GatedDeltaNet
