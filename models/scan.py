"""The decayed outer-product scan shared by linear attention and the selective SSM, two ways.

For every batch element and head, a state matrix S (N, P) is carried along time:

    S_t = a_t * S_{t-1} + k_t v_t^T          a_t = exp(log_decay_t) in (0, 1], S_0 = 0
    y_t = S_t^T q_t                          # (P,)

Linear attention is the case a_t = 1 (no decay); a Mamba-2 / SSD selective SSM is the case
a_t = exp(dt_t * A_h) with q = C_t, k = B_t, v = dt_t x_t. Unrolled, the output is a masked
quadratic form, which is what the chunked path uses inside each chunk:

    y_i = sum_{j <= i} exp(L_i - L_j) (q_i . k_j) v_j       L_i = log_decay_1 + ... + log_decay_i

Worked example (N = P = 1, no decay): k = v = q = 1 at every step gives S_t = t and y_t = t.

Shapes (time on dim 1, as in the mixers): q, k (B, T, H, N), where H may be 1 for q and k shared
by all heads; v (B, T, H, P); log_decay (B, T, H) with values <= 0, or None for no decay.
Output (B, T, H, P). Both paths cost O(T) time; `scan_reference` loops over tokens,
`scan_chunked` over chunks of `chunk_size` tokens only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from membench.checks import check_int


def carry_dtype(x: torch.Tensor) -> torch.dtype:
    """The state is carried in float32 at least (under bf16 autocast the matmuls feeding it are bf16)."""
    return torch.promote_types(x.dtype, torch.float32)


def read_state(q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """The readout q @ S in the state's precision: (..., M, N) @ (..., N, P) -> (..., M, P), float32 at least.

    Autocast is off for it: under bf16 autocast the matmul would round the float32 state to bf16 first
    (8 bits of mantissa), and the state of linear attention sums thousands of terms at long lengths (its
    normaliser z is a sum over every earlier token), so the readout keeps float32.
    """
    with torch.autocast(q.device.type, enabled=False):
        return q.to(state.dtype) @ state


def scan_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor | None = None
) -> torch.Tensor:
    """The recurrence itself, one token at a time: readable, slow, the ground truth."""
    batch, seq_len, heads, n = k.shape
    p = v.shape[-1]
    decay = torch.ones(batch, seq_len, heads, device=v.device) if log_decay is None else log_decay.exp()
    state = v.new_zeros(batch, heads, n, p, dtype=carry_dtype(v))  # (B, H, N, P)
    outputs = []
    for q_t, k_t, v_t, a_t in zip(q.unbind(1), k.unbind(1), v.unbind(1), decay.unbind(1)):
        update = k_t.unsqueeze(-1) @ v_t.unsqueeze(-2)  # (B, H, N, 1) @ (B, H, 1, P) -> (B, H, N, P)
        state = a_t[..., None, None] * state + update  # (B, H, N, P)
        outputs.append(read_state(q_t.unsqueeze(-2), state).squeeze(-2))  # (B, H, 1, N) @ (B, H, N, P)
    return torch.stack(outputs, dim=1)  # (B, T, H, P)


def scan_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> torch.Tensor:
    """The same output, with matmuls: a masked quadratic form inside chunks of C tokens and the state
    carried from chunk to chunk (a Python loop over the T / C chunks, or a cumulative sum when there
    is no decay; no loop over tokens).

    With L the within-chunk cumulative log-decay (L_i <= L_j for i >= j), for position i of chunk c:

        y_i   = sum_{j <= i in c} exp(L_i - L_j) (q_i . k_j) v_j  +  exp(L_i) S_{c-1}^T q_i
        S_c   = exp(L_last) S_{c-1} + sum_{j in c} exp(L_last - L_j) k_j v_j^T

    Only differences L_i - L_j with j <= i are exponentiated (the rest are masked to -inf first),
    so every factor lies in [0, 1] and nothing overflows. T need not be a multiple of C: the tail is
    zero-padded (zero keys and values add nothing to the state).

    Four stages, numbered in the code as in mamba's ssd_minimal.py: (1) the output of each chunk from its
    own tokens, (2) the state each chunk adds, (3) the recurrence across chunks, (4) the state read out.
    """
    check_int("chunk_size", chunk_size)
    batch, seq_len, heads, p = v.shape
    size = min(chunk_size, seq_len)
    pad = -seq_len % size
    chunks = (seq_len + pad) // size

    def to_chunks(x: torch.Tensor) -> torch.Tensor:  # (B, T, h, d) -> (B, h, nC, C, d)
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        return x.view(x.shape[0], chunks, size, x.shape[2], x.shape[3]).permute(0, 3, 1, 2, 4)

    qc, kc, vc = to_chunks(q), to_chunks(k), to_chunks(v)  # (B, h, nC, C, N), (B, h, nC, C, N), (B, H, nC, C, P)
    causal = torch.ones(size, size, dtype=torch.bool, device=v.device).tril()  # (C, C): j <= i
    if log_decay is not None:  # L: the cumulative log-decay within each chunk
        log_a = F.pad(log_decay.to(carry_dtype(log_decay)), (0, 0, 0, pad))  # (B, T', H)
        cum = log_a.view(batch, chunks, size, heads).permute(0, 3, 1, 2).cumsum(-1)  # (B, H, nC, C)

    # 1. the output of each chunk from its own tokens (the diagonal blocks): masked, decayed q_i . k_j
    scores = qc @ kc.transpose(-1, -2)  # (B, h, nC, C, C)
    if log_decay is None:
        scores = scores.masked_fill(~causal, 0.0)
    else:
        diff = (cum.unsqueeze(-1) - cum.unsqueeze(-2)).masked_fill(~causal, float("-inf"))  # (B, H, nC, C, C)
        scores = scores * diff.exp().to(scores.dtype)
    intra = scores @ vc  # (B, H, nC, C, P)

    # 2. the state each chunk adds, its keys decayed to the chunk's end: sum_j exp(L_last - L_j) k_j v_j^T
    k_out = kc if log_decay is None else kc * (cum[..., -1:] - cum).exp().unsqueeze(-1).to(kc.dtype)  # (B, H, nC, C, N)
    local = (k_out.transpose(-1, -2) @ vc).to(carry_dtype(v))  # (B, H, nC, N, P)

    # 3. the state entering each chunk, carried across chunks: S_c = exp(L_last) S_{c-1} + local_c
    if log_decay is None:  # undecayed: the sum of the chunks before it
        entering = torch.cat([torch.zeros_like(local[:, :, :1]), local[:, :, :-1]], dim=2).cumsum(2)
    else:
        chunk_decay = cum[..., -1].exp()  # (B, H, nC)
        state = torch.zeros_like(local[:, :, 0])  # (B, H, N, P)
        states = []
        for c in range(chunks):
            states.append(state)
            state = chunk_decay[:, :, c, None, None] * state + local[:, :, c]
        entering = torch.stack(states, dim=2)  # (B, H, nC, N, P)

    # 4. the entering state read out at each position, its queries decayed from the chunk's start: exp(L_i) q_i
    q_in = qc if log_decay is None else qc * cum.exp().unsqueeze(-1).to(qc.dtype)  # (B, H, nC, C, N)
    out = intra + read_state(q_in, entering)  # (B, H, nC, C, P), float32 at least
    return out.permute(0, 2, 3, 1, 4).reshape(batch, chunks * size, heads, p)[:, :seq_len]  # (B, T, H, P)
