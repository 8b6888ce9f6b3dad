"""The decayed outer-product scan shared by linear attention and the selective SSM, two ways.

For every batch element and head, a state matrix S (N, P) is carried along time:

    S_t = a_t * S_{t-1} + k_t v_t^T          a_t = exp(log_decay_t) in (0, 1], S_0 = 0
    y_t = S_t^T q_t                          # (P,)

or, with a `decay_sign` s_t = +-1 beside the log-decays, a_t = s_t exp(log_decay_t) in [-1, 1]: a decay
that may flip the state's sign (ssm's `allow_neg_eigval`), still summed as logs, of |a_t|.

Linear attention is the case a_t = 1 (no decay); a Mamba-2 / SSD selective SSM is the case
a_t = exp(dt_t * A_h) with q = C_t, k = B_t, v = dt_t x_t. Unrolled, the output is a masked
quadratic form, which is what the chunked path uses inside each chunk:

    y_i = sum_{j <= i} exp(L_i - L_j) (q_i . k_j) v_j       L_i = log_decay_1 + ... + log_decay_i

Worked example (N = P = 1, no decay): k = v = q = 1 at every step gives S_t = t and y_t = t.

Shapes (time on dim 1, as in the mixers): q, k (B, T, H, N), where H may be 1 for q and k shared
by all heads; v (B, T, H, P); log_decay (B, T, H) with values <= 0, or None for no decay; decay_sign
(B, T, H) of +-1, or None for positive decays.
Output (B, T, H, P). Both paths cost O(T) time; `scan_reference` loops over tokens,
`scan_chunked` over chunks of `chunk_size` tokens only.

Below it, in the same layout, the delta rule of deltanet and gated_deltanet, two ways:
`delta_rule_reference` (per token) and `delta_rule_chunked` (the WY / UT-transform form, per chunk).
"""

from __future__ import annotations

from typing import NamedTuple

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
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor | None = None,
    decay_sign: torch.Tensor | None = None,
) -> torch.Tensor:
    """The recurrence itself, one token at a time: readable, slow, the ground truth."""
    batch, seq_len, heads, n = k.shape
    p = v.shape[-1]
    decay = torch.ones(batch, seq_len, heads, device=v.device) if log_decay is None else log_decay.exp()
    if decay_sign is not None:
        decay = decay_sign * decay  # (B, T, H): a_t = s_t exp(log_decay_t)
    state = v.new_zeros(batch, heads, n, p, dtype=carry_dtype(v))  # (B, H, N, P)
    outputs = []
    for q_t, k_t, v_t, a_t in zip(q.unbind(1), k.unbind(1), v.unbind(1), decay.unbind(1)):
        update = k_t.unsqueeze(-1) @ v_t.unsqueeze(-2)  # (B, H, N, 1) @ (B, H, 1, P) -> (B, H, N, P)
        state = a_t[..., None, None] * state + update  # (B, H, N, P)
        outputs.append(read_state(q_t.unsqueeze(-2), state).squeeze(-2))  # (B, H, 1, N) @ (B, H, N, P)
    return torch.stack(outputs, dim=1)  # (B, T, H, P)


