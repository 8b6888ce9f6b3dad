"""The delta rule with a decay per key channel (Kimi Delta Attention's recurrence), two ways.

For every batch element and head, a state S (N, P) is carried along time:

    S_t = (I - beta_t k_t k_t^T) Diag(alpha_t) S_{t-1} + beta_t k_t v_t^T     alpha_t = exp(log_decay_t) in (0, 1]^N
        = Diag(alpha_t) S_{t-1} + k_t u_t^T,   u_t = beta_t (v_t - (Diag(alpha_t) S_{t-1})^T k_t)
    y_t = S_t^T q_t                                                          # (P,)

It is gated_deltanet's rule (models.scan.delta_rule_reference) with the scalar decay a_t of a head replaced
by a vector: every key channel (every row of S) forgets at its own rate. With alpha_t = a_t 1 it is that rule.

Worked example (N = 2, P = 1, alpha = (1/2, 1) at every step): write v = 1 under k = e1, then v = 5 under
k = e2, then nothing (beta = 1, 1, 0). S = (1, 0), then (1/2, 5), then (1/4, 5): the first row forgets by
halves while the second keeps its value, so q = e1 reads 1, 1/2, 1/4 and q = e2 reads 0, 5, 5.

Shapes (time on dim 1, as in models.scan): q, k (B, T, H, N); v (B, T, H, P); beta (B, T, H) in [0, 2];
log_decay (B, T, H, N) in [MIN_LOG_DECAY, 0] (the chunked form needs the floor, see `decayed_scores`).
Output (B, T, H, P). `vector_decay_delta_reference` loops over tokens (the ground truth);
`vector_decay_delta_chunked` over chunks of `chunk_size` tokens, with matmuls inside them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from membench.checks import check_int
from membench.models.scan import carry_dtype, delta_rule_step

MIN_LOG_DECAY = -5.0  # the least log-decay of a token and channel the chunked form takes (kda's gate keeps to it)
SUB_CHUNK = 16  # rows of a secondary chunk in `decayed_scores`: 15 tokens of MIN_LOG_DECAY stay below e^88
MAX_EXPONENT = -SUB_CHUNK * MIN_LOG_DECAY  # 80: the clamp of the exponents that are masked anyway


def vector_decay_delta_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                                 log_decay: torch.Tensor) -> torch.Tensor:
    """The recurrence one token at a time: decay each row of the state by its alpha, then take gated_deltanet's
    delta-rule step (`models.scan.delta_rule_step`, undecayed). Readable, slow, the ground truth. The state
    (B, H, N, P) is carried in float32 at least; the output is in v's dtype."""
    dtype = carry_dtype(v)
    batch, _, heads, n = k.shape
    q, k, v, beta = q.to(dtype), k.to(dtype), v.to(dtype), beta.to(dtype)
    state = v.new_zeros(batch, heads, n, v.shape[-1])  # (B, H, N, P)
    outputs = []
    for q_t, k_t, v_t, beta_t, alpha_t in zip(q.unbind(1), k.unbind(1), v.unbind(1), beta.unbind(1),
                                              log_decay.to(dtype).exp().unbind(1)):
        state = alpha_t.unsqueeze(-1) * state  # (B, H, N, 1) * (B, H, N, P): Diag(alpha_t) S_{t-1}
        state, y_t = delta_rule_step(state, q_t, k_t, v_t, beta_t, None)
        outputs.append(y_t)
    return torch.stack(outputs, dim=1).to(v.dtype)  # (B, T, H, P)


