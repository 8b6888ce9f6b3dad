"""recall_blocks: the building blocks of the recall generators (associative_recall, noisy_recall, fuzzy_recall).

Generic, seeded and vectorised over the batch; each task states the law of its own draws and calls these.
Every CPU fast path sits beside its readable reference and gives its bytes (tested):

    job                                 fast path                reference
    random draws
        k distinct integers per row     distinct_randint         distinct_randint_reference (one top-k)
          its repeats redrawn           redraw_repeats           redraw_repeats_reference
        k power-law slots, no repeats   power_law_slots          k draws one by one (tested against them)
          a race's first k arrivals     first_arrivals           first_arrivals_reference (one top-k)
    motifs (a key or value of several tokens)
        a motif <-> its code            motif_tokens, motif_codes
    writing a batch
        bindings, queries, targets      place_pairs              place_recall (any motifs, any layout)
        what they share                 new_int64, motif_positions, take_motifs

Shapes: B rows, k (or n) bindings, q queries, a tokens per key, b per value, T positions.
"""

from __future__ import annotations

import numpy as np
import torch

from membench.memtasks.base import IGNORE, NO_LAG, Batch


# --- random draws ---------------------------------------------------------------------------------
def distinct_randint_reference(
    batch_size: int, k: int, high: int, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """(B, k) int64: per row, the first k entries of a uniformly random permutation of [0, high) (the
    positions of the k smallest of `high` uniform draws, in increasing order of their draws).

    O(B * high) work and no host sync: readable, the right choice when k is a large fraction of `high`,
    and on an accelerator, where the (B, high) draw is cheap and a sync is not.
    """
    scores = torch.rand(batch_size, high, generator=gen, device=device)  # (B, high)
    return scores.topk(k, dim=1, largest=False).indices  # (B, k)


def sort_rows(x: torch.Tensor) -> torch.Tensor:
    """(B, n) integers -> each row sorted ascending (values only).

    On the CPU numpy's sort, which is vectorised where the CPU allows (AVX-512, AVX2): 5-30x faster than
    torch.sort for the rows of up to a few hundred entries sorted here. Elsewhere torch.sort. Both give the
    same values; the callers pack a position into the low bits, so no two entries of a row are equal.
    """
    if x.device.type != "cpu":
        return x.sort(dim=1).values
    return torch.from_numpy(np.sort(x.numpy(), axis=1))  # (B, n)


def distinct_randint(batch_size: int, k: int, high: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """(B, k) int64: per row, k distinct integers from [0, high), a uniformly random ordered k-tuple.

    Draw all k with replacement, then redraw every repeat (each value after its first occurrence in the
    row) until a row has none (`redraw_repeats`). Which entries are redrawn depends only on which entries
    are equal, never on their values, so the law of the result is unchanged by any relabelling of
    [0, high); the only such law on ordered k-tuples of distinct values is the uniform one, the same as
    `distinct_randint_reference`. Work: one sort of (B, k), then O(log(B k)) per redraw (about
    k^2 / (2 high) redraws per row). When 2k >= high repeats would be frequent, and on an accelerator
    (where the loop's host syncs would stall the training step), the sync-free reference is used instead.

    Example: batch_size=1, k=4, high=10; draws [3, 7, 3, 1] -> the second 3 is redrawn, say as 7 ->
    it repeats 7, redrawn again, say as 0 -> [3, 7, 0, 1].
    """
    if 2 * k >= high or torch.device(device).type != "cpu":  # the redraw loop below syncs with the host
        return distinct_randint_reference(batch_size, k, high, gen, device)
    draws = torch.randint(high, (batch_size, k), generator=gen, device=device)  # (B, k)
    redraw_repeats(draws, high, gen)
    return draws


def first_repeats(draws: torch.Tensor, high: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The repeats of `draws` (B, k) of [0, high): (rows (n,), cols (n,)), each an entry equal to an earlier
    one of its row, ordered by row, then value, then position; and (B, k) every row's values, sorted.

    Sorts (value, position) pairs packed in one integer (position in the low bits): an entry whose value
    equals its predecessor's in sorted order repeats an earlier entry.
    """
    k = draws.shape[1]
    bits = (k - 1).bit_length()  # position takes the low bits
    dtype = torch.int32 if high << bits <= 2**31 else torch.int64  # int32 sorts faster
    paired = draws.to(dtype).bitwise_left_shift_(bits).bitwise_or_(torch.arange(k, device=draws.device, dtype=dtype))
    paired = sort_rows(paired)  # (B, k)
    value = paired >> bits  # (B, k): each row sorted
    rows, cols = (value[:, 1:] == value[:, :-1]).nonzero(as_tuple=True)  # (n,) each: repeats in sorted order
    cols = (paired[rows, cols + 1] & ((1 << bits) - 1)).long()  # (n,): their positions in the row
    return rows, cols, value


def redraw_repeats_reference(draws: torch.Tensor, high: int, gen: torch.Generator) -> None:
    """Redraw, in place, every repeat of `draws` (B, k) from [0, high) until no row has one. Each round draws
    the n entries still to redraw (in `first_repeats`' order), writes them, and keeps for the next round those
    equal to another entry of their row: a (n, k) comparison per round."""
    rows, cols, _ = first_repeats(draws, high)
    while rows.numel():
        fresh = torch.randint(high, (rows.numel(),), generator=gen, device=draws.device)  # (n,)
        draws[rows, cols] = fresh
        clash = (draws[rows] == fresh[:, None]).sum(dim=1) > 1  # (n,): equal to another entry of its row
        rows, cols = rows[clash], cols[clash]


def redraw_repeats(draws: torch.Tensor, high: int, gen: torch.Generator) -> None:
    """`redraw_repeats_reference` without its (n, k) comparison: the same draws, the same result.

    A fresh value clashes when another entry of its row holds it after the round's writes. Those entries are
    the row's kept ones (never redrawn, all distinct) or the round's other fresh values. The kept values are
    the row's first draws (a repeat has the value of a first occurrence, which stays) and the fresh values
    accepted in earlier rounds. Each kind is held as one sorted list of row * high + value, searched in
    O(log(B k)); the round's own equal pairs are found by `torch.unique`.
    Example: row [3, 7, 3, 1], the second 3 redrawn as 7: 7 is among the first draws {1, 3, 7}: a clash.
    """
    B, k = draws.shape
    rows, cols, value = first_repeats(draws, high)
    if not rows.numel():
        return
    row_base = high * torch.arange(B, device=draws.device)  # (B,)
    kept = [(value + row_base[:, None]).flatten()]  # sorted lists of row * high + value; rows are sorted
    while rows.numel():
        fresh = torch.randint(high, (rows.numel(),), generator=gen, device=draws.device)  # (n,)
        draws[rows, cols] = fresh
        tagged = row_base[rows] + fresh  # (n,)
        _, inverse, counts = torch.unique(tagged, return_inverse=True, return_counts=True)
        clash = counts[inverse] > 1  # (n,): another fresh value of the row is the same
        for held in kept:
            at = torch.searchsorted(held, tagged).clamp_(max=held.numel() - 1)  # (n,)
            clash |= held[at] == tagged
        accepted = tagged[~clash]
        if accepted.numel():
            kept.append(accepted.sort().values)
        rows, cols = rows[clash], cols[clash]


def power_law_slots(
    batch_size: int, k: int, num_slots: int, power_a: float, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """(B, k) int64: per row, k distinct slots of [0, num_slots) in the order they are drawn one by one
    without replacement, each draw with probability proportional to (g + 1)^(power_a - 1) among the
    slots left.

    Vectorised as an exponential race (Efraimidis & Spirakis, 2006): slot g arrives at time E_g / w_g
    with E_g ~ Exp(1) and w_g = (g + 1)^(power_a - 1); the first k arrivals, in order of arrival, have
    exactly the law of the k sequential draws. One (B, S) top-k (`first_arrivals`).

    Example: num_slots=3, power_a=0.01, k=2: weights 1, 0.50, 0.34; the first slot drawn is 0 with
    probability 1 / 1.84 = 0.54, and [0, 1] is the most likely result.
    """
    rank = torch.arange(1, num_slots + 1, device=device, dtype=torch.float32)  # (S,): g + 1
    uniform = torch.rand(batch_size, num_slots, generator=gen, device=device)  # (B, S) in [0, 1)
    arrival = uniform.neg_().log1p_().mul_(rank.pow(1.0 - power_a))  # (B, S): -E_g / w_g, latest most negative
    return first_arrivals(arrival, k)


def first_arrivals_reference(arrival: torch.Tensor, k: int) -> torch.Tensor:
    """(B, S) float arrival keys (the earliest the largest) -> (B, k) int64 slots, earliest first."""
    return arrival.topk(k, dim=1).indices  # (B, k)


def first_arrivals(arrival: torch.Tensor, k: int) -> torch.Tensor:
    """`first_arrivals_reference`, byte for byte, by a sort of integers on the CPU (3-10x faster).

    -arrival >= 0, and the bits of a float >= 0 read as an integer order it as the float: the key
    bits(-arrival) * 2^p + g (p bits for the slot) sorts by arrival, then slot. Equal arrivals among the
    first k + 1 (about one row in a thousand, when S is in the hundreds) are ordered by topk's own rule:
    those rows are taken from the reference. Off the CPU (no host sync there): the reference.
    Example: arrival [[-0.5, -0.1, -0.9]], k=2: keys 0.5 -> (bits) * 4 + 0, 0.1 * 4 + 1, 0.9 * 4 + 2;
    sorted 0.1, 0.5, 0.9 -> slots [[1, 0]].
    """
    if arrival.device.type != "cpu":
        return first_arrivals_reference(arrival, k)
    B, S = arrival.shape
    bits = max(S - 1, 1).bit_length()
    key = arrival.neg().view(torch.int32).long()  # (B, S): ordered as -arrival (-0.0 negates to 0.0)
    key.bitwise_left_shift_(bits).bitwise_or_(torch.arange(S))  # (B, S): then by slot
    ranked = sort_rows(key)[:, :k + 1]  # (B, min(k + 1, S))
    time = ranked >> bits
    tied = (time[:, 1:] == time[:, :-1]).any(dim=1).nonzero().flatten()  # (r,): rows with equal arrivals
    slots = ranked[:, :k] & ((1 << bits) - 1)  # (B, k)
    slots[tied] = first_arrivals_reference(arrival[tied], k)
    return slots


# --- motifs: a key or value of `size` tokens, and its code --------------------------------------------
def motif_tokens(codes: torch.Tensor, base: int, size: int) -> torch.Tensor:
    """(...) codes in [0, base^size) -> (..., size) digits in [0, base), most significant first.

    Example: base=8, size=3: code 83 = 1 * 64 + 2 * 8 + 3 -> [1, 2, 3].
    """
    if size == 1:  # one digit: the code itself (the arithmetic below is most of a one-token key's cost)
        return codes[..., None]
    powers = base ** torch.arange(size - 1, -1, -1, device=codes.device)  # (size,)
    return torch.div(codes[..., None], powers, rounding_mode="floor") % base  # (..., size)


def motif_codes(digits: torch.Tensor, base: int) -> torch.Tensor:
    """(..., size) digits in [0, base) -> (...) codes: the inverse of `motif_tokens`."""
    code = torch.zeros_like(digits[..., 0])
    for i in range(digits.shape[-1]):  # over the motif's few tokens, not the sequence
        code = code * base + digits[..., i]
    return code


# --- writing a batch -------------------------------------------------------------------------------
def new_int64(shape: tuple[int, ...], device: torch.device, fill: int | None = None) -> torch.Tensor:
    """A new int64 tensor, filled with `fill` (or uninitialised). On the CPU in numpy's memory: numpy asks
    Linux for huge pages for large arrays, so the first write faults 2 MiB at a time, not 4 KiB, which makes
    writing a fresh (20000, 256) batch 3-5x faster than in torch's allocation (the largest cost of a CPU batch).
    """
    if torch.device(device).type != "cpu":
        empty = torch.empty(shape, dtype=torch.long, device=device)
        return empty if fill is None else empty.fill_(fill)
    return torch.from_numpy(np.empty(shape, dtype=np.int64) if fill is None else np.full(shape, fill, dtype=np.int64))


def motif_positions(starts: torch.Tensor, size: int) -> torch.Tensor:
    """(B, n) starts -> (B, n * size): the positions of n motifs of `size` tokens, motif after motif.

    Example: starts [[0, 4]], size 2 -> [[0, 1, 4, 5]].
    """
    B, n = starts.shape
    if size == 1:
        return starts
    return (starts[..., None] + torch.arange(size, device=starts.device)).reshape(B, n * size)


def take_motifs(motifs: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """motifs (B, n, a), which (B, q) -> (B, q, a): motif which[r, j] of row r, for every r and j.

    One 2-D gather over the row's a * n tokens (a 3-D gather along n is ~50x slower on the CPU when a is 1).
    Example: motifs [[[1, 2], [3, 4]]], which [[1, 1, 0]] -> [[[3, 4], [3, 4], [1, 2]]].
    """
    B, n, a = motifs.shape
    tokens = motifs.reshape(B, n * a).gather(1, motif_positions(which * a, a))  # (B, q * a)
    return tokens.reshape(B, which.shape[1], a)


def place_recall(
    background: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, pair_pos: torch.Tensor,
    query_pos: torch.Tensor, latest: torch.Tensor,
) -> Batch:
    """Write n bindings and q queries onto `background` (B, T), which holds every other token (fillers,
    noise) and becomes the inputs.

    keys (B, n, a), values (B, n, b): binding i's key motif and value motif, in order of position;
    pair_pos (B, n): where binding i's key starts, its value follows at pair_pos + a;
    query_pos (B, q): where query j's key starts; latest (B, q): the binding it asks for (its key's latest).

    A query is its key's a tokens, then the first b - 1 tokens of the value fed back (teacher forcing):
    targets v_0 .. v_{b-1} are scored at query_pos + a - 1 + i, each with the lag back to the same token of
    the binding (query_pos - pair_pos[latest] - 1, the same for every token of the value). With a = b = 1:
    the key is repeated and its value scored at the query itself, the lag points at the value.
    """
    B, n, a = keys.shape
    b, q = values.shape[2], query_pos.shape[1]
    inputs = background
    inputs.scatter_(1, motif_positions(pair_pos, a), keys.reshape(B, n * a))
    inputs.scatter_(1, motif_positions(pair_pos + a, b), values.reshape(B, n * b))
    asked_keys, asked_values = take_motifs(keys, latest), take_motifs(values, latest)  # (B, q, a), (B, q, b)
    inputs.scatter_(1, motif_positions(query_pos, a), asked_keys.reshape(B, q * a))
    if b > 1:  # the value's first b - 1 tokens follow the key, fed back
        fed = motif_positions(query_pos + a, b - 1)  # (B, q * (b - 1))
        inputs.scatter_(1, fed, asked_values[..., :-1].reshape(B, q * (b - 1)))
    answer_pos = motif_positions(query_pos + (a - 1), b)  # (B, q * b)
    lag = (query_pos - pair_pos.gather(1, latest) - 1)[..., None].expand(B, q, b).reshape(B, q * b)
    targets = new_int64(inputs.shape, inputs.device, IGNORE).scatter_(1, answer_pos, asked_values.reshape(B, q * b))
    lags = new_int64(inputs.shape, inputs.device, NO_LAG).scatter_(1, answer_pos, lag)
    return Batch(inputs, targets, lags)


def place_pairs(
    background: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, query_pos: torch.Tensor,
    latest: torch.Tensor | None,
) -> Batch:
    """`place_recall` for one-token keys and values, back to back from position 0 (plain MQAR, with or without
    updates): the same batch by two strided copies and three scatters, 2-4x faster on the CPU.

    keys, values (B, n): binding i's key at 2i, its value at 2i + 1; query_pos (B, q): where query j is;
    latest (B, q): the binding it asks for, or None when query j asks for binding j.
    """
    n, q = keys.shape[1], query_pos.shape[1]
    inputs = background
    inputs[:, 0:2 * n:2], inputs[:, 1:2 * n:2] = keys, values
    if latest is None:
        asked_keys, asked_values = keys[:, :q], values[:, :q]  # (B, q) each
        latest = torch.arange(q, device=keys.device)  # (q,), broadcast over the rows
    else:
        asked_keys, asked_values = keys.gather(1, latest), values.gather(1, latest)  # (B, q) each
    inputs.scatter_(1, query_pos, asked_keys)
    lag = query_pos - (2 * latest + 1)  # (B, q): back to the value
    targets = new_int64(inputs.shape, inputs.device, IGNORE).scatter_(1, query_pos, asked_values)
    lags = new_int64(inputs.shape, inputs.device, NO_LAG).scatter_(1, query_pos, lag)
    return Batch(inputs, targets, lags)