def split_chunks(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, T, h, d) -> (B, h, nC, C, d): the T tokens in nC = ceil(T / C) chunks of C = `size`, the tail zero-padded
    (zero keys and values add nothing). The chunked forms' layout.

        >>> split_chunks(torch.arange(5.0).view(1, 5, 1, 1), 2)[0, 0, :, :, 0]
        tensor([[0., 1.],
                [2., 3.],
                [4., 0.]])
    """
    batch, seq_len, heads, d = x.shape
    pad = -seq_len % size
    x = F.pad(x, (0, 0, 0, 0, 0, pad))  # (B, nC C, h, d)
    return x.view(batch, (seq_len + pad) // size, size, heads, d).permute(0, 3, 1, 2, 4)


def scan_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor | None = None,
                 chunk_size: int = 64, decay_sign: torch.Tensor | None = None) -> torch.Tensor:
    """The same output, with matmuls: a masked quadratic form inside chunks of C tokens and the state
    carried from chunk to chunk (a Python loop over the T / C chunks, or a cumulative sum when there
    is no decay; no loop over tokens).

    With L the within-chunk cumulative log-decay (L_i <= L_j for i >= j), for position i of chunk c:

        y_i   = sum_{j <= i in c} exp(L_i - L_j) (q_i . k_j) v_j  +  exp(L_i) S_{c-1}^T q_i
        S_c   = exp(L_last) S_{c-1} + sum_{j in c} exp(L_last - L_j) k_j v_j^T

    Only differences L_i - L_j with j <= i are kept (the rest are clamped to 0 before exp, then zeroed:
    a mask of -inf is 3x slower on the CPU), so every factor lies in [0, 1] and nothing overflows. T need
    not be a multiple of C: the tail is zero-padded (zero keys and values add nothing to the state).

    With a `decay_sign` s, L sums log|a| and the signs ride beside it: with sigma_i = s_1 s_2 .. s_i, the
    cumulative sign within the chunk (a product of +-1, exact), the decay from j to i is
    a_{j+1} .. a_i = sigma_i sigma_j exp(L_i - L_j), so every exp(.) above is multiplied by its sign
    product (sigma_i sigma_j, sigma_last sigma_j, sigma_last, sigma_i) and every factor lies in [-1, 1].
    Worked example (N = P = 1, q = k = v = 1, a = -1 at every step): y = 1, 0, 1, 0, ...

    Four stages, numbered in the code as in mamba's ssd_minimal.py: (1) the output of each chunk from its
    own tokens, (2) the state each chunk adds, (3) the recurrence across chunks, (4) the state read out.
    """
    check_int("chunk_size", chunk_size)
    if decay_sign is not None and log_decay is None:  # a_t = +-1
        log_decay = torch.zeros_like(decay_sign)
    batch, seq_len, heads, p = v.shape
    size = min(chunk_size, seq_len)
    pad = -seq_len % size
    chunks = (seq_len + pad) // size
    qc, kc, vc = (split_chunks(x, size) for x in (q, k, v))  # (B, h, nC, C, N), (B, h, nC, C, N), (B, H, nC, C, P)
    if log_decay is not None:  # L: the cumulative log-decay within each chunk
        log_a = F.pad(log_decay.to(carry_dtype(log_decay)), (0, 0, 0, pad))  # (B, T', H)
        cum = log_a.view(batch, chunks, size, heads).permute(0, 3, 1, 2).cumsum(-1)  # (B, H, nC, C)
        sigma = None  # sigma: the cumulative sign within each chunk, +-1 (None: every decay is positive)
        if decay_sign is not None:
            signs = F.pad(decay_sign.to(cum.dtype), (0, 0, 0, pad), value=1.0)  # (B, T', H)
            sigma = signs.view(batch, chunks, size, heads).permute(0, 3, 1, 2).cumprod(-1)  # (B, H, nC, C)

    # 1. the output of each chunk from its own tokens (the diagonal blocks): masked, decayed q_i . k_j
    scores = qc @ kc.transpose(-1, -2)  # (B, h, nC, C, C)
    if log_decay is None:
        scores = scores.tril()  # j <= i
    else:  # L_i - L_j <= 0 for j <= i (a cumulative sum of log-decays <= 0), zero above the diagonal
        decay = (cum.unsqueeze(-1) - cum.unsqueeze(-2)).clamp(max=0).exp().tril()  # (B, H, nC, C, C)
        if sigma is not None:
            decay = decay * (sigma.unsqueeze(-1) * sigma.unsqueeze(-2))  # sigma_i sigma_j exp(L_i - L_j)
        scores = scores * decay.to(scores.dtype)
    intra = scores @ vc  # (B, H, nC, C, P)

    # 2. the state each chunk adds, its keys decayed to the chunk's end: sum_j exp(L_last - L_j) k_j v_j^T
    if log_decay is None:
        k_out = kc  # (B, h, nC, C, N)
    else:
        to_end = (cum[..., -1:] - cum).exp()  # (B, H, nC, C)
        if sigma is not None:
            to_end = to_end * sigma[..., -1:] * sigma  # sigma_last sigma_j exp(L_last - L_j)
        k_out = kc * to_end.unsqueeze(-1).to(kc.dtype)  # (B, H, nC, C, N)
    local = (k_out.transpose(-1, -2) @ vc).to(carry_dtype(v))  # (B, H, nC, N, P)

    # 3. the state entering each chunk, carried across chunks: S_c = exp(L_last) S_{c-1} + local_c
    if log_decay is None:  # undecayed: the sum of the chunks before it
        entering = torch.cat([torch.zeros_like(local[:, :, :1]), local[:, :, :-1]], dim=2).cumsum(2)
    else:
        chunk_decay = cum[..., -1].exp()  # (B, H, nC)
        if sigma is not None:
            chunk_decay = chunk_decay * sigma[..., -1]  # sigma_last exp(L_last)
        state = torch.zeros_like(local[:, :, 0])  # (B, H, N, P)
        states = []
        for c in range(chunks):
            states.append(state)
            state = chunk_decay[:, :, c, None, None] * state + local[:, :, c]
        entering = torch.stack(states, dim=2)  # (B, H, nC, N, P)

    # 4. the entering state read out at each position, its queries decayed from the chunk's start: exp(L_i) q_i
    if log_decay is None:
        q_in = qc  # (B, h, nC, C, N)
    else:
        from_start = cum.exp() if sigma is None else cum.exp() * sigma  # (B, H, nC, C): sigma_i exp(L_i)
        q_in = qc * from_start.unsqueeze(-1).to(qc.dtype)  # (B, H, nC, C, N)
    out = intra + read_state(q_in, entering)  # (B, H, nC, C, P), float32 at least
    return out.permute(0, 2, 3, 1, 4).reshape(batch, chunks * size, heads, p)[:, :seq_len]  # (B, T, H, P)


# --- the delta rule ----------------------------------------------------------------------------------
# DeltaNet (Schlag et al. 2021; Yang et al. 2024) and Gated DeltaNet (Yang et al. 2025) carry the same
# (N, P) state per head, but the write first removes what the key already recalls:
#
#     S_t = a_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T        a_t = exp(log_decay_t) in (0, 1]
#         = a_t S_{t-1} + beta_t k_t (v_t - a_t S_{t-1}^T k_t)^T          # write the error of the recall
#     y_t = S_t^T q_t
#
# For a unit key, I - beta k k^T has the eigenvalue 1 - beta along k and 1 on the rest: beta in [0, 1] keeps
# it in [0, 1], beta in [0, 2] (`allow_neg_eigval`: 2 sigmoid, Grazzi et al., ICLR 2025) in [-1, 1], where a
# write may flip the sign of what the key recalls (what parity needs). Both forms below take beta in [0, 2].


def delta_rule_step(
    state: torch.Tensor, q_t: torch.Tensor, k_t: torch.Tensor, v_t: torch.Tensor, beta_t: torch.Tensor,
    a_t: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token of the (gated) delta rule: (S_{t-1}, q_t, k_t, v_t, beta_t, a_t) -> (S_t, y_t).

    state (B, H, N, P); q_t, k_t (B, H, N); v_t (B, H, P); beta_t and a_t (B, H), a_t None for no decay.
    The state is everything the recurrence carries from one token to the next.
    """
    if a_t is not None:
        state = a_t[..., None, None] * state  # (B, H, N, P)
    recalled = read_state(k_t.unsqueeze(-2), state).squeeze(-2)  # (B, H, 1, N) @ (B, H, N, P) -> (B, H, P): S^T k
    error = beta_t.unsqueeze(-1) * (v_t - recalled)  # (B, H, P)
    state = state + k_t.unsqueeze(-1) @ error.unsqueeze(-2)  # (B, H, N, 1) @ (B, H, 1, P) -> (B, H, N, P)
    return state, read_state(q_t.unsqueeze(-2), state).squeeze(-2)  # (B, H, 1, N) @ (B, H, N, P) -> (B, H, P)


