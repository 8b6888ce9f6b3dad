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
log_decay (B, T, H, N) in [MIN_LOG_DECAY, 0] (the chunked form needs the floor, see `_chunk_factors`).
Output (B, T, H, P). `vector_decay_delta_reference` loops over tokens (the ground truth);
`vector_decay_delta_chunked` over chunks of at most MAX_CHUNK tokens, with matmuls inside them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from membench.checks import check_int
from membench.models.scan import _scatter, carry_dtype, delta_rule_step

MIN_LOG_DECAY = -5.0  # the least log-decay of a token and channel the chunked form takes (kda's gate keeps to it)
MAX_CHUNK = 16  # the longest chunk of the chunked form: 16 tokens at the floor decay by e^-80, within float range
CPU_BLOCK_TOKENS = 256  # tokens per block of chunks on the CPU (see `_chunks_per_block`)


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


def vector_decay_delta_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                               log_decay: torch.Tensor, chunk_size: int = MAX_CHUNK) -> torch.Tensor:
    """The same output as `vector_decay_delta_reference`, with matmuls inside chunks of C <= MAX_CHUNK tokens
    and a loop over the T / C chunks only: the WY / UT-transform form of models.scan.delta_rule_chunked, its
    decay a vector.

    Inside a chunk entered with state S_0, with L_i (N,) the cumulative log-decay from the chunk's start to i,
    g_i = exp(L_i), K^_j = exp(-L_j) k_j (`_chunk_factors`) and so the decayed dot products
    M(x, k)_ij = sum_c x_ic k_jc exp(L_ic - L_jc) = (g_i x_i) . K^_j, the state after i is
    S_i = Diag(g_i) S_0 + sum_{j <= i} Diag(exp(L_i - L_j)) k_j u_j^T, so the writes u solve

        u_i + sum_{j < i} A_ij u_j = beta_i v_i - beta_i (g_i k_i)^T S_0,     A_ij = beta_i M(k, k)_ij

    i.e. U = U' - W S_0 with (I + A) [U' | W] = [beta v | beta g k], and then, with K~_j = exp(L_C - L_j) k_j
    and P = M(q, k) (zero above the diagonal):

        U_c = U' - W S_0              S_C = Diag(g_C) S_0 + K~^T U_c              Y_c = P U_c + (g q) S_0

    Four stages, numbered in `_ChunkedVectorDecayDelta.forward`: (1) chunk the inputs, (2) the UT transform,
    (3) the loop over chunks, (4) the outputs. T need not be a multiple of C: the tail is padded with beta = 0
    and log_decay = 0, which leave the state as it is. beta may lie anywhere in [0, 2] (`allow_neg_eigval`):
    it enters only products and the unit triangular solve. The backward pass is written by hand
    (`_ChunkedVectorDecayDelta.backward`); under autocast everything runs in float32 at least (the output in
    v's dtype).
    """
    check_int("chunk_size", chunk_size, maximum=MAX_CHUNK)
    with torch.autocast(v.device.type, enabled=False):
        return _ChunkedVectorDecayDelta.apply(q, k, v, beta, log_decay, min(chunk_size, k.shape[1]))


class _Factors(NamedTuple):
    """A block of chunks' inputs decayed from and to each chunk's start, each (nb Z, ...) for the nb chunks of
    the block times the Z = B H sequences: the forward pass's, computed again by the backward pass."""

    g: torch.Tensor  # (nb Z, C, N): exp(L_i), the decay from the chunk's start to i
    grow: torch.Tensor  # (nb Z, C, N): exp(-L_j), back from j to the chunk's start
    g_last: torch.Tensor  # (nb Z, N, 1): g_C, over the whole chunk
    gqk: torch.Tensor  # (nb Z, 2C, N): [g q ; g k], the queries then the keys decayed from the chunk's start
    gkb: torch.Tensor  # (nb Z, C, N): beta g k
    k_grown: torch.Tensor  # (nb Z, C, N): K^ = exp(-L) k
    k_out: torch.Tensor  # (nb Z, C, N): K~ = g_C K^


