"""associative_recall: multi-query associative recall (MQAR, Zoology): bind keys to values, then answer queries.

A sequence is k key-value pairs followed by a query region (k = num_kv_pairs, T = seq_len):

    k_1 v_1 k_2 v_2 .. k_k v_k | f f k_3 f f f k_1 f ..      -> v_3 at k_3, v_1 at k_1, ...

Every key is queried once, by repeating it; the answer (its value) is scored at the query itself. The
query region has S = ceil((T - 2k) / 2) slots at its even offsets; key j is queried at slot g_j, the
j-th of k slots drawn one after another without replacement with P(g) proportional to (g + 1)^(a - 1)
(a = power_a), exactly Zoology's `np.random.choice(S, k, replace=False, p=p)`. With a = 0.01 most queries
come soon after the pairs; a = 1 spreads them uniformly. Every other position holds a filler token.

The vocabulary is split in two: keys are tokens [0, K) with K = vocab_size // 2, values and fillers are
tokens [K, vocab_size). Fillers are never keys, so a query cannot be confused with filler.
Keys are distinct within a sequence (one (B, k) sort and a few redraws, never a (B, vocab) tensor: see
`distinct_randint`); values are drawn independently (they may repeat, unlike Zoology's, so no answer can
be had by elimination). For even seq_len the query slots and their law are Zoology's; an odd seq_len
adds one slot at the last position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from membench.checks import ConfigError, check_int
from membench.memtasks import IGNORE, NO_LAG, Batch, Task, register_task

_TOKENS_PER_PAIR = 8  # num_kv_pairs=None: seq_len // 8 pairs


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


def distinct_randint(batch_size: int, k: int, high: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """(B, k) int64: per row, k distinct integers from [0, high), a uniformly random ordered k-tuple.

    Draw all k with replacement, then redraw every repeat (each value after its first occurrence in the
    row) until a row has none. Which entries are redrawn depends only on which entries are equal, never on
    their values, so the law of the result is unchanged by any relabelling of [0, high); the only such
    law on ordered k-tuples of distinct values is the uniform one, the same as
    `distinct_randint_reference`. Work: one sort of (B, k), then O(k) per redraw (about k^2 / (2 high)
    redraws per row). When 2k >= high repeats would be frequent, and on an accelerator (where the loop's
    host syncs would stall the training step), the sync-free reference is used instead.

    Example: batch_size=1, k=4, high=10; draws [3, 7, 3, 1] -> the second 3 is redrawn, say as 7 ->
    it repeats 7, redrawn again, say as 0 -> [3, 7, 0, 1].
    """
    if 2 * k >= high or torch.device(device).type != "cpu":  # the redraw loop below syncs with the host
        return distinct_randint_reference(batch_size, k, high, gen, device)
    draws = torch.randint(high, (batch_size, k), generator=gen, device=device)  # (B, k)
    # find repeats: sort (value, position) pairs packed in one integer; an entry whose value equals its
    # predecessor's in sorted order repeats an earlier entry
    bits = (k - 1).bit_length()  # position takes the low bits
    dtype = torch.int32 if high << bits <= 2**31 else torch.int64  # int32 sorts faster
    paired = (draws.to(dtype) << bits) | torch.arange(k, device=device, dtype=dtype)  # (B, k)
    paired = paired.sort(dim=1).values  # ascending by value, then by position
    value = paired >> bits  # (B, k)
    rows, cols = (value[:, 1:] == value[:, :-1]).nonzero(as_tuple=True)  # (n,) each: repeats in sorted order
    cols = (paired[rows, cols + 1] & ((1 << bits) - 1)).long()  # (n,): their positions in the row
    while rows.numel():  # only the repeats are redrawn, each compared with its row: O(k) per redraw
        fresh = torch.randint(high, (rows.numel(),), generator=gen, device=device)  # (n,)
        draws[rows, cols] = fresh
        clash = (draws[rows] == fresh[:, None]).sum(dim=1) > 1  # (n,): equal to another entry of its row
        rows, cols = rows[clash], cols[clash]
    return draws


def power_law_slots(
    batch_size: int, k: int, num_slots: int, power_a: float, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """(B, k) int64: per row, k distinct slots of [0, num_slots) in the order they are drawn one by one
    without replacement, each draw with probability proportional to (g + 1)^(power_a - 1) among the
    slots left.

    Vectorised as an exponential race (Efraimidis & Spirakis, 2006): slot g arrives at time E_g / w_g
    with E_g ~ Exp(1) and w_g = (g + 1)^(power_a - 1); the first k arrivals, in order of arrival, have
    exactly the law of the k sequential draws. One (B, S) top-k.

    Example: num_slots=3, power_a=0.01, k=2: weights 1, 0.50, 0.34; the first slot drawn is 0 with
    probability 1 / 1.84 = 0.54, and [0, 1] is the most likely result.
    """
    rank = torch.arange(1, num_slots + 1, device=device, dtype=torch.float32)  # (S,): g + 1
    uniform = torch.rand(batch_size, num_slots, generator=gen, device=device)  # (B, S) in [0, 1)
    arrival = torch.log1p(-uniform) * rank.pow(1.0 - power_a)  # (B, S): -E_g / w_g, latest most negative
    return arrival.topk(k, dim=1).indices  # (B, k): earliest arrival first


@register_task("associative_recall", order=10)
@dataclass
class AssociativeRecall(Task):
    """Multi-query associative recall: remember k key-value pairs, answer each key's later query.

    Params (Zoology's names):
        vocab_size:   total tokens; keys are [0, vocab_size // 2), values and fillers the rest (>= 4).
        num_kv_pairs: k, pairs per sequence (1 .. vocab_size // 2, and seq_len >= 4k - 1);
                      None: grows with seq_len as seq_len // 8, at least 1, at most vocab_size // 2.
        power_a:      a > 0; slot g of the query region is drawn with weight (g + 1)^(a - 1).

    What grows with seq_len (num_kv_pairs=None): the number of pairs to hold, and with it the distance
    from each pair to its query. With num_kv_pairs set, only the spread of the queries grows.

    Lag: at a query for key j, the distance back to v_j (position 2j - 1, counting pairs from 1),
    so inputs[t - lag] = v_j = target.

    Worked example (vocab_size=8: keys k0..k3, values v0..v3; num_kv_pairs=2, seq_len=9, seed=2;
    `.` = not scored). The pairs are k1:v2 and k3:v3; S = 3 query slots at t = 4, 6, 8; k3 is queried
    at slot 0, k1 at slot 1; the other query-region tokens are fillers from the value range:

        t        0   1   2   3   4   5   6   7   8
        inputs   k1  v2  k3  v3  k3  v2  k1  v3  v3
        targets  .   .   .   .   v3  .   v2  .   .
        lags     .   .   .   .   1   .   5   .   .

    `render` shows the pairs, then the query region with each query marked [key -> value]:

        pairs:   k1=v2 k3=v3
        queries: [k3 -> v3] v2 [k1 -> v2] v3 v3

    Shapes: inputs, targets, lags (B, T) int64.
    """

    vocab_size: int = 64
    num_kv_pairs: int | None = None
    power_a: float = 0.01

    description: ClassVar[str] = (
        "Zoology's multi-query associative recall: k key-value pairs, then each key queried once (power-law gaps)"
    )
    version: ClassVar[int] = 1

    def check_params(self) -> None:
        check_int("vocab_size", self.vocab_size, 4)
        if self.num_kv_pairs is not None:
            check_int("num_kv_pairs", self.num_kv_pairs, 1)
            if self.num_kv_pairs > self.num_keys:
                raise ConfigError(
                    f"num_kv_pairs={self.num_kv_pairs} needs that many distinct keys, but vocab_size="
                    f"{self.vocab_size} has {self.num_keys}; the maximum is {self.num_keys} (or raise vocab_size "
                    f"to >= {2 * self.num_kv_pairs})"
                )
        a = self.power_a
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or a <= 0:
            raise ConfigError(f"power_a must be a number > 0 (0.01 as Zoology, 1 for uniform gaps), got {a!r}")

    # --- layout ----------------------------------------------------------------------------
    @property
    def num_keys(self) -> int:
        """K: keys are tokens [0, K), values and fillers tokens [K, vocab_size)."""
        return self.vocab_size // 2

    def pairs(self, seq_len: int) -> int:
        """k used at `seq_len`, with num_kv_pairs=None derived."""
        if self.num_kv_pairs is not None:
            return self.num_kv_pairs
        return max(1, min(seq_len // _TOKENS_PER_PAIR, self.num_keys))

    @staticmethod
    def num_slots(seq_len: int, k: int) -> int:
        """S: query slots, at the even offsets of the query region [2k, seq_len)."""
        return (seq_len - 2 * k + 1) // 2

    def min_length(self) -> int:
        return 4 * (self.num_kv_pairs or 1) - 1  # S >= k

    def check_length(self, seq_len: int) -> None:
        if seq_len < self.min_length():
            k = self.num_kv_pairs or 1
            raise ConfigError(
                f"seq_len={seq_len} is too short for associative_recall with num_kv_pairs={k}: k pairs and k "
                f"query slots need seq_len >= {4 * k - 1}; at seq_len={seq_len} the maximum num_kv_pairs is "
                f"{max(0, (seq_len + 1) // 4)}"
            )

    # --- generation ------------------------------------------------------------------------
    def _generate(self, batch_size: int, seq_len: int, gen: torch.Generator, device: torch.device) -> Batch:
        B, T, K, k = batch_size, seq_len, self.num_keys, self.pairs(seq_len)
        keys = distinct_randint(B, k, K, gen, device)  # (B, k)
        values = torch.randint(K, self.vocab_size, (B, k), generator=gen, device=device)  # (B, k)
        slots = power_law_slots(B, k, self.num_slots(T, k), self.power_a, gen, device)  # (B, k)
        query_pos = 2 * k + 2 * slots  # (B, k): key j is queried here
        value_pos = 2 * torch.arange(k, device=device) + 1  # (k,): v_j sits here

        inputs = torch.empty((B, T), dtype=torch.long, device=device)
        inputs[:, 0:2 * k:2], inputs[:, 1:2 * k:2] = keys, values  # the pairs
        # fillers, drawn as int32 (several times faster than int64 on CPU) and widened on the copy
        inputs[:, 2 * k:] = torch.randint(
            K, self.vocab_size, (B, T - 2 * k), generator=gen, device=device, dtype=torch.int32
        )
        inputs.scatter_(1, query_pos, keys)  # the queries
        targets = torch.full((B, T), IGNORE, dtype=torch.long, device=device).scatter_(1, query_pos, values)
        lags = torch.full((B, T), NO_LAG, dtype=torch.long, device=device).scatter_(1, query_pos, query_pos - value_pos)
        return Batch(inputs, targets, lags)

    # --- reference -------------------------------------------------------------------------
    def solve(self, inputs: torch.Tensor) -> torch.Tensor:
        """Look each key of the query region up in the pairs: a (B, K) key -> value table. (B, T) -> (B, T)."""
        B, T = inputs.shape
        K, k = self.num_keys, self.pairs(T)
        table = torch.full((B, K), IGNORE, dtype=torch.long, device=inputs.device)
        table.scatter_(1, inputs[:, 0:2 * k:2], inputs[:, 1:2 * k:2])  # table[b, key] = value
        looked_up = table.gather(1, inputs.clamp(max=K - 1))  # (B, T)
        in_queries = torch.arange(T, device=inputs.device) >= 2 * k  # (T,)
        is_query = (inputs < K) & in_queries
        return torch.where(is_query, looked_up, torch.full_like(inputs, IGNORE))

    # --- display ---------------------------------------------------------------------------
    def token_name(self, token: int) -> str:
        return f"k{token}" if token < self.num_keys else f"v{token - self.num_keys}"

    def render(self, batch: Batch, i: int = 0) -> str:
        """Two lines: the pairs as `k1=v3`, then the query region with queries marked [key -> value]."""
        inputs, targets = batch.inputs[i].tolist(), batch.targets[i].tolist()
        k = self.pairs(len(inputs))
        names = [self.token_name(t) for t in inputs]
        pairs = " ".join(f"{names[2 * j]}={names[2 * j + 1]}" for j in range(k))
        queries = " ".join(
            f"[{name} -> {self.token_name(tgt)}]" if tgt != IGNORE else name
            for name, tgt in zip(names[2 * k:], targets[2 * k:])
        )
        return f"pairs:   {pairs}\nqueries: {queries}"
