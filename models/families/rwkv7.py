"""rwkv7: RWKV-7 "Goose" (Peng et al., 2025), the generalised delta rule: vector decay, erase and write decoupled.

DeltaNet erases along the key it writes, by one scalar beta. RWKV-7 decays every key channel at its own rate
w_t, erases along a normalised "removal key" kappa_hat_t by a per-channel in-context learning rate a_t, and
writes a "replacement key" k~_t that need not be the one erased. Per head (H heads of width d = D / H):

    r_t, k_t, v_t = conv_K(W_r x, W_k x, W_v x)_t                  # (d,) each; K = short_conv (0: no conv)
    w_t = exp(-e^-0.5 sigmoid(W_w x_t + w_0))                       # (d,) decay in (0.545, 1)
    a_t = sigmoid(W_a x_t + a_0)       (2 sigmoid with allow_neg_eigval)   # (d,) in-context learning rate
    kappa_hat_t = normalise(k_t * xi);   k~_t = k_t * (1 + (a_t - 1) * alpha)   # erase and write keys
    S_t = (Diag(w_t) - (a_t * kappa_hat_t) kappa_hat_t^T) S_{t-1} + k~_t v_t^T  # (d, d): the memory, S_0 = 0
    o_t = GroupNorm_h(S_t^T r_t) + ((r_t * rho * k_t) . 1) v_t                  # read-out plus the bonus
    y_t = W_o (sigmoid(W_g x_t) * concat_heads(o_t))                            # (D,)

xi, alpha and rho are learned per channel. Where RWKV-7 mixes each input with the previous token (token shift)
and uses low-rank MLPs for w, a and the gate, membench uses the short convolution (a learned mix of the last K
inputs, as its other delta-rule families do) and dense layers; the value residual across layers is left out.

allow_neg_eigval: with w = 1 the transition I - (a * kappa_hat) kappa_hat^T has the eigenvalue 1 (across
kappa_hat) and 1 - sum_c a_c kappa_hat_c^2; with a in (0, 1), as RWKV-7 draws it, that lies in (0, 1), and with
a = 2 sigmoid (Grazzi et al. 2025) in (-1, 1), so the memory can flip a sign. Off by default, as in RWKV-7.

Worked example (d = 2, w = 1, kappa_hat = k~ = e1, a = (1, 1)): the erase removes row e1 whole before the write,
so writing v = 3, then v = 5 under e1 reads 3, then 5 (DeltaNet with beta = 1); with a = (1/2, 1/2) it keeps
half: 3, then 3/2 + 5 = 6.5.

Shapes: (B, T, D) -> (B, T, D). One path: `rwkv7_reference`, a loop over tokens (no chunked form here:
`has_reference_path` is False, as for the other families with a single path). State per layer: H d^2 = D^2 / H
floats + (K - 1) * 3D (the convolution's window): with D = 64, H = 4, K = 4: 1,024 + 576 = 1,600.
FLOPs per layer (forward): 2 BT D (3D + 2D + D) (r, k, v, w, a, gate) + 2 BT 3D K (conv) + 2 BT D^2 (output) +
four d x d matrix-vector products per head and token (erase read kappa_hat^T S, erase write, write k~ v^T,
read S^T r): 8 BT H d^2 = 8 BT D d. Cost: O(n).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from membench.models import MemoryModel, register_model
from membench.models.layers import ConvQKVMixer, check_heads, writing_strength
from membench.models.scan import carry_dtype, read_state

DECAY_SCALE = math.exp(-0.5)  # -log w_t = e^-0.5 sigmoid(.): w in (exp(-e^-0.5), 1) = (0.545, 1)


def rwkv7_step(state: torch.Tensor, r_t: torch.Tensor, w_t: torch.Tensor, erase_t: torch.Tensor,
               rate_t: torch.Tensor, write_t: torch.Tensor, v_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One token: (S_{t-1}, r, w, kappa_hat, a, k~, v) -> (S_t, S_t^T r). state (B, H, N, P); v_t (B, H, P); the
    others (B, H, N)."""
    erased = read_state(erase_t.unsqueeze(-2), state)  # (B, H, 1, N) @ (B, H, N, P) -> (B, H, 1, P): kappa_hat^T S
    state = w_t.unsqueeze(-1) * state - (rate_t * erase_t).unsqueeze(-1) @ erased  # (B, H, N, 1) @ (B, H, 1, P)
    state = state + write_t.unsqueeze(-1) @ v_t.unsqueeze(-2)  # (B, H, N, 1) @ (B, H, 1, P): + k~ v^T
    return state, read_state(r_t.unsqueeze(-2), state).squeeze(-2)  # (B, H, P)