def delta_rule_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, log_decay: torch.Tensor | None = None
) -> torch.Tensor:
    """The (gated) delta rule one token at a time (`delta_rule_step`): readable, slow, the ground truth.

    q, k (B, T, H, N), v (B, T, H, P), beta (B, T, H) in [0, 2], log_decay (B, T, H) <= 0 or None.
    Output (B, T, H, P) in v's dtype; the state (B, H, N, P) is carried in float32 at least. The keys are
    used as given (DeltaNet L2-normalises them first, which keeps the eigenvalues of I - beta k k^T in [-1, 1]).

    Worked example (N = 2, P = 1, beta = 1, no decay): write value 3 under key e1, 5 under e2, then 7
    under e1 again. The third write replaces the first (linear attention would add it: 3 + 7 = 10):

        k = e1, e2, e1   v = 3, 5, 7   q = e1, e2, e1   ->   y = 3, 5, 7

    With beta = 1/2, N = P = 1 and k = q = v = 1, each write moves the memory halfway to the value:
    S_t = S_{t-1} + (1 - S_{t-1}) / 2, so y = 1/2, 3/4, 7/8, ... = 1 - 2^-t.
    """
    dtype = carry_dtype(v)
    batch, seq_len, heads, n = k.shape
    q, k, v, beta = q.to(dtype), k.to(dtype), v.to(dtype), beta.to(dtype)
    decay = [None] * seq_len if log_decay is None else log_decay.to(dtype).exp().unbind(1)
    state = v.new_zeros(batch, heads, n, v.shape[-1])  # (B, H, N, P)
    outputs = []
    for q_t, k_t, v_t, beta_t, a_t in zip(q.unbind(1), k.unbind(1), v.unbind(1), beta.unbind(1), decay):
        state, y_t = delta_rule_step(state, q_t, k_t, v_t, beta_t, a_t)
        outputs.append(y_t)
    return torch.stack(outputs, dim=1).to(v.dtype)  # (B, T, H, P)


