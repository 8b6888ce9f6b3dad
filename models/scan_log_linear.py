"""Log-linear attention (Guo, Yang, Goel, Xing, Dao & Kim, 2025) over the decayed scan of `models.scan`, two ways.

Linear attention and Mamba-2 keep one state per head for the whole prefix. Log-linear attention splits the prefix
0..t-1 of query t into O(log t) buckets, a Fenwick tree's: one bucket per set bit of t, the lower bits holding the
nearer tokens. Key j <= t falls in bucket (level)

    level(t, j) = 0 if j = t, else bit_length(t XOR j)              # 1 + the highest bit where t and j differ

so level l >= 1 holds the 2^(l-1) tokens just before t with its lower l - 1 bits cleared (when bit l - 1 of t is
set; otherwise it is empty). Each level keeps its own state and the query weighs them with its own data-dependent
lambda_t^(l) >= 0:

    S_t^(l) = sum_{j in level l of t} exp(L_t - L_j) k_j v_j^T      L_t = log a_1 + ... + log a_t  (the Mamba-2 decay)
    y_t     = sum_l lambda_t^(l) S_t^(l)T q_t                       # (P,)

Worked example (t = 6 = 0b110): level 0 is token 6, level 1 is empty (bit 0 of 6 is clear), level 2 holds
tokens 4 and 5, level 3 holds tokens 0..3. With every lambda = 1 it is the decayed scan `models.scan.scan_reference`.

As a masked matrix (the paper's form): Y = (Q K^T (.) M^S (.) M^H) V with M^S_tj = exp(L_t - L_j) and
M^H_tj = lambda_t^(level(t, j)) for j <= t. The recurrence carries one state per level (a Fenwick tree's carry
on each new token, `log_linear_reference`); the chunked form takes the levels inside a chunk from M^H directly and
runs the same carry over whole chunks (`log_linear_chunked`).

Shapes (time on dim 1, as in the mixers): q, k (B, T, H, N), v (B, T, H, P), log_decay (B, T, H) <= 0,
level_weights (B, T, H, L) >= 0 with L >= levels(T) (more are ignored). Output (B, T, H, P). A sequence of T tokens
uses levels(T) = bit_length(T - 1) + 1 states per head: 1 at T = 1, 7 at T = 64, 11 at T = 1024.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from membench.checks import ConfigError, check_int
from membench.models.scan import carry_dtype, read_state, split_chunks


def levels(seq_len: int) -> int:
    """Fenwick levels (states per head) that a sequence of `seq_len` tokens uses.

        >>> [levels(t) for t in (1, 2, 3, 4, 5, 64, 65, 1024)]
        [1, 2, 3, 3, 4, 7, 8, 11]
    """
    return (seq_len - 1).bit_length() + 1


def level_of(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """bit_length(query XOR key) for int64 positions, broadcast: the level of key j for query t (j <= t).

        >>> level_of(torch.tensor(6), torch.arange(7)).tolist()
        [3, 3, 3, 3, 2, 2, 0]
    """
    differ = torch.bitwise_xor(query, key)
    powers = 2 ** torch.arange(63, device=differ.device)  # bit_length(x) = the number of powers of two <= x
    return (differ.unsqueeze(-1) >= powers).sum(-1)


def check_chunk_size(chunk_size: object) -> int:
    """The chunked form's chunks start at multiples of a power of two: anything else is a one-line error."""
    check_int("chunk_size", chunk_size)
    if chunk_size & (chunk_size - 1):
        raise ConfigError(f"chunk_size of log-linear attention must be a power of two (16, 32, 64, ...), "
                          f"got {chunk_size}")
    return chunk_size


def log_linear_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor,
                         level_weights: torch.Tensor) -> torch.Tensor:
    """One token at a time, one state per level: readable, slow, the ground truth.

    Token t (from 0) first carries: with b the number of trailing zeros of t, the buckets of t - 1 at levels
    0..b together are the tokens t - 2^b .. t - 1, which is level b + 1 of t; they merge there and levels 0..b
    empty. Then every state decays by a_t, token t is written at level 0 and the levels are read:

        S^(b+1) <- S^(0) + ... + S^(b),   S^(0..b) <- 0         # the carry (t > 0)
        S^(l) <- a_t S^(l);   S^(0) <- k_t v_t^T;   y_t = sum_l lambda_t^(l) S^(l)T q_t
    """
    batch, seq_len, heads, n = k.shape
    count = levels(seq_len)
    state = v.new_zeros(batch, heads, count, n, v.shape[-1], dtype=carry_dtype(v))  # (B, H, L, N, P)
    weights = level_weights[..., :count].to(state.dtype)  # (B, T, H, L)
    outputs = []
    steps = zip(q.unbind(1), k.unbind(1), v.unbind(1), log_decay.exp().unbind(1), weights.unbind(1))
    for t, (q_t, k_t, v_t, a_t, lambda_t) in enumerate(steps):
        if t > 0:
            b = (t & -t).bit_length() - 1  # trailing zeros of t
            merged = state[:, :, :b + 1].sum(2, keepdim=True)  # (B, H, 1, N, P)
            state = torch.cat([torch.zeros_like(state[:, :, :b + 1]), merged, state[:, :, b + 2:]], dim=2)
        write = (k_t.unsqueeze(-1) @ v_t.unsqueeze(-2)).unsqueeze(2)  # (B, H, N, 1) @ (B, H, 1, P) -> (B, H, 1, N, P)
        state = torch.cat([write.to(state.dtype), a_t[..., None, None, None] * state[:, :, 1:]], dim=2)
        read = read_state(q_t[:, :, None, None, :], state).squeeze(-2)  # (B, H, 1, 1, N) @ (B, H, L, N, P) -> .., L, P
        outputs.append((lambda_t.unsqueeze(-1) * read).sum(2))  # (B, H, P)
    return torch.stack(outputs, dim=1).to(v.dtype)  # (B, T, H, P)


