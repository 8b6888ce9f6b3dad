"""noisy_recall: associative recall with noise tokens among the pairs (MAD-lab's noisy in-context recall).

The layout is `associative_recall`'s, with m noise tokens mixed into the pair region (f = frac_noise):

    k_1 v_1 n n k_2 v_2 n k_3 v_3 n | f k_2 f f k_1 f ..     -> v_2 at k_2, v_1 at k_1, ...

Noise tokens come from their own vocabulary (the top noise_vocab_size tokens, never keys, values or fillers)
and sit only between pairs, never between a key and its value. With n bindings in the context (k pairs and
u updates), m = round(2n f / (1 - f)), so that noise is the fraction f of the pair region's 2n + m tokens
(exact up to that rounding, the same in every row). Which of the n + m units (a pair or one noise token)
are pairs is a uniformly random n-subset, the pairs keeping their order; every noise token is uniform over
the noise vocabulary. The query region, its power-law slots, the fillers, the answers and the lags are
associative recall's, drawn by its generator (this file only adds the noise).

MAD-lab (Poli et al. 2024) draws a Bernoulli(frac_noise) per two-token slot of a stream of pairs; here the
count is fixed so that every row has the same pair region and query region, and noise may be a single token,
so the pairs do not keep an even alignment a model could count on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from membench.checks import ConfigError, check_int, check_number
from membench.memtasks import param, register_task
from membench.memtasks.recall_blocks import distinct_randint_reference
from membench.memtasks.tasks.associative_recall import MIN_KV_VOCAB, AssociativeRecall


@register_task("noisy_recall", order=11)
@dataclass
class NoisyRecall(AssociativeRecall):
    """Associative recall whose pairs are scattered among noise tokens: the noise must be ignored.

    Params (MAD-lab's names where it has them):
        vocab_size:       total tokens: keys [0, K), values and fillers [K, V - N), noise [V - N, V), with
                          N = noise_vocab_size and K = (V - N) // 2; V - N >= 4.
        noise_vocab_size: N >= 1, tokens used only as noise.
        frac_noise:       f in [0, 1), the fraction of the pair region that is noise.
        num_kv_pairs, power_a, num_updates: as associative_recall; num_kv_pairs=None gives
                          seq_len // (8 + 2f / (1 - f)) pairs (the noise takes its share of every pair's
                          8 tokens), at least 1, at most K.

    What grows with seq_len (num_kv_pairs=None): the number of pairs, and with it the noise among them.

    Lag: as associative recall, back to the value of the key's latest binding, across the noise.

    Worked example (vocab_size=12, noise_vocab_size=4: keys k0..k3, values v0..v3, noise n0..n3;
    num_kv_pairs=2, frac_noise=0.5: m = 4 noise tokens; seq_len=11, seed=2; `.` = not scored). The pairs
    k1:v2 and k3:v3 sit among n1 .. n0; the query region starts at c = 2 * 2 + 4 = 8:

        t        0   1   2   3   4   5   6   7   8   9   10
        inputs   n1  k1  v2  n3  n2  k3  v3  n0  k3  v3  k1
        targets  .   .   .   .   .   .   .   .   v3  .   v2
        lags     .   .   .   .   .   .   .   .   2   .   8

    `render`:

        pairs:   n1 k1=v2 n3 n2 k3=v3 n0
        queries: [k3 -> v3] v3 [k1 -> v2]

    Shapes: inputs, targets, lags (B, T) int64.
    """

    # num_kv_pairs, power_a and num_updates as in associative_recall
    vocab_size: int = param(80, check_int, MIN_KV_VOCAB + 1)  # keys and values, and a noise token at least
    frac_noise: float = param(0.2, check_number, 0.0, 1.0, high_open=True)
    noise_vocab_size: int = param(16, check_int, 1)

    description: ClassVar[str] = (
        "MAD-lab's noisy recall: associative recall with noise tokens (frac_noise of the pair region) among the pairs"
    )
    version: ClassVar[int] = 1

    def check_params(self) -> None:
        if self.kv_vocab < MIN_KV_VOCAB:
            raise ConfigError(
                f"vocab_size={self.vocab_size} leaves {self.kv_vocab} tokens for keys and values after "
                f"noise_vocab_size={self.noise_vocab_size}; at least {MIN_KV_VOCAB} are needed (vocab_size >= "
                f"{self.noise_vocab_size + MIN_KV_VOCAB})"
            )
        super().check_params()

    # --- the hooks of associative_recall ------------------------------------------------------
    @property
    def kv_vocab(self) -> int:
        return self.vocab_size - self.noise_vocab_size

    @property
    def tokens_per_pair(self) -> float:
        return super().tokens_per_pair + self.pair_width * self.frac_noise / (1 - self.frac_noise)

    def noise_tokens(self, bindings: int) -> int:
        return math.floor(bindings * self.pair_width * self.frac_noise / (1 - self.frac_noise) + 0.5)

    def _context(
        self, batch_size: int, bindings: int, gen: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The pair region as n pairs and m noise tokens in random order: unit u_i (sorted) is pair i, so it
        starts at u_i + (w - 1) i (each earlier pair is w tokens, not one)."""
        n, m, w = bindings, self.noise_tokens(bindings), self.pair_width
        units = distinct_randint_reference(batch_size, n, n + m, gen, device).sort(dim=1).values  # (B, n)
        pair_pos = units + (w - 1) * torch.arange(n, device=device)  # (B, n)
        noise = torch.randint(self.kv_vocab, self.vocab_size, (batch_size, n * w + m), generator=gen, device=device)
        return noise, pair_pos

    # --- display ---------------------------------------------------------------------------
    def token_name(self, token: int) -> str:
        return f"n{token - self.kv_vocab}" if token >= self.kv_vocab else super().token_name(token)