def delta_rule_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                       log_decay: torch.Tensor | None = None, chunk_size: int = 64) -> torch.Tensor:
    """The same output as `delta_rule_reference`, with matmuls inside chunks of C tokens and a loop over
    the T / C chunks only (the WY / UT-transform form of Yang et al. 2024, with the decays of Gated DeltaNet).

    Inside a chunk entered with state S_0, with L_i the cumulative log-decay from the chunk's start to i
    and g_i = exp(L_i), the state after position i is  S_i = g_i S_0 + sum_{j <= i} exp(L_i - L_j) k_j u_j^T,
    where u_j = beta_j (v_j - recalled_j) is the error actually written at j. Substituting S_{i-1} into the
    recall gives a unit lower-triangular system for all u of the chunk at once:

        u_i + sum_{j < i} A_ij u_j = beta_i v_i - beta_i g_i S_0^T k_i,   A_ij = beta_i exp(L_i - L_j) k_i . k_j

    so U = U' - W S_0 with (I + A) [U' | W] = [beta v | beta g k] (one triangular solve per chunk: the UT
    transform; U' and W are the WY factors). Then, with K~_j = exp(L_C - L_j) k_j and the masked decayed
    scores P_ij = exp(L_i - L_j) q_i . k_j (j <= i):

        U_c = U' - W S_0                               # what the chunk writes (C, P)
        S_C = g_C S_0 + K~^T U_c                       # the state handed to the next chunk (N, P)
        Y_c = P U_c + (g q) S_0                        # outputs of the chunk (C, P)

    The first two lines are a loop over the chunks (two small matmuls each); everything else is batched
    over the chunks of a block (`_ChunkedDeltaRule`: on the CPU one chunk, or 8 with several threads; all of
    them elsewhere). Only causal differences of log-decays are exponentiated (every factor in [0, 1]). T need
    not be a multiple of C: the tail is padded with beta = 0 and log_decay = 0, which leave the state as it
    is. beta may lie anywhere in [0, 2] (`allow_neg_eigval`): it enters only products and the unit triangular
    solve, never a logarithm, so the form holds unchanged when I - beta k k^T has a negative eigenvalue. The
    backward pass is written by hand (`_ChunkedDeltaRule.backward`: one reverse loop over the chunks). Under
    autocast the whole computation, forward and backward, runs in float32 at least (autocast off inside; the
    output is returned in v's dtype).
    """
    check_int("chunk_size", chunk_size)
    with torch.autocast(v.device.type, enabled=False):
        return _ChunkedDeltaRule.apply(q, k, v, beta, log_decay, min(chunk_size, k.shape[1]))