def decayed_scores(x: torch.Tensor, k: torch.Tensor, cum: torch.Tensor) -> torch.Tensor:
    """M_ij = sum_c x_ic k_jc exp(L_ic - L_jc) for j <= i, 0 above: the dot products of a chunk's rows x with its
    keys k through the per-channel decay from j to i. x (..., C, N), k and cum (..., C, N), cum = L the
    cumulative log-decay (non-increasing along C, by at most -MIN_LOG_DECAY a token); x may carry extra leading
    dims (queries and keys at once).

    exp(L_i) and exp(-L_j) apart overflow once a chunk's decay passes e^-88, so (GLA's secondary chunking) the
    rows are cut into sub-chunks of s = gcd(C, SUB_CHUNK) rows, each with its first row r as the reference:
    exp(L_i - L_j) = exp(L_i - L_r) exp(L_r - L_j), one matmul per sub-chunk. The first factor is <= 1; the
    second is <= 1 for keys before the sub-chunk and at most exp(-(s - 1) MIN_LOG_DECAY) <= e^75 for keys
    inside it (the bound that keeps float32 finite); the keys after row i, masked, are clamped to MAX_EXPONENT.

        >>> x = torch.ones(1, 3, 1); cum = torch.log(torch.tensor([[1.0], [0.5], [0.25]]))
        >>> decayed_scores(x, x, cum)[0]                          # exp(L_i - L_j), j <= i
        tensor([[1.0000, 0.0000, 0.0000],
                [0.5000, 1.0000, 0.0000],
                [0.2500, 0.5000, 1.0000]])
    """
    size = k.shape[-2]
    sub = math.gcd(size, SUB_CHUNK)
    xs, cs = x.unflatten(-2, (size // sub, sub)), cum.unflatten(-2, (size // sub, sub))  # (..., n, s, N) each
    ref = cs[..., :1, :]  # (..., n, 1, N): L at each sub-chunk's first row
    x_in = xs * (cs - ref).exp()  # (..., n, s, N): rows decayed from their reference
    k_to = k.unsqueeze(-3) * (ref - cum.unsqueeze(-3)).clamp(max=MAX_EXPONENT).exp()  # (..., n, C, N)
    return (x_in @ k_to.mT).flatten(-3, -2).tril()  # (..., n, s, C) -> (..., C, C), zero above the diagonal


def vector_decay_delta_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                               log_decay: torch.Tensor, chunk_size: int = 32) -> torch.Tensor:
    """The same output as `vector_decay_delta_reference`, with matmuls inside chunks of C tokens and a loop over
    the T / C chunks only: the WY / UT-transform form of models.scan.delta_rule_chunked, its decay a vector.

    Inside a chunk entered with state S_0, with L_i (N,) the cumulative log-decay from the chunk's start to i,
    g_i = exp(L_i) and the decayed dot products M(x, k)_ij = sum_c x_ic k_jc exp(L_ic - L_jc) (`decayed_scores`),
    the state after i is S_i = Diag(g_i) S_0 + sum_{j <= i} Diag(exp(L_i - L_j)) k_j u_j^T, so the writes u solve

        u_i + sum_{j < i} A_ij u_j = beta_i v_i - beta_i (g_i k_i)^T S_0,     A_ij = beta_i M(k, k)_ij

    i.e. U = U' - W S_0 with (I + A) [U' | W] = [beta v | beta g k], and then, with K~_j = exp(L_C - L_j) k_j
    and P = M(q, k):

        U_c = U' - W S_0              S_C = Diag(g_C) S_0 + K~^T U_c              Y_c = P U_c + (g q) S_0

    Four stages, numbered in the code: (1) the decayed scores of each chunk, (2) the UT transform, (3) the loop
    over chunks, (4) the outputs. Every exponent is a causal difference of log-decays (factors in [0, 1]). T need
    not be a multiple of C: the tail is padded with beta = 0 and log_decay = 0, which leave the state as it is.
    Gradients come from autograd; under autocast everything runs in float32 at least (the output in v's dtype).
    """
    check_int("chunk_size", chunk_size)
    with torch.autocast(v.device.type, enabled=False):
        dtype = carry_dtype(v)
        batch, seq_len, heads, n = k.shape
        size = min(chunk_size, seq_len)
        pad = -seq_len % size
        chunks = (seq_len + pad) // size

        def to_chunks(x: torch.Tensor) -> torch.Tensor:  # (B, T, H, d) -> (nC, Z, C, d), Z = B H, zero-padded
            x = F.pad(x.to(dtype), (0, 0, 0, 0, 0, pad))
            x = x.view(batch, chunks, size, heads, x.shape[-1]).permute(1, 0, 3, 2, 4)  # (nC, B, H, C, d)
            return x.reshape(chunks, batch * heads, size, x.shape[-1])

        qc, kc, vc = to_chunks(q), to_chunks(k), to_chunks(v)  # (nC, Z, C, N / N / P)
        bc = to_chunks(beta.unsqueeze(-1))  # (nC, Z, C, 1)
        cum = to_chunks(log_decay).cumsum(-2)  # (nC, Z, C, N): L

        # 1. the decayed scores of each chunk: M(q, k) and M(k, k) in one pass
        scores, gram = decayed_scores(torch.stack([qc, kc]), kc, cum).unbind(0)  # (nC, Z, C, C) each
        # 2. the UT transform: (I + A) [U' | W] = [beta v | beta g k]
        g = cum.exp()  # (nC, Z, C, N)
        unit_lower = torch.eye(size, dtype=dtype, device=v.device) + (bc * gram).tril(-1)  # (nC, Z, C, C): I + A
        rhs = torch.cat([bc * vc, bc * g * kc], dim=-1)  # (nC, Z, C, P + N)
        u_w = torch.linalg.solve_triangular(unit_lower, rhs, upper=False, unitriangular=True)
        u_prime, w = u_w.split([vc.shape[-1], n], dim=-1)  # (nC, Z, C, P), (nC, Z, C, N)
        # 3. the only loop: the chunk entered with S_0 writes U = U' - W S_0 and hands on Diag(g_C) S_0 + K~^T U
        k_out = kc * (cum[..., -1:, :] - cum).exp()  # (nC, Z, C, N): K~
        g_last = g[..., -1, :].unsqueeze(-1)  # (nC, Z, N, 1)
        state = v.new_zeros(batch * heads, n, vc.shape[-1], dtype=dtype)  # (Z, N, P)
        entering, written = [], []
        for u_prime_c, w_c, g_last_c, k_out_c in zip(u_prime.unbind(0), w.unbind(0), g_last.unbind(0),
                                                    k_out.unbind(0)):  # unbind, not [c]: a faster backward
            entering.append(state)
            u = torch.baddbmm(u_prime_c, w_c, state, alpha=-1)  # (Z, C, P) - (Z, C, N) @ (Z, N, P)
            written.append(u)
            state = torch.baddbmm(g_last_c * state, k_out_c.mT, u)  # (Z, N, P) + (Z, N, C) @ (Z, C, P)
        # 4. outputs: the chunk's own writes through P, plus the read of the state entering it
        out = scores @ torch.stack(written) + (g * qc) @ torch.stack(entering)  # (nC, Z, C, P)
        out = out.view(chunks, batch, heads, size, -1).permute(1, 0, 3, 2, 4)  # (B, nC, C, H, P)
        out = out.reshape(batch, chunks * size, heads, -1)[:, :seq_len]  # (B, T, H, P)
        return out.to(v.dtype)
