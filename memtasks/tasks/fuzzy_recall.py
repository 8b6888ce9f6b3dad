"""fuzzy_recall: associative recall whose keys and values are motifs of several tokens (MAD-lab's fuzzy
in-context recall).

The layout is `associative_recall`'s with every key a motif of a tokens and every value a motif of b tokens
(a = k_motif_size, b = v_motif_size); a query repeats the key motif, then the value is produced token by
token, each token fed back before the next is asked for (teacher forcing):

    K_1 V_1 K_2 V_2 .. K_k V_k | f f f f K_2 v v f ..        (K = a key tokens, V = b value tokens)
    query: k k k v v f          -> v at the key's last token, then at each fed value token its successor

Key motifs are distinct within a sequence (distinct codes in [0, K^a), decoded to base-K digits: one motif
can repeat another's tokens in another order, or share all but one); value motifs are b independent
uniform value tokens. A query slot is a + b tokens: the key (a), the fed value tokens (b - 1) and one
filler, so queries never touch; the query region has S = (T - c - (a + b - 1)) // (a + b) + 1 slots, drawn
with associative recall's power law. Key tokens appear only in key motifs, so a run of key tokens is one
whole motif; the generator, the answers and the lags are associative recall's (this file sets the sizes).

MAD-lab (Poli et al. 2024) draws motif sizes from 1 to the maximum for every pair in training and prompts at
the maximum key size in evaluation; here every motif has exactly the maximum sizes, in training and
evaluation alike, so that the query layout (and what is scored) is the same in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from membench.checks import check_int
from membench.memtasks import param, register_task
from membench.memtasks.tasks.associative_recall import MIN_KV_VOCAB, AssociativeRecall


@register_task("fuzzy_recall", order=12)
@dataclass
class FuzzyRecall(AssociativeRecall):
    """Associative recall of multi-token values under multi-token keys: a key is only known once all its
    tokens are read, a value must be recalled whole.

    Params (MAD-lab's names and defaults):
        vocab_size:   total tokens; key tokens [0, K) with K = vocab_size // 2, value tokens and fillers
                      the rest (>= 4); K^a <= 2^18 distinct key motifs.
        k_motif_size: a >= 1, tokens per key.
        v_motif_size: b >= 1, tokens per value.
        num_kv_pairs, power_a, num_updates: as associative_recall (an update re-binds a key motif to a new
                      value motif); num_kv_pairs=None gives seq_len // (4 (a + b)) pairs, at least 1, at most
                      K^a.

    What grows with seq_len (num_kv_pairs=None): the number of pairs to hold.

    Lag: at each of the b scored positions of a query (the key's last token, then the fed value tokens), the
    distance back to the same token of the value in the latest binding: inputs[t - lag] = target. It is
    the same for all b of them (query start - binding start - 1).

    Worked example (vocab_size=8: key tokens k0..k3, value tokens v0..v3; k_motif_size=2, v_motif_size=2;
    num_kv_pairs=2, seq_len=16, seed=2; `.` = not scored). The pairs are k2k0:v1v0 and k3k3:v2v3; the query
    region starts at t = 8 with S = 2 slots of 4 tokens; the queries fill both:

        t        0   1   2   3   4   5   6   7   8   9   10  11  12  13  14  15
        inputs   k2  k0  v1  v0  k3  k3  v2  v3  k3  k3  v2  v1  k2  k0  v1  v3
        targets  .   .   .   .   .   .   .   .   .   v2  v3  .   .   v1  v0  .
        lags     .   .   .   .   .   .   .   .   .   3   3   .   .   11  11  .

    `render`:

        pairs:   k2k0=v1v0 k3k3=v2v3
        queries: k3 [k3 -> v2] [v2 -> v3] v1 k2 [k0 -> v1] [v1 -> v0] v3

    Shapes: inputs, targets, lags (B, T) int64.
    """

    # num_kv_pairs, power_a and num_updates as in associative_recall
    vocab_size: int = param(16, check_int, MIN_KV_VOCAB)
    k_motif_size: int = param(3, check_int, 1)
    v_motif_size: int = param(3, check_int, 1)

    description: ClassVar[str] = (
        "MAD-lab's fuzzy recall: associative recall of multi-token values under multi-token keys (motifs)"
    )
    version: ClassVar[int] = 1

    # --- the hooks of associative_recall ------------------------------------------------------
    @property
    def key_size(self) -> int:
        return self.k_motif_size

    @property
    def value_size(self) -> int:
        return self.v_motif_size