class _Factors(NamedTuple):
    """What a block of chunks computes before its state is known (step 1 of `delta_rule_chunked`), each
    (nb Z, ...) for the nb chunks of the block times the Z = B H sequences; g, g_last, to_end are None
    without decay."""

    decay: torch.Tensor | None  # (nb Z, C, C): D_ij = exp(L_i - L_j) for j <= i, else 0
    g: torch.Tensor | None  # (nb Z, C, 1): exp(L_i), the decay from the chunk's start to i
    g_last: torch.Tensor | None  # (nb Z, 1, 1): exp(L_C), over the whole chunk
    to_end: torch.Tensor | None  # (nb Z, C, 1): exp(L_C - L_i), from i to the chunk's end
    gq: torch.Tensor  # (nb Z, C, N): g q
    gkb: torch.Tensor  # (nb Z, C, N): beta g k
    k_out: torch.Tensor  # (nb Z, C, N): K~
    gram: torch.Tensor  # (nb Z, C, C): k_i . k_j D_ij (without decay k_i . k_j: only j < i is ever read)
    scores: torch.Tensor  # (nb Z, C, C): P, zero above the diagonal


def _chunk_factors(qc: torch.Tensor, kc: torch.Tensor, bc: torch.Tensor, cum: torch.Tensor | None) -> _Factors:
    """The `_Factors` of a block of chunks, for the forward pass and again for the backward pass (recomputed
    there, block by block: cheaper than reading them back from memory). qc, kc (nb Z, C, N), bc (nb Z, C, 1),
    cum (nb Z, C) or None."""
    kb = bc * kc  # (nb Z, C, N): beta k
    if cum is None:  # every decay is 1: the mask is the causal mask alone
        gram, scores = torch.bmm(kc, kc.mT), torch.bmm(qc, kc.mT).tril_()  # (nb Z, C, C) each
        return _Factors(None, None, None, None, qc, kb, kc, gram, scores)
    # L_i - L_j <= 0 for j <= i; above the diagonal clamped to 0 before exp (no overflow), then zeroed (a mask
    # of -inf costs 3x as much: masked_fill and exp(-inf) are slow paths on the CPU)
    decay = (cum.unsqueeze(-1) - cum.unsqueeze(-2)).clamp_(max=0).exp_().tril_()  # (nb Z, C, C)
    g = cum.exp().unsqueeze(-1)  # (nb Z, C, 1)
    g_last = g[:, -1:]  # (nb Z, 1, 1)
    to_end = (cum[:, -1:] - cum).exp_().unsqueeze(-1)  # (nb Z, C, 1)
    gq, gkb, k_out = g * qc, g * kb, to_end * kc  # (nb Z, C, N) each: g q, beta g k, K~
    gram = torch.bmm(kc, kc.mT).mul_(decay)  # (nb Z, C, C)
    scores = torch.bmm(qc, kc.mT).mul_(decay)  # (nb Z, C, C)
    return _Factors(decay, g, g_last, to_end, gq, gkb, k_out, gram, scores)