def _chunk_factors(qk: torch.Tensor, bc: torch.Tensor, g: torch.Tensor) -> _Factors:
    """The `_Factors` of a block of chunks, from qk (nb Z, 2C, N) the queries then the keys of each chunk
    (`_to_chunks`), bc (nb Z, C, 1) and g = exp(L) (nb Z, C, N).

    The decay from token j to token i >= j of a chunk is exp(L_i - L_j) = g_i exp(-L_j), so the decayed dot
    products are one matmul of the rows decayed from the chunk's start and the keys grown back to it, (g x) K^T
    (GLA's chunkwise form). Apart, exp(L_i) and exp(-L_j) leave the float32 range (its exponent ends at about
    +-88) once a chunk decays past e^-88; log-decays >= MIN_LOG_DECAY and C <= MAX_CHUNK keep |L| <= 80:

        >>> f = _chunk_factors(torch.ones(1, 6, 1), torch.ones(1, 3, 1), torch.tensor([[[1.0], [0.5], [0.25]]]))
        >>> (f.gqk[:, 3:] @ f.k_grown.mT)[0].tril()               # exp(L_i - L_j), j <= i
        tensor([[1.0000, 0.0000, 0.0000],
                [0.5000, 1.0000, 0.0000],
                [0.2500, 0.5000, 1.0000]])
    """
    rows, size, n = g.shape
    grow = g.reciprocal()  # (nb Z, C, N)
    gqk = (qk.view(rows, 2, size, n) * g.unsqueeze(1)).view(rows, 2 * size, n)  # (nb Z, 2C, N)
    k_grown = qk[:, size:] * grow  # (nb Z, C, N)
    g_last = g[:, -1].unsqueeze(-1)  # (nb Z, N, 1)
    return _Factors(g, grow, g_last, gqk, bc * gqk[:, size:], k_grown, k_grown * g_last.mT)


