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

Key overwrite (num_updates = u, Zoology's `forgetting_mqar`): after the k pairs come u more, which bind u
of the keys again, to a new value; the query region starts at 2(k + u) and a query must return the latest
value:

    k_1 v_1 k_2 v_2 k_3 v_3 | k_3 v_3' | f k_3 f k_1 f k_2    -> v_3' at k_3 (not v_3), v_1 at k_1, ...

The re-bound keys are u of the k, drawn without replacement and in random order (a uniformly random ordered
u-tuple of distinct pair indices); each new value is uniform among the values other than the key's first one,
so an update always changes the answer. num_updates=0 draws nothing more: its bytes are version 1's.

Building blocks. The generator is written as pieces that `noisy_recall` (noise tokens among the pairs) and
`fuzzy_recall` (keys and values of several tokens) reuse through the hooks of `AssociativeRecall`
(`key_size`, `value_size`, `kv_vocab`, `noise_tokens`, `_context`, `tokens_per_pair`). The generic ones live
in `memtasks.recall_blocks`, each fast path beside its reference:
    distinct_randint, power_law_slots  the random draws (distinct keys, power-law query slots)
    motif_tokens, motif_codes          a motif of a tokens <-> its code, a base-K number
    place_recall, place_pairs          write bindings and queries onto a background; targets and lags
and the task's own are here:
    rebind                             the update draws: which bindings are re-bound, to what
    solve_recall                       the reference: the latest binding of each key motif wins
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from membench.checks import ConfigError, check_int
from membench.memtasks import IGNORE, Batch, Task, param, register_task
from membench.memtasks.base import Joints, SymbolTable
from membench.memtasks.recall_blocks import (
    distinct_randint,
    motif_codes,
    motif_tokens,
    new_int64,
    place_pairs,
    place_recall,
    power_law_slots,
    take_motifs,
)

_TOKENS_PER_PAIR = 8  # num_kv_pairs=None: seq_len // 8 pairs (4 tokens per token of a pair)
MIN_KV_VOCAB = 4  # keys and values (with the fillers) take at least 2 tokens each
MAX_KEY_MOTIFS = 2**18  # distinct key motifs drawn off the CPU take a (B, K^a) float tensor: bounded here


def rebind(
    values: torch.Tensor, num_updates: int, low: int, high: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The update draws of key overwrite. values (B, k, b): each binding's value motif, tokens in [low, high).

    Returns which (B, u): the bindings re-bound, a uniformly random ordered u-tuple of distinct indices of
    [0, k), and fresh (B, u, b): their new value motifs, each uniform among the (high - low)^b - 1 motifs
    other than the old one (old code + 1 + r, r uniform in [0, n - 1), modulo n = (high - low)^b).

    Example: k=3, u=1, values [[v2], [v0], [v5]] of 8 values: which [[2]], and fresh [[v(5 + 1 + r) % 8]]
    with r in [0, 7): any value but v5.
    """
    B, k, b = values.shape
    which = distinct_randint(B, num_updates, k, gen, values.device)  # (B, u)
    old = values.gather(1, which[..., None].expand(B, num_updates, b))  # (B, u, b)
    n = (high - low) ** b
    step = torch.randint(1, n, (B, num_updates), generator=gen, device=values.device)  # (B, u) in [1, n)
    fresh = motif_tokens((motif_codes(old - low, high - low) + step) % n, high - low, b) + low  # (B, u, b)
    return which, fresh


def check_power_a(name: str, a: object) -> None:
    """The power law's exponent must be a finite number > 0 (bools are not numbers)."""
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or a <= 0:
        raise ConfigError(f"{name} must be a number > 0 (0.01 as Zoology, 1 for uniform gaps), got {a!r}")


def solve_recall(inputs: torch.Tensor, num_keys: int, key_size: int, value_size: int, context_len: int) -> torch.Tensor:
    """Reference answers (B, T) from the inputs alone: every key motif in the query region is answered with
    the value of its latest binding in the context [0, context_len).

    1. motifs: a run of key tokens (< num_keys) starting at t is one key motif of `key_size` tokens; its code
       is the base-K number of inputs[t : t + a].
    2. bindings and queries: motif starts before context_len bind (the value follows the key), later ones ask.
    3. latest binding: sort every start by (code, position); in that order the last binding at or before a
       query (a running max) has the query's code when its key was bound, and is its latest binding.
    4. answers: token i of the value, inputs[binding + a + i], is the answer at query + a - 1 + i.
    Shapes: inputs (B, T) -> (B, T) int64, IGNORE where nothing is asked.
    """
    B, T = inputs.shape
    a, b, device = key_size, value_size, inputs.device
    is_key = inputs < num_keys  # (B, T)
    starts = is_key.clone()
    starts[:, 1:] &= ~is_key[:, :-1]  # (B, T): first token of a key motif
    padded = torch.nn.functional.pad(inputs, (0, a + b), value=num_keys)  # windows past the end read a non-key
    code = motif_codes(padded.unfold(1, a, 1)[:, :T].clamp(max=num_keys - 1), num_keys)  # (B, T): motif at t
    pos = torch.arange(T, device=device)  # (T,)
    binding, query = starts & (pos < context_len), starts & (pos >= context_len)  # (B, T) each
    order = code * T + pos  # (B, T): sorts by code, then position
    ranked, perm = order.masked_fill(~starts, -1).sort(dim=1)  # (B, T); non-starts first
    is_binding = binding.gather(1, perm)  # (B, T) in sorted order
    last_binding = ranked.masked_fill(~is_binding, -1).cummax(dim=1).values  # (B, T): latest binding so far
    found = torch.empty_like(last_binding).scatter_(1, perm, last_binding)  # (B, T) back in position order
    bound = torch.where(found // T == code, found % T, -1).masked_fill(~query, -1)  # (B, T): binding start
    answers = torch.full_like(inputs, IGNORE)
    for i in range(b):  # over the value's few tokens, not the sequence
        token = padded.gather(1, (bound + a + i).clamp(min=0))  # (B, T): value token i of that binding
        shift = a - 1 + i
        answers[:, shift:] = torch.where(query[:, :T - shift] & (bound[:, :T - shift] >= 0),
                                         token[:, :T - shift], answers[:, shift:])
    return answers


@register_task("associative_recall", order=10)
@dataclass
class AssociativeRecall(Task):
    """Multi-query associative recall: remember k key-value pairs, answer each key's later query.

    Params (Zoology's names):
        vocab_size:   total tokens; keys are [0, vocab_size // 2), values and fillers the rest (>= 4).
        num_kv_pairs: k, pairs per sequence (1 .. vocab_size // 2, and seq_len >= 4k + 2u - 1);
                      None: grows with seq_len as seq_len // 8, at least 1, at most vocab_size // 2.
        power_a:      a > 0; slot g of the query region is drawn with weight (g + 1)^(a - 1).
        num_updates:  u (0 .. k), keys bound again to a new value after the k pairs (Zoology's
                      forgetting_mqar); queries ask for the latest value. 0: plain MQAR.

    What grows with seq_len (num_kv_pairs=None): the number of pairs to hold, and with it the distance
    from each pair to its query. With num_kv_pairs set, only the spread of the queries grows.

    Lag: at a query for key j, the distance back to the value of its latest binding (v_j at position
    2j - 1, counting pairs from 1, unless re-bound), so inputs[t - lag] = that value = target.

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

    With num_updates=1 (same params, seq_len=11, seed=3) k3 is bound to v0, then again to v2 (t = 4, 5);
    its query answers v2, with the lag back to the update, not to the first binding:

        t        0   1   2   3   4   5   6   7   8   9   10
        inputs   k0  v0  k3  v0  k3  v2  k3  v1  k0  v1  v3
        targets  .   .   .   .   .   .   v2  .   v0  .   .
        lags     .   .   .   .   .   .   1   .   7   .   .

    Shapes: inputs, targets, lags (B, T) int64.
    """

    vocab_size: int = param(64, check_int, MIN_KV_VOCAB)
    num_kv_pairs: int | None = param(None, check_int, 1, none_means="grows with seq_len")
    power_a: float = param(0.01, check_power_a)
    num_updates: int = param(0, check_int, 0)

    description: ClassVar[str] = (
        "Zoology's multi-query associative recall: k key-value pairs, then each key queried once (power-law gaps)"
    )
    # 2: num_updates (key overwrite); its default 0 keeps version 1's bytes. noisy_recall and fuzzy_recall draw
    # through this generator: a change to its draws changes their data too, so bump their versions with it.
    version: ClassVar[int] = 2

    def check_params(self) -> None:
        if self.num_key_motifs > MAX_KEY_MOTIFS and self.key_size > 1:
            raise ConfigError(
                f"{self.num_keys} key tokens in motifs of {self.key_size} make {self.num_key_motifs} distinct keys; "
                f"at most {MAX_KEY_MOTIFS} are supported (lower vocab_size or k_motif_size)"
            )
        if self.num_kv_pairs is not None and self.num_kv_pairs > self.num_key_motifs:
            more = (f"raise vocab_size to >= {self.vocab_size - self.kv_vocab + 2 * self.num_kv_pairs}"
                    if self.key_size == 1 else "raise vocab_size or k_motif_size")
            raise ConfigError(
                f"num_kv_pairs={self.num_kv_pairs} needs that many distinct keys, but vocab_size="
                f"{self.vocab_size} has {self.num_key_motifs}; the maximum is {self.num_key_motifs} (or {more})"
            )
        if self.num_updates > (self.num_kv_pairs or self.num_key_motifs):
            raise ConfigError(
                f"num_updates={self.num_updates} re-binds that many of the {self.num_kv_pairs or self.num_key_motifs} "
                f"keys; the maximum is {self.num_kv_pairs or self.num_key_motifs}"
            )
        if self.num_updates and self.num_values ** self.value_size >= 2**62:
            raise ConfigError(f"num_updates needs fewer than 2^62 value motifs, got "
                              f"{self.num_values}^{self.value_size}")

    # --- hooks of the variants (noisy_recall, fuzzy_recall) ---------------------------------------------
    @property
    def key_size(self) -> int:
        """a: tokens per key."""
        return 1

    @property
    def value_size(self) -> int:
        """b: tokens per value."""
        return 1

    @property
    def kv_vocab(self) -> int:
        """Keys, values and fillers are tokens [0, kv_vocab); tokens above are the variant's own (noise)."""
        return self.vocab_size

    @property
    def tokens_per_pair(self) -> float:
        """num_kv_pairs=None: seq_len // tokens_per_pair pairs (8 for one-token keys and values)."""
        return _TOKENS_PER_PAIR // 2 * self.pair_width

    def noise_tokens(self, bindings: int) -> int:
        """m: noise tokens among `bindings` pairs of the context."""
        return 0

    def _context(
        self, batch_size: int, bindings: int, gen: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(noise (B, c) or None, pair_pos (B, n)): the context's background and where binding i starts.
        Here: no noise, the pairs back to back."""
        pair_pos = self.pair_width * torch.arange(bindings, device=device)  # (n,)
        return None, pair_pos.expand(batch_size, bindings)

    # --- layout ----------------------------------------------------------------------------
    @property
    def num_keys(self) -> int:
        """K: keys are tokens [0, K), values and fillers tokens [K, kv_vocab)."""
        return self.kv_vocab // 2

    @property
    def num_values(self) -> int:
        return self.kv_vocab - self.num_keys

    def answer_candidates(self) -> list[int]:
        """The value tokens [K, kv_vocab): every token of a value motif is one of them."""
        return list(range(self.num_keys, self.kv_vocab))

    @property
    def num_key_motifs(self) -> int:
        """Distinct keys: K^a."""
        return self.num_keys ** self.key_size

    @property
    def pair_width(self) -> int:
        return self.key_size + self.value_size

    def pairs(self, seq_len: int) -> int:
        """k used at `seq_len`, with num_kv_pairs=None derived."""
        if self.num_kv_pairs is not None:
            return self.num_kv_pairs
        return max(1, min(math.floor(seq_len / self.tokens_per_pair), self.num_key_motifs))

    def context_len(self, seq_len: int, k: int | None = None) -> int:
        """c: the bindings (k pairs and u updates) and their noise; the query region is [c, seq_len)."""
        n = (self.pairs(seq_len) if k is None else k) + self.num_updates
        return n * self.pair_width + self.noise_tokens(n)

    def num_slots(self, seq_len: int, k: int | None = None) -> int:
        """S: query slots, every pair_width tokens of the query region, each with room for a whole query."""
        room = seq_len - self.context_len(seq_len, k) - (self.pair_width - 1)
        return room // self.pair_width + 1 if room >= 0 else 0

    def _fits(self, seq_len: int, k: int | None = None) -> bool:
        k = self.pairs(seq_len) if k is None else k
        return self.num_updates <= k and self.num_slots(seq_len, k) >= k

    def min_length(self) -> int:
        if self.num_kv_pairs is not None:
            k = self.num_kv_pairs  # S >= k
            return self.context_len(0, k) + k * self.pair_width - 1
        seq_len = 1
        while not self._fits(seq_len):  # k grows with seq_len: the first length that fits (a short walk)
            seq_len += 1
        return seq_len

    def check_length(self, seq_len: int) -> None:
        if self._fits(seq_len):
            return
        if self.num_kv_pairs is None:
            raise ConfigError(
                f"seq_len={seq_len} is too short for {self.name} with {self.describe_params()}: "
                f"the minimum is {self.min_length()}"
            )
        k, most = self.num_kv_pairs, 0
        for fewer in range(max(1, self.num_updates), self.num_key_motifs + 1):  # fits less and less as k grows
            if not self._fits(seq_len, fewer):
                break
            most = fewer
        updates = f" and {self.num_updates} updates" if self.num_updates else ""
        raise ConfigError(
            f"seq_len={seq_len} is too short for {self.name} with num_kv_pairs={k}{updates}: k pairs and k query "
            f"slots need seq_len >= {self.min_length()}; at seq_len={seq_len} the maximum num_kv_pairs is {most}"
        )

    # --- generation ------------------------------------------------------------------------
    def _generate(self, batch_size: int, seq_len: int, gen: torch.Generator, device: torch.device) -> Batch:
        B, T, K, k, u = batch_size, seq_len, self.num_keys, self.pairs(seq_len), self.num_updates
        a, b, c = self.key_size, self.value_size, self.context_len(seq_len)
        key_codes = distinct_randint(B, k, self.num_key_motifs, gen, device)  # (B, k)
        keys = motif_tokens(key_codes, K, a)  # (B, k, a)
        values = torch.randint(K, self.kv_vocab, (B, k, b), generator=gen, device=device)  # (B, k, b)
        latest = None  # query j asks for binding j ...
        if u:
            which, fresh = rebind(values, u, K, self.kv_vocab, gen)  # (B, u), (B, u, b)
            keys = torch.cat([keys, take_motifs(keys, which)], dim=1)  # (B, k + u, a)
            values = torch.cat([values, fresh], dim=1)  # (B, k + u, b)
            latest = torch.arange(k, device=device).expand(B, k).scatter(  # ... or for its update
                1, which, k + torch.arange(u, device=device).expand(B, u))  # (B, k)
        slots = power_law_slots(B, k, self.num_slots(T), self.power_a, gen, device)  # (B, k)
        noise, pair_pos = self._context(B, k + u, gen, device)  # (B, c) or None, (B, k + u)

        background = new_int64((B, T), device)
        if noise is not None:
            background[:, :c] = noise
        fillers = background[:, c:]  # (B, T - c)
        if device.type == "cpu":  # drawn in place: the same draws as the int32 tensor below (tested), without it
            fillers.random_(K, self.kv_vocab, generator=gen)
        else:  # drawn as int32 (faster than int64) and widened on the copy
            fillers.copy_(torch.randint(K, self.kv_vocab, (B, T - c), generator=gen, device=device, dtype=torch.int32))
        query_pos = slots.mul_(self.pair_width).add_(c)  # (B, k)
        if a == b == 1 and noise is None:  # one-token pairs filling [0, c): back to back, the fast path
            return place_pairs(background, keys[..., 0], values[..., 0], query_pos, latest)
        if latest is None:
            latest = torch.arange(k, device=device).expand(B, k)
        return place_recall(background, keys, values, pair_pos, query_pos, latest)

    # --- reference -------------------------------------------------------------------------
    def solve(self, inputs: torch.Tensor) -> torch.Tensor:
        """Each key of the query region answered with its latest binding's value (`solve_recall`). (B, T) -> (B, T)."""
        T = inputs.shape[1]
        return solve_recall(inputs, self.num_keys, self.key_size, self.value_size, self.context_len(T))

    # --- display ---------------------------------------------------------------------------
    def token_name(self, token: int) -> str:
        return f"k{token}" if token < self.num_keys else f"v{token - self.num_keys}"

    def symbol_table(self, seq_len: int) -> SymbolTable:
        """Readable text: a binding per line, `k1: v3` (a motif's tokens one space apart, `k1 k0: v2 v3`), noise
        on lines of its own; then the query region, each query answered after `: ` and ending its line:

            k1: v2
            k3: v3
            k3: v3
            v2 k1: v2
            v3 v3
        """
        return SymbolTable(
            word=self.token_name,
            instruction="Each line 'key: value' binds a key to a value; answer each key asked again with its latest "
                        "value.",
            joints=self._joints,
        )

    def _joints(self, inputs: list[int], targets: list[int]) -> Joints:
        T, a, w, c = len(inputs), self.key_size, self.pair_width, self.context_len(len(inputs))
        before, marks, fed = [" "] * T, [": "] * T, set()
        t = 0
        while t < c:  # a binding starts at a key token; anything else in the context is noise
            before[t] = "\n"
            if inputs[t] < self.num_keys:
                before[t + a] = ": "
                t += w
            else:
                t += 1
        if c < T:
            before[c] = "\n"
        for t in range(c, T):
            if targets[t] == IGNORE:
                continue
            after_key = inputs[t] < self.num_keys  # the answer's first token, else a value token fed back
            if t + 1 < T and targets[t + 1] != IGNORE:  # the value goes on: this token is fed back next
                fed.add(t)
                before[t + 1] = ": " if after_key else " "
            else:
                marks[t] = ": " if after_key else " "
                if t + 1 < T:
                    before[t + 1] = "\n"
        before[0] = ""
        return Joints(before, marks, frozenset(fed))

    def render(self, batch: Batch, i: int = 0) -> str:
        """Two lines: the context with each binding as `k1=v3` (a motif's names run together: `k1k0=v2v3`),
        then the query region with each scored position marked [token -> answer]."""
        inputs, targets = batch.inputs[i].tolist(), batch.targets[i].tolist()
        a, w, c = self.key_size, self.pair_width, self.context_len(len(inputs))
        names = [self.token_name(t) for t in inputs]
        cells, t = [], 0
        while t < c:  # a binding starts at a key token; anything else in the context is noise
            if inputs[t] < self.num_keys:
                cells.append("".join(names[t:t + a]) + "=" + "".join(names[t + a:t + w]))
                t += w
            else:
                cells.append(names[t])
                t += 1
        queries = " ".join(
            f"[{name} -> {self.token_name(tgt)}]" if tgt != IGNORE else name
            for name, tgt in zip(names[c:], targets[c:])
        )
        return f"pairs:   {' '.join(cells)}\nqueries: {queries}"