class _ChunkedDeltaRule(torch.autograd.Function):
    """`delta_rule_chunked` with its backward pass derived by hand. With T = (I + A)^-1 (so [U' | W] = T R,
    R = [beta v | beta g k]), given dY, in reverse chunk order (dS_C = 0 for the last chunk), with dS_C the
    gradient of the state a chunk hands on:

        dU   = P^T dY + K~ dS_C                        # (C, P)
        dR_v = T^T dU                                  # (C, P)
        dS_0 = g_C dS_C + (g q)^T dY - W^T dU          # (N, P), handed to the chunk before;  W^T dU = R_w^T dR_v

    and then, batched over chunks (U = U' - W S_0 folds the W and U' paths into one):

        dR_w = -dR_v S_0^T          dA = -strict_lower(dR X^T) = -strict_lower(dR_v U^T)
        dq = (dY U^T o D) k + g (dY S_0^T)                     D_ij = exp(L_i - L_j) (j <= i), else 0
        dk = (dY U^T o D)^T q + (dG + dG^T) k + beta g dR_w + exp(L_C - L) (U dS_C^T),   dG = beta dA o D
        dv = beta dR_v          dbeta = rowsum(dA o k k^T o D) + v . dR_v + g k . dR_w

    and for the log-decays, with E = (dY U^T) o P + dA o A (each D_ij enters as exp(L_i - L_j)):

        dL = rowsum(E) - colsum(E) + g (q . dY S_0^T + beta k . dR_w) - exp(L_C - L) k . (U dS_C^T)
        dL_C += sum(exp(L_C - L) k . (U dS_C^T)) + g_C sum(S_0 o dS_C),   d log_decay = reverse cumsum of dL

    The inputs are chunked once into flat chunk-major (nC B H, C, d) tensors (`_to_chunks`: chunk by chunk,
    Z = B H rows each), so that a block of chunks is a slice of rows. Both passes go through blocks
    (`_chunks_per_block`): on the CPU one chunk at a time (its tensors stay in cache: 1.7x faster than all
    chunks at once), or 8 with several threads; elsewhere all chunks in one block (fewer launches); outputs
    and gradients are scattered back block by block. The forward pass saves the chunked inputs, the states
    entering the chunks, their writes U and the inverses T^T; the backward pass recomputes the `_Factors`
    block by block.
    """

    @staticmethod
    def forward(ctx, q, k, v, beta, log_decay, size):
        dtype = carry_dtype(v)
        batch, seq_len, heads, n = k.shape
        p, rows = v.shape[-1], batch * heads  # Z = B H rows per chunk
        pad = -seq_len % size
        chunks = (seq_len + pad) // size
        inputs = [q, k, v, beta.unsqueeze(-1)] + ([] if log_decay is None else [log_decay.unsqueeze(-1)])
        # 1. chunk the inputs; the cumulative log-decay L inside each chunk
        qc, kc, vc, bc, *lc = (_to_chunks(x, size, dtype) for x in inputs)  # (nC Z, C, N / N / P / 1)
        cum = lc[0].squeeze(-1).cumsum(-1) if lc else None  # (nC Z, C)
        block = _chunks_per_block(v.device, chunks)

        states = v.new_empty(chunks * rows, n, p, dtype=dtype)  # (nC Z, N, P): the state entering each chunk
        written = v.new_empty(chunks * rows, size, p, dtype=dtype)  # (nC Z, C, P): U
        inverses = v.new_empty(chunks * rows, size, size, dtype=dtype)  # (nC Z, C, C): T^T = (I + A)^-T
        out = v.new_empty(batch, chunks * size, heads, p, dtype=dtype)  # (B, T', H, P): Y, T' = nC C
        states[:rows] = 0
        for first in range(0, chunks, block):
            last = min(first + block, chunks)
            blk = slice(first * rows, last * rows)
            q_b, k_b, v_b, b_b = qc[blk], kc[blk], vc[blk], bc[blk]  # (nb Z, C, N / N / P / 1)
            f = _chunk_factors(q_b, k_b, b_b, None if cum is None else cum[blk])
            # 2. the UT transform: (I + A) [U' | W] = [beta v | beta g k], via T^T solved as T^T (I + A)^T = I
            #    (the memory layout LAPACK wants; the solve reads only the strictly lower triangle of A)
            a = b_b * f.gram  # (nb Z, C, C): A
            eye = torch.eye(size, dtype=dtype, device=v.device).expand(a.shape)  # (nb Z, C, C)
            torch.linalg.solve_triangular(a.mT, eye, upper=True, left=False, unitriangular=True, out=inverses[blk])
            u_w = torch.bmm(inverses[blk].mT, torch.cat([b_b * v_b, f.gkb], dim=-1))  # (nb Z, C, P + N): [U' | W]
            # 3. the only loop: carry the state from chunk to chunk; the chunk entered with S_0 writes
            #    U = U' - W S_0 and hands on S_C = g_C S_0 + K~^T U
            for c in range(first, last):
                i, now, after = slice((c - first) * rows, (c - first + 1) * rows), slice(c * rows, (c + 1) * rows), \
                    slice((c + 1) * rows, (c + 2) * rows)
                # (Z, C, P) - (Z, C, N) @ (Z, N, P)
                torch.baddbmm(u_w[i, :, :p], u_w[i, :, p:], states[now], alpha=-1, out=written[now])
                if c + 1 < chunks:
                    decayed = states[now] if cum is None else f.g_last[i] * states[now]  # (Z, N, P)
                    torch.baddbmm(decayed, f.k_out[i].mT, written[now], out=states[after])  # (Z, N, C) @ (Z, C, P)
            # 4. outputs: the chunk's own writes through the decayed causal scores P, plus the read of the state
            #    entering it:  Y_c = P U + (g q) S_0
            y = torch.baddbmm(torch.bmm(f.gq, states[blk]), f.scores, written[blk])  # (nb Z, C, P)
            _scatter(y, out, first, last, size)
        ctx.save_for_backward(qc, kc, vc, bc, cum, states, written, inverses)
        ctx.layout = (batch, seq_len, heads, size, chunks, block, [x.dtype for x in inputs])
        return out[:, :seq_len].to(v.dtype)  # (B, T, H, P)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_out):
        qc, kc, vc, bc, cum, states, written, inverses = ctx.saved_tensors
        batch, seq_len, heads, size, chunks, block, dtypes = ctx.layout
        dtype, rows, padded = states.dtype, batch * heads, chunks * size
        d_y = _to_chunks(d_out, size, dtype)  # (nC Z, C, P)
        widths = [qc.shape[-1], kc.shape[-1], vc.shape[-1], 1] + ([] if cum is None else [1])
        grads = [states.new_empty(batch, padded, heads, d) for d in widths]  # (B, T', H, N / N / P / 1 / 1)
        d_state = states.new_zeros(rows, *states.shape[1:])  # (Z, N, P): dS_C of the chunk being visited
        with torch.autocast(d_out.device.type, enabled=False):
            for first in reversed(range(0, chunks, block)):
                last = min(first + block, chunks)
                blk = slice(first * rows, last * rows)
                q_b, k_b, v_b, b_b, d_yc = qc[blk], kc[blk], vc[blk], bc[blk], d_y[blk]  # (nb Z, C, N / N / P / 1 / P)
                s_b, u_b, inv_b = states[blk], written[blk], inverses[blk]  # S_0, U, T^T of the block's chunks
                f = _chunk_factors(q_b, k_b, b_b, None if cum is None else cum[blk])

                # the reverse loop: dU = P^T dY + K~ dS_C, dR_v = T^T dU, dS_0 = g_C dS_C + (g q)^T dY - R_w^T dR_v
                from_y = torch.bmm(f.scores.mT, d_yc)  # (nb Z, C, P): P^T dY
                read_y = torch.bmm(f.gq.mT, d_yc)  # (nb Z, N, P): (g q)^T dY
                d_written, d_rv = torch.empty_like(u_b), torch.empty_like(u_b)  # (nb Z, C, P) each: dU, dR_v
                d_handed = torch.empty_like(s_b)  # (nb Z, N, P): dS_C, the gradient of the state each chunk hands on
                for c in reversed(range(last - first)):
                    i = slice(c * rows, (c + 1) * rows)
                    d_handed[i] = d_state
                    torch.baddbmm(from_y[i], f.k_out[i], d_state, out=d_written[i])  # (Z, C, N) @ (Z, N, P)
                    torch.bmm(inv_b[i], d_written[i], out=d_rv[i])  # (Z, C, C) @ (Z, C, P)
                    carried = read_y[i] + (d_state if cum is None else f.g_last[i] * d_state)  # (Z, N, P)
                    d_state = torch.baddbmm(carried, f.gkb[i].mT, d_rv[i], alpha=-1)  # (Z, N, C) @ (Z, C, P)

                # everything else, from [dY | dR_v] against U and S_0: dY U^T and -dA, dY S_0^T and -dR_w
                d_y_rv = torch.cat([d_yc, d_rv], dim=1)  # (nb Z, 2C, P)
                d_scores, neg_da = torch.bmm(d_y_rv, u_b.mT).split(size, dim=1)  # (nb Z, C, C) each: dY U^T, dR_v U^T
                neg_da = neg_da.tril(-1)  # -dA
                d_read, neg_drw = torch.bmm(d_y_rv, s_b.mT).split(size, dim=1)  # (nb Z, C, N) each: dY S_0^T, -dR_w
                d_qk = d_scores.tril() if cum is None else d_scores * f.decay  # (nb Z, C, C)
                neg_dg = b_b * neg_da if cum is None else (b_b * neg_da).mul_(f.decay)  # (nb Z, C, C): -dG
                d_k_out = torch.bmm(u_b, d_handed.mT)  # (nb Z, C, N): dK~ = U dS_C^T
                neg_kdr = torch.linalg.vecdot(k_b, neg_drw)  # (nb Z, C): -k . dR_w
                d_q = torch.baddbmm(d_read if cum is None else f.g * d_read, d_qk, k_b)  # (nb Z, C, N)
                d_k = torch.baddbmm(torch.bmm(d_qk.mT, q_b), neg_dg + neg_dg.mT, k_b, alpha=-1)  # (nb Z, C, N)
                d_k.addcmul_(b_b if cum is None else b_b * f.g, neg_drw, value=-1)
                d_k += d_k_out if cum is None else f.to_end * d_k_out
                d_b = torch.linalg.vecdot(v_b, d_rv) - torch.linalg.vecdot(neg_da, f.gram)  # (nb Z, C)
                d_b -= neg_kdr if cum is None else f.g.squeeze(-1) * neg_kdr
                block_grads = [d_q, d_k, b_b * d_rv, d_b.unsqueeze(-1)]  # (nb Z, C, N / N / P / 1)
                if cum is not None:  # the log-decays, through D, g, K~ and g_C
                    e = (d_scores * f.scores).sub_(neg_da * b_b * f.gram)  # (nb Z, C, C)
                    to_end_k = torch.linalg.vecdot(f.k_out, d_k_out)  # (nb Z, C)
                    d_l = e.sum(-1) - e.sum(-2) - to_end_k  # (nb Z, C)
                    d_l += f.g.squeeze(-1) * (torch.linalg.vecdot(q_b, d_read) - b_b.squeeze(-1) * neg_kdr)
                    d_l[:, -1] += to_end_k.sum(-1) + f.g_last[:, 0, 0] * (s_b * d_handed).sum((-1, -2))
                    block_grads.append(d_l.flip(-1).cumsum(-1).flip(-1).unsqueeze(-1))  # (nb Z, C, 1)
                for grad, full in zip(block_grads, grads):
                    _scatter(grad, full, first, last, size)
        dq, dk, dv, db, *dl = (x[:, :seq_len].to(t) for x, t in zip(grads, dtypes))
        return dq, dk, dv, db.squeeze(-1), dl[0].squeeze(-1) if dl else None, None