def log_linear_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor,
                       level_weights: torch.Tensor, chunk_size: int = 64) -> torch.Tensor:
    """The output of `log_linear_reference` with matmuls inside chunks of C = 2^c tokens and a loop over the T / C
    chunks only.

    Chunks start at multiples of C, so two tokens of one chunk differ in their low c bits only: their levels are
    0..c, and M^H inside a chunk is the (C, C) pattern level_of(i, j) filled with each query's lambdas. Two tokens
    of chunks e < f differ above bit c: level(i, j) = c + bit_length(f XOR e), the Fenwick level of chunk e seen
    from chunk f. So, with L_i the cumulative log-decay from the chunk's start to i and U_f^(m) the chunk-level-m
    bucket of chunk f decayed to f's start:

        y_i = sum_{j <= i in f} (q_i . k_j) exp(L_i - L_j) lambda_i^(level(i, j)) v_j          # (1) inside
              + sum_{m >= 1} lambda_i^(c + m) (exp(L_i) q_i)^T U_f^(m)                          # (4) before

    and U is the reference's carry over whole chunks (3), each chunk adding its own keys decayed to its end (2):
    with b the trailing zeros of f, U_f^(b+1) = local_{f-1} + g_{f-1} (U_{f-1}^(1) + ... + U_{f-1}^(b)), the
    levels below emptied and those above decayed by g_{f-1} = exp(L_last of f - 1). Only causal differences of
    log-decays are exponentiated (every factor in [0, 1]). C is a power of two (64 by default; shorter sequences
    use the next power of two >= T); the tail is zero-padded (zero keys and values add nothing).
    """
    check_chunk_size(chunk_size)
    batch, seq_len, heads, p = v.shape
    size = min(chunk_size, 1 << (seq_len - 1).bit_length())
    pad = -seq_len % size
    chunks = (seq_len + pad) // size
    within = levels(size)  # levels 0..c inside a chunk
    count = within + levels(chunks) - 1  # and c + 1 .. c + bit_length(nC - 1) across chunks
    weights = level_weights[..., :count]
    weights = F.pad(weights, (0, count - weights.shape[-1]))  # padded queries may reach a level T itself does not
    qc, kc, vc, lam = (split_chunks(x, size) for x in (q, k, v, weights))  # lam (B, H, nC, C, count)
    log_a = F.pad(log_decay.to(carry_dtype(log_decay)), (0, 0, 0, pad))  # (B, T', H)
    cum = log_a.view(batch, chunks, size, heads).permute(0, 3, 1, 2).cumsum(-1)  # (B, H, nC, C): L_i

    # 1. inside each chunk: q_i . k_j, decayed, weighted by lambda_i at level(i, j), j <= i
    pos = torch.arange(size, device=v.device)
    inner = level_of(pos[:, None], pos[None, :]).expand(*lam.shape[:3], size, size)  # (B, H, nC, C, C)
    hierarchy = lam[..., :within].gather(-1, inner).tril()  # (B, H, nC, C, C): M^H
    decay = (cum.unsqueeze(-1) - cum.unsqueeze(-2)).clamp(max=0).exp()  # (B, H, nC, C, C): M^S (above: unused)
    scores = (qc @ kc.transpose(-1, -2)) * (decay * hierarchy).to(qc.dtype)  # (B, H, nC, C, C)
    out = (scores @ vc).to(carry_dtype(v))  # (B, H, nC, C, P)
    if chunks == 1:
        return out.permute(0, 2, 3, 1, 4).reshape(batch, size, heads, p)[:, :seq_len].to(v.dtype)

    # 2. the keys of each chunk, decayed to its end: local_f = sum_j exp(L_last - L_j) k_j v_j^T
    k_out = kc * (cum[..., -1:] - cum).exp().unsqueeze(-1).to(kc.dtype)  # (B, H, nC, C, N)
    local = (k_out.transpose(-1, -2) @ vc).to(carry_dtype(v))  # (B, H, nC, N, P)

    # 3. the Fenwick carry over chunks: the buckets U^(1..M) entering each chunk
    chunk_decay = cum[..., -1].exp()[..., None, None]  # (B, H, nC, 1, 1)
    zero = torch.zeros_like(local[:, :, 0])  # (B, H, N, P)
    buckets = [zero] * (count - within)  # U^(m) at index m - 1
    entering = [torch.stack(buckets, dim=2)]  # chunk 0: nothing before it
    for f, (g, added) in enumerate(zip(chunk_decay.unbind(2)[:-1], local.unbind(2)[:-1]), start=1):
        b = (f & -f).bit_length() - 1  # trailing zeros of f
        merged = added + g * sum(buckets[:b], zero)
        buckets = [zero] * b + [merged] + [g * u for u in buckets[b + 1:]]
        entering.append(torch.stack(buckets, dim=2))  # (B, H, M, N, P)
    states = torch.stack(entering, dim=2)  # (B, H, nC, M, N, P)

    # 4. the buckets read out at each position, the queries decayed from the chunk's start, weighted per level
    q_in = (qc * cum.exp().unsqueeze(-1).to(qc.dtype)).unsqueeze(3)  # (B, H, nC, 1, C, N)
    read = read_state(q_in, states)  # (B, H, nC, M, C, P)
    across = (lam[..., within:].transpose(-1, -2).unsqueeze(-1).to(read.dtype) * read).sum(3)  # (B, H, nC, C, P)
    out = out + across
    return out.permute(0, 2, 3, 1, 4).reshape(batch, chunks * size, heads, p)[:, :seq_len].to(v.dtype)
