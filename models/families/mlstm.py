"""mlstm: xLSTM's matrix memory (Beck et al., 2024), exponential gating with a max-state stabiliser.

Per head (d = d_model / n_heads), with scalar gate pre-activations i~_t, f~_t per head and token:

    q_t, k_t, v_t = W_q c_t, W_k c_t / sqrt(d), W_v x_t      # (d,) each; c = SiLU(ShortConv(x)) (or x)
    i_t = exp(i~_t)                                          # exponential input gate
    f_t = sigmoid(f~_t)  or  exp(f~_t)                       # `forget_gate` = "sigmoid" | "exp"
    C_t = f_t C_{t-1} + i_t v_t k_t^T                        # (d, d)   the matrix memory
    n_t = f_t n_{t-1} + i_t k_t                              # (d,)     the normaliser
    h_t = C_t q_t / max(|n_t . q_t|, 1)                      # (d,)
    y_t = W_out (sigmoid(W_o x_t) * LayerNorm_head(h_t))     # output gate, per-head norm

(the code stores C transposed, k v^T of shape (d, P), and reads C^T q: the same numbers.)

exp(i~) overflows float32 once i~ > 88, so the states are carried scaled by exp(-m_t), with the max
state m_t = max(log f_t + m_{t-1}, max(i~_t, M_FLOOR)) (m_0 = 0, C_0 = n_0 = 0; the floor, -30, keeps
exp(-m_t) finite when every gate is shut):

    C~_t = exp(log f_t + m_{t-1} - m_t) C~_{t-1} + exp(i~_t - m_t) v_t k_t^T      # = C_t exp(-m_t)
    n~_t = exp(log f_t + m_{t-1} - m_t) n~_{t-1} + exp(i~_t - m_t) k_t            # = n_t exp(-m_t)
    h_t  = C~_t q_t / (max(|n~_t . q_t|, exp(-m_t)) + eps)

Every exponent is <= 0 by the choice of m_t, and h_t is the unstabilised h_t for any such m (up to eps).

Fast path `mlstm_chunked` (a loop over chunks only, matmuls inside; cf. the chunkwise form of the
NX-AI mlstm kernels): with b_i = sum of log f over the chunk up to i and D_ij = b_i - b_j + i~_j
(j <= i) and D'_ij the same with the floored gate max(i~_j, M_FLOOR), position i of a chunk entered
with state (C~, n~, m) has

    m_i   = max(b_i + m, max_{j<=i} D'_ij)
    num_i = exp(b_i + m - m_i) C~ q_i + sum_{j<=i} exp(D_ij - m_i) (q_i . k_j) v_j
    den_i = exp(b_i + m - m_i) n~ . q_i + sum_{j<=i} exp(D_ij - m_i) (q_i . k_j)

which is the recurrence unrolled: m_i is the same max state, so both paths compute the same function.

Worked example (d = 1, sigmoid gate, f~ = +inf so f = 1, i~ = 0, k = v = q = 1): C_t = n_t = t and
h_t = t / max(t, 1) = 1 at every step; with i~ = 1000 the stabilised form gives the same 1.

Shapes: (B, T, D) -> (B, T, D); mlstm_* functions take q, k (B, T, H, d), v (B, T, H, P), gate
pre-activations (B, T, H), and return (B, T, H, P).
State per layer: H * (d*d + d + 1) floats (C, n, m per head) + (short_conv - 1) * D (the conv's last
inputs), constant in length.
FLOPs per layer (reference): projections 2*B*T*D*(2D + 2D + 2H + D), conv 2*B*T*D*K, and the memory
4*B*T*H*d*d + 2*B*T*H*d (update v k^T, read-out C q, n . q). Cost: O(n).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from membench.checks import check_choice, check_int
from membench.models import MemoryModel, Mixer, linear_flops, register_model
from membench.models.layers import ShortConv, check_heads
from membench.models.scan import carry_dtype, read_state, split_chunks

EPS = 1e-6
M_FLOOR = -30.0  # the max state never goes below it: exp(-m) <= exp(30) stays finite
FORGET_GATES = ("sigmoid", "exp")


def log_forget(f_pre: torch.Tensor, forget_gate: str) -> torch.Tensor:
    """log f_t: logsigmoid(f~) for the sigmoid gate, f~ itself for the exponential one."""
    return F.logsigmoid(f_pre) if forget_gate == "sigmoid" else f_pre


def mlstm_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i_pre: torch.Tensor, f_pre: torch.Tensor,
    forget_gate: str = "sigmoid", return_state: bool = False,
):
    """The stabilised recurrence, one token at a time: readable, slow, the ground truth.

    Returns h (B, T, H, P), and with `return_state` also the final (C~ (B, H, d, P), n~ (B, H, d),
    m (B, H)): the whole state the recurrence carries.
    """
    batch, _, heads, d = k.shape
    dtype = carry_dtype(v)
    C = v.new_zeros(batch, heads, d, v.shape[-1], dtype=dtype)  # (B, H, d, P)
    n = v.new_zeros(batch, heads, d, dtype=dtype)  # (B, H, d)
    m = v.new_zeros(batch, heads, dtype=dtype)  # (B, H)
    log_f = log_forget(f_pre.to(dtype), forget_gate)  # (B, T, H)
    outputs = []
    for q_t, k_t, v_t, i_t, lf_t in zip(q.unbind(1), k.unbind(1), v.unbind(1), i_pre.to(dtype).unbind(1),
                                        log_f.unbind(1)):
        m_new = torch.maximum(lf_t + m, i_t.clamp(min=M_FLOOR))  # (B, H)
        f_s, i_s = (lf_t + m - m_new).exp(), (i_t - m_new).exp()  # (B, H) each, both <= 1
        update = k_t.to(dtype).unsqueeze(-1) @ v_t.to(dtype).unsqueeze(-2)  # (B, H, d, 1) @ (B, H, 1, P)
        C = f_s[..., None, None] * C + i_s[..., None, None] * update  # (B, H, d, P)
        n = f_s[..., None] * n + i_s[..., None] * k_t.to(dtype)  # (B, H, d)
        m = m_new
        q_row = q_t.to(dtype).unsqueeze(-2)  # (B, H, 1, d)
        num = (q_row @ C).squeeze(-2)  # (B, H, P)
        qn = (q_row @ n.unsqueeze(-1)).squeeze(-1)  # (B, H, 1)
        den = torch.maximum(qn.abs(), (-m).exp().unsqueeze(-1)) + EPS  # (B, H, 1)
        outputs.append(num / den)
    h = torch.stack(outputs, dim=1).to(v.dtype)  # (B, T, H, P)
    return (h, (C, n, m)) if return_state else h


def mlstm_chunked(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i_pre: torch.Tensor, f_pre: torch.Tensor,
    forget_gate: str = "sigmoid", chunk_size: int = 64,
) -> torch.Tensor:
    """The same output, with matmuls inside chunks of C tokens and the stabilised state carried from
    chunk to chunk (a Python loop over the T / C chunks only). See the module docstring.

    T need not be a multiple of C: the tail is zero-padded (it only reaches padded outputs).
    """
    check_int("chunk_size", chunk_size)
    batch, seq_len, heads, p = v.shape
    dtype = carry_dtype(v)
    size = min(chunk_size, seq_len)
    pad = -seq_len % size
    chunks = (seq_len + pad) // size

    def gates_to_chunks(g: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, H, nC, C)
        return F.pad(g.to(dtype), (0, 0, 0, pad)).view(batch, chunks, size, heads).permute(0, 3, 1, 2)

    qc, kc, vc = (split_chunks(x.to(dtype), size) for x in (q, k, v))  # (B, H, nC, C, d), ..., (B, H, nC, C, P)
    i_c = gates_to_chunks(i_pre)  # (B, H, nC, C)
    i_m = i_c.clamp(min=M_FLOOR)  # the floored gate, for the max states only
    b = gates_to_chunks(log_forget(f_pre.to(dtype), forget_gate)).cumsum(-1)  # (B, H, nC, C): log f up to i
    # (C, C): 0 where j <= i, -inf above the diagonal (added: 10x faster on the CPU than masked_fill)
    masked = torch.full((size, size), float("-inf"), dtype=dtype, device=v.device).triu(1)

    # 1. intra-chunk log weights D_ij = b_i - b_j + i~_j (j <= i) and the chunk's own contribution to
    #    the state at its end, scaled by its own max: a_j = b_last - b_j + i~_j (the maxima use i_m)
    lag_f = b.unsqueeze(-1) - b.unsqueeze(-2)  # (B, H, nC, C, C): b_i - b_j
    log_w = lag_f + i_c.unsqueeze(-2) + masked  # (B, H, nC, C, C)
    log_w_max = (lag_f + i_m.unsqueeze(-2) + masked).amax(-1)  # (B, H, nC, C)
    a = b[..., -1:] - b + i_c  # (B, H, nC, C)
    a_max = (b[..., -1:] - b + i_m).amax(-1)  # (B, H, nC)
    a_w = (a - a_max.unsqueeze(-1)).exp().unsqueeze(-1)  # (B, H, nC, C, 1), <= 1
    local_C = (kc * a_w).transpose(-1, -2) @ vc  # (B, H, nC, d, P)
    local_n = (kc * a_w).sum(-2)  # (B, H, nC, d)

    # 2. the state entering each chunk: a loop over chunks (elementwise work only)
    C = vc.new_zeros(batch, heads, qc.shape[-1], p)  # (B, H, d, P)
    n = vc.new_zeros(batch, heads, qc.shape[-1])  # (B, H, d)
    m = vc.new_zeros(batch, heads)  # (B, H)
    states_C, states_n, states_m = [], [], []
    for c in range(chunks):
        states_C.append(C), states_n.append(n), states_m.append(m)
        m_new = torch.maximum(b[:, :, c, -1] + m, a_max[:, :, c])  # (B, H)
        old, new = (b[:, :, c, -1] + m - m_new).exp(), (a_max[:, :, c] - m_new).exp()  # (B, H) each, <= 1
        C = old[..., None, None] * C + new[..., None, None] * local_C[:, :, c]
        n = old[..., None] * n + new[..., None] * local_n[:, :, c]
        m = m_new
    C_in, n_in, m_in = torch.stack(states_C, 2), torch.stack(states_n, 2), torch.stack(states_m, 2)

    # 3. every output at once: the entering state's part plus the masked intra-chunk part, one max m_i
    inter = b + m_in.unsqueeze(-1)  # (B, H, nC, C): log scale of the entering state at i
    m_i = torch.maximum(inter, log_w_max)  # (B, H, nC, C)
    weights = (log_w - m_i.unsqueeze(-1)).exp()  # (B, H, nC, C, C), zero above the diagonal
    scores = (qc @ kc.transpose(-1, -2)) * weights  # (B, H, nC, C, C)
    inter_w = (inter - m_i).exp().unsqueeze(-1)  # (B, H, nC, C, 1)
    # the entering state is read in its own precision (read_state: no bf16 rounding of it under autocast)
    num = scores @ vc + inter_w * read_state(qc, C_in)  # (B, H, nC, C, P)
    qn = scores.sum(-1, keepdim=True) + inter_w * read_state(qc, n_in.unsqueeze(-1))  # (B, H, nC, C, 1)
    h = num / (torch.maximum(qn.abs(), (-m_i).exp().unsqueeze(-1)) + EPS)  # (B, H, nC, C, P)
    return h.permute(0, 2, 3, 1, 4).reshape(batch, chunks * size, heads, p)[:, :seq_len].to(v.dtype)


class MatrixLSTM(Mixer):
    """One mLSTM layer; see the module docstring."""

    def __init__(self, d_model: int, n_heads: int, forget_gate: str, short_conv: int, chunk_size: int) -> None:
        super().__init__()
        self.d_model, self.n_heads, self.chunk_size, self.forget_gate = d_model, n_heads, chunk_size, forget_gate
        self.d_head = d_model // n_heads
        self.conv = ShortConv(d_model, short_conv) if short_conv else None
        self.qk = nn.Linear(d_model, 2 * d_model, bias=False)  # from the conv's output
        self.vo = nn.Linear(d_model, 2 * d_model, bias=False)  # value and output gate, from x
        self.gates = nn.Linear(d_model, 2 * n_heads)  # i~ and f~ per head
        with torch.no_grad():  # xLSTM's initialisation: forget gates open (bias 3..6), input gates near 0
            self.gates.weight.zero_()
            self.gates.bias[:n_heads].normal_(0.0, 0.1)
            self.gates.bias[n_heads:] = torch.linspace(3.0, 6.0, n_heads)
        self.head_norm = nn.LayerNorm(self.d_head)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        batch, seq_len, _ = x.shape
        c = F.silu(self.conv(x)) if self.conv is not None else x
        q, k = self.qk(c).view(batch, seq_len, 2, self.n_heads, self.d_head).unbind(2)  # (B, T, H, d) each
        v, o = self.vo(x).split(self.d_model, dim=-1)  # (B, T, D) each
        v = v.view(batch, seq_len, self.n_heads, self.d_head)  # (B, T, H, d)
        i_pre, f_pre = self.gates(x).float().split(self.n_heads, dim=-1)  # (B, T, H) each, gates in fp32
        k = k / math.sqrt(self.d_head)
        if self.path == "reference":
            h = mlstm_reference(q, k, v, i_pre, f_pre, self.forget_gate)
        else:
            h = mlstm_chunked(q, k, v, i_pre, f_pre, self.forget_gate, chunk_size=self.chunk_size)
        h = self.head_norm(h).reshape(batch, seq_len, self.d_model)  # (B, T, D)
        return self.out(torch.sigmoid(o) * h)

    def state_size(self, seq_len: int) -> int:
        conv = self.conv.state_size() if self.conv is not None else 0
        return self.n_heads * (self.d_head * self.d_head + self.d_head + 1) + conv

    def flops(self, batch_size: int, seq_len: int) -> int:
        tokens = batch_size * seq_len
        projections = (
            linear_flops(tokens, self.d_model, 4 * self.d_model)
            + linear_flops(tokens, self.d_model, 2 * self.n_heads)
            + linear_flops(tokens, self.d_model, self.d_model)
        )
        conv = self.conv.flops(batch_size, seq_len) if self.conv is not None else 0
        return projections + conv + self.memory_flops(batch_size, seq_len)

    def memory_flops(self, batch_size: int, seq_len: int) -> int:
        # the memory: update v k^T and read-out C q (2*d*d MACs), n . q (d MACs), per head and token
        return 2 * batch_size * seq_len * self.n_heads * (2 * self.d_head * self.d_head + self.d_head)


@register_model("mlstm", order=70)
class MLSTMModel(MemoryModel):
    """Params: `n_heads`, `forget_gate` ("sigmoid" or "exp"), `short_conv` (4, as xLSTM's mLSTM block;
    0 = off) and `chunk_size` of the fast path."""

    memory_mechanism = "matrix memory per head with exponential input gates and a max-state stabiliser (xLSTM)"
    cost_class = "O(n)"
    has_reference_path = True

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, *, n_heads: int = 4,
                 forget_gate: str = "sigmoid", short_conv: int = 4, chunk_size: int = 64, mlp_ratio: int = 4) -> None:
        check_choice("forget_gate", forget_gate, FORGET_GATES)
        check_heads(d_model, n_heads, rope=False)
        memory = functools.partial(MatrixLSTM, d_model, n_heads, forget_gate, short_conv, chunk_size)
        super().__init__(vocab_size, d_model, n_layers, lambda i: memory(), mlp_ratio=mlp_ratio)