CPU_THREADED_BLOCK = 8  # chunks per block on the CPU with more than one torch thread


def _chunks_per_block(device: torch.device, chunks: int) -> int:
    """How many chunks `_ChunkedDeltaRule` batches together: on the CPU one with one torch thread (its tensors
    stay in cache) and CPU_THREADED_BLOCK with more (a chunk's 32 x 32 tiles are too small to share out
    between threads: blocks of 8 chunks of 32 ran 15-30 % faster on two threads, and no faster on one), all of
    them elsewhere (fewer kernel launches)."""
    if device.type != "cpu":
        return chunks
    return 1 if torch.get_num_threads() == 1 else min(CPU_THREADED_BLOCK, chunks)


def _to_chunks(x: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
    """x (B, T, H, d) as one flat (nC B H, C, d) tensor in `dtype`, chunk-major (chunk by chunk, B H rows each),
    the tail padded with zeros to whole chunks."""
    batch, seq_len, heads, d = x.shape
    pad = -seq_len % size
    x = F.pad(x, (0, 0, 0, 0, 0, pad)) if pad else x
    x = x.view(batch, -1, size, heads, d).permute(1, 0, 3, 2, 4)  # (nC, B, H, C, d)
    # one copy of the whole tensor: 2.5x faster than chunk by chunk, and 4x faster than .contiguous() here
    return torch.empty(x.shape, dtype=dtype, device=x.device).copy_(x).view(-1, size, d)


def _scatter(y: torch.Tensor, out: torch.Tensor, first: int, last: int, size: int) -> None:
    """y (nb B H, C, d), chunks first..last - 1 in the layout of `_to_chunks`, written into out (B, T', H, d)."""
    batch, _, heads, d = out.shape
    view = out[:, first * size:last * size].view(batch, last - first, size, heads, d)  # (B, nb, C, H, d)
    view.copy_(y.view(last - first, batch, heads, size, d).permute(1, 0, 3, 2, 4))
