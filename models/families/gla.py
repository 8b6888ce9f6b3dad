"""gla: gated linear attention (Yang, Wang, Shen, Panda & Kim, ICML 2024), a matrix memory with a gate per key channel.

Linear attention (see `linear_attention`) never forgets; Mamba-2 and gated_deltanet forget every channel of a
head alike. GLA's forget gate is a vector: each key channel n of the memory decays at its own data-dependent
rate. Per head (H heads of width d = D / H), for every token t:

    q_t, k_t, v_t = conv_K(W_q x, W_k x, W_v x)_t                  # (d,) each; K = short_conv (0: no conv)
    log alpha_t = max(logsigmoid(W_2 W_1 x_t + b) / 16, -5)        # (d,) <= 0: low-rank (16) gate, tau = 16
    S_t = Diag(alpha_t) S_{t-1} + k_t v_t^T                        # (d, d): the memory, S_0 = 0
    o_t = RMSNorm(S_t^T q_t / sqrt(d)) * SiLU(W_g x_t)_h           # (d,), gated read-out
    y_t = W_o concat_heads(o_t)                                    # (D,)

Unrolled, o_t = sum_{s <= t} sum_n q_tn k_sn exp(B_tn - B_sn) v_s with B_t = log alpha_1 + ... + log alpha_t
(per channel), which the chunked form computes with matmuls.

Worked example (d = 2, v = 1, alpha = (1, 1/2) at every step, k = q = (1, 1)): channel 1 sums every key, channel 2
keeps a geometric tail, so S_t^T q = t + (2 - 2^(1-t)): 2, 3.5, 4.75, ... (linear attention: 2, 4, 6).

The floor of -5 (a gate of at least 0.0067, met only where logsigmoid falls below -80) is fla's `clamp_min`
option; it keeps the chunked form in float range.

Shapes: (B, T, D) -> (B, T, D). Fast path: `gated_scan_chunked` (chunks of `chunk_size` <= 16: inside a chunk
the decay exp(B_i - B_j) = exp(B_i) exp(-B_j) splits between queries and keys, so the scores are one matmul; the
state is carried from chunk to chunk by a loop over the T / C chunks); reference: the per-token recurrence
`gated_scan_reference`. Both share the projections, the convolution, the norm and the gate.
State per layer: H d^2 = D^2 / H floats + (K - 1) * 3D for the convolution, constant in length.
FLOPs per layer (forward, reference path): 2 BT D 3D (q, k, v) + 2 BT (16 D + 16 D) (the gate) + 2 BT D^2 (the
output gate) + 2 BT 3D K (conv) + 2 BT D^2 (output) + the memory, a write k v^T and a read S^T q of d x d
multiply-adds per head and token: 4 BT H d^2 = 4 BT D d. Cost: O(n).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from membench.checks import check_int
from membench.models import MemoryModel, register_model
from membench.models.layers import ConvQKVMixer, check_heads
from membench.models.scan import carry_dtype, read_state, split_chunks

GATE_RANK = 16  # the rank of the gate's projection W_2 W_1 (the paper's)
GATE_TEMPERATURE = 16.0  # tau: log alpha = logsigmoid(.) / tau keeps the gates near 1 at the start
LOG_GATE_FLOOR = -5.0  # log alpha >= -5 (alpha >= 0.0067, reached only below logsigmoid = -80): see the chunked form
MAX_CHUNK = 16  # the longest chunk of the chunked form: 16 tokens at the floor decay by e^-80, within float range


def gated_scan_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_gate: torch.Tensor) -> torch.Tensor:
    """S_t = Diag(exp(log_gate_t)) S_{t-1} + k_t v_t^T, y_t = S_t^T q_t, one token at a time: the ground truth.

    q, k, log_gate (B, T, H, N) with log_gate <= 0, v (B, T, H, P) -> (B, T, H, P); the state (B, H, N, P) is
    carried in float32 at least.

        >>> ones = torch.ones(1, 3, 1, 2)
        >>> log_gate = torch.log(torch.tensor([1.0, 0.5])).expand(1, 3, 1, 2)
        >>> gated_scan_reference(ones, ones, ones[..., :1], log_gate).flatten()
        tensor([2.0000, 3.5000, 4.7500])
    """
    batch, _, heads, n = k.shape
    state = v.new_zeros(batch, heads, n, v.shape[-1], dtype=carry_dtype(v))  # (B, H, N, P)
    outputs = []
    for q_t, k_t, v_t, g_t in zip(q.unbind(1), k.unbind(1), v.unbind(1), log_gate.unbind(1)):
        update = k_t.unsqueeze(-1) @ v_t.unsqueeze(-2)  # (B, H, N, 1) @ (B, H, 1, P) -> (B, H, N, P)
        state = g_t.exp().unsqueeze(-1) * state + update  # (B, H, N, P): row n decays by alpha_n
        outputs.append(read_state(q_t.unsqueeze(-2), state).squeeze(-2))  # (B, H, 1, N) @ (B, H, N, P)
    return torch.stack(outputs, dim=1).to(v.dtype)  # (B, T, H, P)


def gated_scan_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_gate: torch.Tensor,
                       chunk_size: int = MAX_CHUNK) -> torch.Tensor:
    """The output of `gated_scan_reference` with matmuls inside chunks of C <= MAX_CHUNK tokens and a loop over
    the chunks only, for log-gates >= LOG_GATE_FLOOR.

    With B_i the cumulative log-gate from the chunk's start to position i (per channel, B_i <= B_j for i >= j),
    the decay from j to i is exp(B_i - B_j) = exp(B_i) exp(-B_j), so inside a chunk the scores are one matmul of
    the queries decayed from the chunk's start and the keys grown back to it (GLA's chunkwise form):

        y_i = sum_{j <= i in c} ((q_i * exp(B_i)) . (k_j * exp(-B_j))) v_j  +  (q_i * exp(B_i))^T S_{c-1}
        S_c = Diag(exp(B_last)) S_{c-1} + sum_{j in c} (k_j * exp(B_last - B_j)) v_j^T

    exp(-B_j) grows with the chunk: the floor keeps |B| <= C * 5 <= 80 within a chunk, so neither exp(B_i) nor
    exp(-B_j) leaves the float32 (and bfloat16) range, whose exponent ends at about +-88. Four stages, as in
    `models.scan.scan_chunked`: (1) each chunk from its own tokens, (2) the state each chunk adds, (3) the
    recurrence across chunks, (4) the entering state read out. T need not be a multiple of C: the tail is
    zero-padded (zero keys add nothing).
    """
    check_int("chunk_size", chunk_size, maximum=MAX_CHUNK)
    batch, seq_len, heads, p = v.shape
    size = min(chunk_size, seq_len)
    qc, kc, vc = (split_chunks(x, size) for x in (q, k, v))  # (B, H, nC, C, N), (.., N), (.., P)
    cum = split_chunks(log_gate.to(carry_dtype(log_gate)), size).cumsum(-2)  # (B, H, nC, C, N): B_i, in [-80, 0]
    q_in = qc * cum.exp().to(qc.dtype)  # (B, H, nC, C, N): q_i exp(B_i), decayed from the chunk's start

    # 1. each chunk from its own tokens: (q_i exp(B_i)) . (k_j exp(-B_j)), j <= i
    scores = (q_in @ (kc * (-cum).exp().to(kc.dtype)).transpose(-1, -2)).tril()  # (B, H, nC, C, C)
    intra = scores @ vc  # (B, H, nC, C, P)

    # 2. the state each chunk adds, its keys decayed to the chunk's end
    k_out = kc * (cum[..., -1:, :] - cum).exp().to(kc.dtype)  # (B, H, nC, C, N)
    local = (k_out.transpose(-1, -2) @ vc).to(carry_dtype(v))  # (B, H, nC, N, P)

    # 3. the state entering each chunk: S_c = Diag(exp(B_last)) S_{c-1} + local_c
    chunk_decay = cum[..., -1, :].exp().unsqueeze(-1)  # (B, H, nC, N, 1)
    state = torch.zeros_like(local[:, :, 0])  # (B, H, N, P)
    states = []
    for decay_c, local_c in zip(chunk_decay.unbind(2), local.unbind(2)):  # unbind: its backward is one stack
        states.append(state)
        state = decay_c * state + local_c
    entering = torch.stack(states, dim=2)  # (B, H, nC, N, P)

    # 4. the entering state read out at each position (float32 at least)
    out = intra + read_state(q_in, entering)  # (B, H, nC, C, P)
    return out.permute(0, 2, 3, 1, 4).reshape(batch, -1, heads, p)[:, :seq_len].to(v.dtype)  # (B, T, H, P)


class GatedLinearAttention(ConvQKVMixer):
    """One GLA layer; see the module docstring."""

    memory_products = 2  # the memory: write k v^T and read S^T q, d x d multiply-adds each per head and token

    def __init__(self, d_model: int, n_heads: int, short_conv: int, chunk_size: int) -> None:
        super().__init__(d_model, n_heads, short_conv, chunk_size)
        self.gate_down = nn.Linear(d_model, GATE_RANK, bias=False)  # W_1
        self.gate_up = nn.Linear(GATE_RANK, d_model)  # W_2 and b
        self.norm = nn.RMSNorm(self.d_head, eps=1e-6)
        self.out_gate = nn.Linear(d_model, d_model, bias=False)  # W_g
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        batch, seq_len, _ = x.shape
        q, k, v = self.heads_qkv(x)  # (B, T, H, d) each
        q = q / math.sqrt(self.d_head)
        log_gate = F.logsigmoid(self.gate_up(self.gate_down(x))) / GATE_TEMPERATURE  # (B, T, D) <= 0
        log_gate = log_gate.clamp(min=LOG_GATE_FLOOR).view_as(k)  # (B, T, H, d): one gate per key channel
        if self.path == "reference":
            o = gated_scan_reference(q, k, v, log_gate)
        else:
            o = gated_scan_chunked(q, k, v, log_gate, chunk_size=self.chunk_size)
        o = self.norm(o.to(carry_dtype(o))) * F.silu(self.out_gate(x)).view_as(o)  # (B, T, H, d)
        return self.out(o.reshape(batch, seq_len, self.d_model))

    def projections(self) -> list[nn.Linear]:
        """Every dense layer applied to each token (for `flops`)."""
        return [self.qkv, self.gate_down, self.gate_up, self.out_gate, self.out]


@register_model("gla", order=41)
class GLAModel(MemoryModel):
    """Params: `n_heads` H (memory D^2 / H), `short_conv` K (off by default, as in the paper) and `chunk_size`
    of the fast path."""

    memory_mechanism = "matrix memory per head with a data-dependent forget gate per key channel (GLA)"
    cost_class = "O(n)"
    has_reference_path = True

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, *, n_heads: int = 4,
                 short_conv: int = 0, chunk_size: int = 16, mlp_ratio: int = 4) -> None:
        check_heads(d_model, n_heads, rope=False)
        check_int("chunk_size", chunk_size, maximum=MAX_CHUNK)
        super().__init__(vocab_size, d_model, n_layers,
                         lambda i: GatedLinearAttention(d_model, n_heads, short_conv, chunk_size), mlp_ratio=mlp_ratio)