def rwkv7_reference(r: torch.Tensor, w: torch.Tensor, erase: torch.Tensor, rate: torch.Tensor, write: torch.Tensor,
                    v: torch.Tensor) -> torch.Tensor:
    """The generalised delta rule one token at a time (`rwkv7_step`). r, w, erase (kappa_hat), rate (a), write
    (k~) (B, T, H, N); v (B, T, H, P). Output (B, T, H, P) in v's dtype; the state (B, H, N, P) in float32 at
    least."""
    dtype = carry_dtype(v)
    batch, _, heads, n = r.shape
    state = v.new_zeros(batch, heads, n, v.shape[-1], dtype=dtype)  # (B, H, N, P)
    outputs = []
    for inputs in zip(*(x.to(dtype).unbind(1) for x in (r, w, erase, rate, write, v))):
        state, y_t = rwkv7_step(state, *inputs)
        outputs.append(y_t)
    return torch.stack(outputs, dim=1).to(v.dtype)  # (B, T, H, P)


class RWKV7TimeMix(ConvQKVMixer):
    """One RWKV-7 time-mixing layer; see the module docstring."""

    # erase read kappa_hat^T S, erase write, write k~ v^T, read S^T r: d x d multiply-adds each, per head and token
    memory_products = 4

    def __init__(self, d_model: int, n_heads: int, short_conv: int, allow_neg_eigval: bool) -> None:
        super().__init__(d_model, n_heads, short_conv, chunk_size=1)  # one path: no chunks
        self.allow_neg_eigval = allow_neg_eigval
        self.decay = nn.Linear(d_model, d_model)  # W_w, w_0
        self.rate = nn.Linear(d_model, d_model)  # W_a, a_0
        self.erase_scale = nn.Parameter(torch.ones(d_model))  # xi
        self.write_mix = nn.Parameter(torch.ones(d_model))  # alpha
        self.bonus = nn.Parameter(torch.zeros(d_model))  # rho
        self.norm = nn.GroupNorm(n_heads, d_model, eps=1e-5)
        self.gate = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        batch, seq_len, _ = x.shape
        heads = (batch, seq_len, self.n_heads, self.d_head)
        r, k, v = self.heads_qkv(x)  # (B, T, H, d) each
        w = torch.exp(-DECAY_SCALE * torch.sigmoid(self.decay(x))).view(heads)  # (B, T, H, d)
        rate = writing_strength(self.rate(x), self.allow_neg_eigval)  # (B, T, D): a
        erase = F.normalize(k * self.erase_scale.view(heads[2:]), dim=-1, eps=1e-6)  # (B, T, H, d): kappa_hat
        write = k * (1 + (rate - 1) * self.write_mix).view(heads)  # (B, T, H, d): k~
        o = rwkv7_reference(r, w, erase, rate.view(heads), write, v)  # (B, T, H, d)
        o = self.norm(o.to(carry_dtype(o)).reshape(batch * seq_len, self.d_model)).view(heads)  # per head
        bonus = (r * k * self.bonus.view(heads[2:])).sum(-1, keepdim=True) * v  # (B, T, H, d)
        o = (o + bonus).reshape(batch, seq_len, self.d_model) * torch.sigmoid(self.gate(x))
        return self.out(o)

    def projections(self) -> list[nn.Linear]:
        """Every dense layer applied to each token (for `flops`)."""
        return [self.qkv, self.decay, self.rate, self.gate, self.out]


@register_model("rwkv7", order=49)
class RWKV7Model(MemoryModel):
    """Params: `n_heads` H (memory D^2 / H; RWKV-7 uses heads of 64), `short_conv` K (4; 0 = off; it stands in
    for RWKV's token shift) and `allow_neg_eigval` (a in (0, 2) instead of (0, 1))."""

    memory_mechanism = "generalised delta rule: vector decay, erase key and write key decoupled (RWKV-7)"
    cost_class = "O(n)"
    compile_friendly = False  # a trace unrolls T steps per layer: minutes of compile at long lengths
    token_latency = 1e-4  # a loop over tokens: a decay, two rank-1 updates and a read per token, twice back

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, *, n_heads: int = 4,
                 short_conv: int = 4, allow_neg_eigval: bool = False, mlp_ratio: int = 4) -> None:
        check_heads(d_model, n_heads, rope=False)
        super().__init__(vocab_size, d_model, n_layers,
                         lambda i: RWKV7TimeMix(d_model, n_heads, short_conv, allow_neg_eigval), mlp_ratio=mlp_ratio)