def _chunks_per_block(device: torch.device, size: int, chunks: int) -> int:
    """How many chunks of `size` tokens `_ChunkedVectorDecayDelta` takes together: about CPU_BLOCK_TOKENS
    tokens on the CPU (with chunks of 16 on one thread, blocks of 64 to 512 tokens ran within 10 % of each other,
    one chunk a block 1.2-1.5x slower, all of them at once 1.3-1.6x slower), all of them elsewhere (fewer kernel
    launches)."""
    if device.type != "cpu":
        return chunks
    return max(1, min(chunks, CPU_BLOCK_TOKENS // size))


def _to_chunks(xs: list[torch.Tensor], size: int, dtype: torch.dtype) -> torch.Tensor:
    """xs, each (B, T, H, d), as one flat (nC B H, len(xs) C, d) tensor in `dtype`, chunk-major (chunk by
    chunk, B H rows each), the chunks of xs side by side along time (queries then keys: one matmul for both),
    the tail padded with zeros to whole chunks. One copy of each (models.scan._to_chunks's layout)."""
    batch, seq_len, heads, d = xs[0].shape
    pad = -seq_len % size
    chunks = (seq_len + pad) // size
    out = torch.empty(chunks, batch, heads, len(xs), size, d, dtype=dtype, device=xs[0].device)
    for j, x in enumerate(xs):
        x = F.pad(x, (0, 0, 0, 0, 0, pad)) if pad else x
        out[:, :, :, j].copy_(x.reshape(batch, chunks, size, heads, d).permute(1, 0, 3, 2, 4))  # (nC, B, H, C, d)
    return out.view(chunks * batch * heads, len(xs) * size, d)


class _ChunkedVectorDecayDelta(torch.autograd.Function):
    """`vector_decay_delta_chunked` with its backward pass derived by hand: models.scan._ChunkedDeltaRule's,
    its decays vectors. With T = (I + A)^-1 (so [U' | W] = T R, R = [beta v | beta g k]), given dY, in reverse
    chunk order (dS_C = 0 for the last chunk), with dS_C the gradient of the state a chunk hands on:

        dR_v = T^T dU = T^T P^T dY + (T^T K~) dS_C                 # (C, P), dU = P^T dY + K~ dS_C
        dS_0 = Diag(g_C) dS_C + (g q)^T dY - (beta g k)^T dR_v     # (N, P), handed to the chunk before

    and then, batched over chunks (U = U' - W S_0 folds the W and U' paths into one):

        dR_w = -dR_v S_0^T      dA = -strict_lower(dR_v U^T)      dP = lower(dY U^T)      dG = beta dA
        dv = beta dR_v          dbeta = v . dR_v + g k . dR_w + rowsum(dA o M(k, k))

    A decayed dot product M(x, k)_ij = (g_i x_i) . K^_j has the gradients dx = g o (dM K^) and
    dk = exp(-L) o (dM^T (g x)), and since L_i enters g_i with + and K^_i with -, its gradient in L is
    x o dx - k o dk. Sorting every gradient of q and k that way (rows of P and G, g q, beta g k: with g;
    keys of P and G, K~ = exp(L_C - L) k: with exp(-L)):

        dq = g o (dP K^ + dY S_0^T)       dk_x = g o (dG K^ + beta dR_w)
        dk_key = exp(-L) o (dP^T (g q) + dG^T (g k) + U (Diag(g_C) dS_C)^T)       dk = dk_x + dk_key
        dL = q o dq + k o (dk_x - dk_key),   dL_C += rowsum(S_C o dS_C) (the state handed on, through g_C and K~)

    and d log_decay is the reverse cumulative sum of dL along the chunk. The inputs are chunked once into flat
    chunk-major (nC B H, C, d) tensors (`_to_chunks`), so that a block of chunks (`_chunks_per_block`) is a
    slice of rows; the forward pass saves the chunked inputs, g, the decayed products [P ; M(k, k)], the states
    entering the chunks (and the last one), their writes U and the inverses T^T; the backward pass recomputes
    the element-wise `_Factors` block by block (cheaper than reading them back from memory).
    """

    @staticmethod
    def forward(ctx, q, k, v, beta, log_decay, size):
        dtype = carry_dtype(v)
        batch, seq_len, heads, n = k.shape
        p, rows = v.shape[-1], batch * heads  # Z = B H rows per chunk
        chunks = -(-seq_len // size)
        # 1. chunk the inputs; the decay from each chunk's start
        qk = _to_chunks([q, k], size, dtype)  # (nC Z, 2C, N)
        vc, bc = _to_chunks([v], size, dtype), _to_chunks([beta.unsqueeze(-1)], size, dtype)  # (nC Z, C, P / 1)
        g = _to_chunks([log_decay], size, dtype).cumsum_(1).exp_()  # (nC Z, C, N): g = exp(L)
        block = _chunks_per_block(v.device, size, chunks)

        states = v.new_empty((chunks + 1) * rows, n, p, dtype=dtype)  # (nC Z + Z, N, P): entering each chunk, last
        written = v.new_empty(chunks * rows, size, p, dtype=dtype)  # (nC Z, C, P): U
        inverses = v.new_empty(chunks * rows, size, size, dtype=dtype)  # (nC Z, C, C): T^T = (I + A)^-T
        products = v.new_empty(chunks * rows, 2 * size, size, dtype=dtype)  # (nC Z, 2C, C): [P ; M(k, k)]
        out = v.new_empty(batch, chunks * size, heads, p, dtype=dtype)  # (B, T', H, P): Y, T' = nC C
        eye = torch.eye(size, dtype=dtype, device=v.device)
        states[:rows] = 0
        for first in range(0, chunks, block):
            last = min(first + block, chunks)
            blk = slice(first * rows, last * rows)
            b_b = bc[blk]  # (nb Z, C, 1)
            f = _chunk_factors(qk[blk], b_b, g[blk])
            scores_gram = torch.bmm(f.gqk, f.k_grown.mT, out=products[blk])  # (nb Z, 2C, C): [P ; M(k, k)]
            scores, gram = scores_gram[:, :size].tril_(), scores_gram[:, size:]  # P zero above the diagonal
            # 2. the UT transform: (I + A) [U' | W] = [beta v | beta g k], via T^T solved as T^T (I + A)^T = I
            #    (the memory layout LAPACK wants; the solve reads only the strictly lower triangle of A)
            a = b_b * gram  # (nb Z, C, C): A (only its strictly lower triangle is read)
            torch.linalg.solve_triangular(a.mT, eye.expand(a.shape), upper=True, left=False, unitriangular=True,
                                          out=inverses[blk])
            inverse = inverses[blk].mT  # (nb Z, C, C): T
            u_prime, w = torch.bmm(inverse, b_b * vc[blk]), torch.bmm(inverse, f.gkb)  # (nb Z, C, P), (nb Z, C, N)
            # 3. the only loop: carry the state from chunk to chunk; the chunk entered with S_0 writes
            #    U = U' - W S_0 and hands on S_C = Diag(g_C) S_0 + K~^T U
            for c in range(first, last):
                i, now, after = slice((c - first) * rows, (c - first + 1) * rows), slice(c * rows, (c + 1) * rows), \
                    slice((c + 1) * rows, (c + 2) * rows)
                # (Z, C, P) - (Z, C, N) @ (Z, N, P)
                torch.baddbmm(u_prime[i], w[i], states[now], alpha=-1, out=written[now])
                # (Z, N, 1) * (Z, N, P) + (Z, N, C) @ (Z, C, P), in place (no allocation)
                torch.mul(f.g_last[i], states[now], out=states[after]).baddbmm_(f.k_out[i].mT, written[now])
            # 4. outputs: the chunk's own writes through P, plus the read of the state entering it
            y = torch.baddbmm(torch.bmm(f.gqk[:, :size], states[blk]), scores, written[blk])  # (nb Z, C, P)
            _scatter(y, out, first, last, size)
        ctx.save_for_backward(qk, vc, bc, g, states, written, inverses, products)
        ctx.layout = (batch, seq_len, heads, size, chunks, block, [x.dtype for x in (q, k, v, beta, log_decay)])
        return out[:, :seq_len].to(v.dtype)  # (B, T, H, P)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_out):
        qk, vc, bc, g, states, written, inverses, products = ctx.saved_tensors
        batch, seq_len, heads, size, chunks, block, dtypes = ctx.layout
        dtype, rows, n = states.dtype, batch * heads, qk.shape[-1]
        d_y = _to_chunks([d_out], size, dtype)  # (nC Z, C, P)
        grads = [states.new_empty(batch, chunks * size, heads, d) for d in (n, n, vc.shape[-1], 1, n)]
        d_handed = torch.empty_like(states[rows:])  # (nC Z, N, P): dS_C of each chunk
        d_handed[-rows:] = 0
        to_end = torch.ones(size, size, dtype=dtype, device=states.device).triu()  # (C, C): sums from i to the end
        with torch.autocast(d_out.device.type, enabled=False):
            for first in reversed(range(0, chunks, block)):
                last = min(first + block, chunks)
                blk = slice(first * rows, last * rows)
                b_b, v_b, d_yc = bc[blk], vc[blk], d_y[blk]  # (nb Z, C, 1 / P / P)
                s_b, u_b, inv_b = states[blk], written[blk], inverses[blk]  # S_0, U, T^T of the block's chunks
                f = _chunk_factors(qk[blk], b_b, g[blk])
                scores, gram = products[blk].split(size, dim=1)  # (nb Z, C, C) each: P, M(k, k)

                # the reverse loop: dR_v = T^T P^T dY + (T^T K~) dS_C, dS_0 = g_C dS_C + (g q)^T dY - R_w^T dR_v
                from_y = torch.bmm(inv_b, torch.bmm(scores.mT, d_yc))  # (nb Z, C, P): T^T P^T dY
                to_rv = torch.bmm(inv_b, f.k_out)  # (nb Z, C, N): T^T K~
                read_y = torch.bmm(f.gqk[:, :size].mT, d_yc)  # (nb Z, N, P): (g q)^T dY
                d_rv = torch.empty_like(u_b)  # (nb Z, C, P): dR_v
                for c in reversed(range(first, last)):
                    i, now, before = slice((c - first) * rows, (c - first + 1) * rows), \
                        slice(c * rows, (c + 1) * rows), slice((c - 1) * rows, c * rows)
                    torch.baddbmm(from_y[i], to_rv[i], d_handed[now], out=d_rv[i])  # (Z, C, N) @ (Z, N, P)
                    if c > 0:  # (Z, N, P) - (Z, N, C) @ (Z, C, P)
                        torch.addcmul(read_y[i], f.g_last[i], d_handed[now], out=d_handed[before])
                        d_handed[before].baddbmm_(f.gkb[i].mT, d_rv[i], alpha=-1)

                # everything else, from [dY ; dR_v] against U and S_0: [dY U^T ; -dA] and [dY S_0^T ; -dR_w]
                d_y_rv = torch.cat([d_yc, d_rv], dim=1)  # (nb Z, 2C, P)
                d_m = torch.bmm(d_y_rv, u_b.mT)  # (nb Z, 2C, C)
                d_m[:, :size].tril_()  # dP
                d_m[:, size:].tril_(-1)  # -dA
                d_read = torch.bmm(d_y_rv, s_b.mT)  # (nb Z, 2C, N): [dY S_0^T ; -dR_w]
                d_b = torch.linalg.vecdot(v_b, d_rv) - torch.linalg.vecdot(d_m[:, size:], gram)  # (nb Z, C)
                d_b -= torch.linalg.vecdot(f.gqk[:, size:], d_read[:, size:])  # dbeta
                d_m[:, size:] *= -b_b  # dG = beta dA
                d_read[:, size:] *= -b_b  # beta dR_w
                d_x = torch.baddbmm(d_read, d_m, f.k_grown)  # (nb Z, 2C, N): [dP K^ + dY S_0^T ; dG K^ + beta dR_w]
                d_x.view(-1, 2, size, n).mul_(f.g.unsqueeze(1))  # [dq ; dk_x]
                d_handed_b = d_handed[blk]  # (nb Z, N, P): dS_C
                d_key = torch.bmm(u_b, (f.g_last * d_handed_b).mT)  # (nb Z, C, N): U (Diag(g_C) dS_C)^T
                d_key.baddbmm_(d_m.mT, f.gqk).mul_(f.grow)  # (nb Z, C, N): dk_key, + [dP^T | dG^T] [g q ; g k]
                qk_dx = qk[blk] * d_x  # (nb Z, 2C, N): [q o dq ; k o dk_x]
                d_l = qk_dx[:, :size] + qk_dx[:, size:]  # (nb Z, C, N)
                d_l.addcmul_(qk[blk, size:], d_key, value=-1)  # dL
                handed_on = states[(first + 1) * rows:(last + 1) * rows]  # (nb Z, N, P): S_C
                d_l[:, -1] += torch.linalg.vecdot(handed_on, d_handed_b)  # rowsum(S_C o dS_C)
                block_grads = [d_x[:, :size], d_x[:, size:] + d_key, b_b * d_rv, d_b.unsqueeze(-1),
                               torch.bmm(to_end.expand(d_l.shape[0], size, size), d_l)]  # (nb Z, C, N / N / P / 1 / N)
                for grad, full in zip(block_grads, grads):
                    _scatter(grad, full, first, last, size)
        dq, dk, dv, db, dl = (x[:, :seq_len].to(t) for x, t in zip(grads, dtypes))
        return dq, dk, dv, db.squeeze(-1), dl, None
