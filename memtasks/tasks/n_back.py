"""n_back: the n-back task of working-memory research. At every position from n on, say whether the current
symbol equals the one n positions back.

A sequence is a stream of symbols s_0 .. s_{T-1}; the answer at t >= n is MATCH when s_t = s_{t-n} and
NONMATCH otherwise (n = 2 below):

    s3 s1 s3 s0 s0 s2 s0        -> MATCH at t = 2 (s3 = s3), NONMATCH at t = 3, 4, 5, MATCH at t = 6

The model must hold the last n symbols, in order, at every step: the memory load is n.

Law of the draws. s_0 .. s_{n-1} are uniform over the S = num_symbols symbols. Each later s_t repeats
s_{t-n} with probability match_prob, and otherwise is uniform over the S - 1 other symbols; every decision
is independent. So every s_t is uniform and P(MATCH) = match_prob at every scored position, whatever the
current symbol (the current symbol alone says nothing about the answer).

Vectorised by chains: positions c, c + n, c + 2n, ... form chain c (c < n), and along a chain each step
adds 0 (match) or a shift in [1, S) (non-match) modulo S. So s = (s_c + cumsum of the steps along its
chain) mod S: one (B, T/n, n) cumulative sum, no loop over tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from membench.checks import check_int, check_number
from membench.memtasks import IGNORE, NO_LAG, Batch, param, register_task
from membench.memtasks.base import Joints, SymbolTable
from membench.memtasks.match_tasks import MatchTask

MATCH, NONMATCH = range(2)
_SPECIAL_NAMES = ("MATCH", "NONMATCH")
_READABLE_NAMES = ("yes", "no")  # the words of the text rendering
_TOKENS_PER_BACK = 8  # n=None: n = seq_len // 8


@register_task("n_back", order=44)
@dataclass
class NBack(MatchTask):
    """n-back: at every t >= n, MATCH if s_t equals s_{t-n}, else NONMATCH.

    Params:
        n:           how far back to compare (>= 1); None: grows with seq_len as max(1, seq_len // 8).
        num_symbols: S, symbols in the stream (>= 2).
        match_prob:  probability that a scored position is a match (0 < match_prob < 1).

    What grows with seq_len (n=None): n, the number of symbols that must be held in order. With n set,
    only the number of answers.

    Lag: the answer is computed, not copied (`recalls_token = False`); the lag is n at every scored
    position and points at s_{t-n}, the symbol compared with the current one.

    Worked example (n=2, num_symbols=4: symbols s0..s3; seq_len=8, seed=1; `.` = not scored;
    M = MATCH, N = NONMATCH):

        t        0   1   2   3   4   5   6   7
        inputs   s1  s3  s1  s2  s1  s3  s2  s3
        targets  .   .   M   N   M   N   N   M
        lags     .   .   2   2   2   2   2   2

    `render` writes the stream with each answer marked:

        2-back: s1 s3 [s1 -> MATCH] [s2 -> NONMATCH] [s1 -> MATCH] [s3 -> NONMATCH] [s2 -> NONMATCH] [s3 -> MATCH]

    Shapes: inputs, targets, lags (B, T) int64.
    """

    n: int | None = param(None, check_int, 1, none_means="grows with seq_len as seq_len // 8")
    num_symbols: int = param(8, check_int, 2)
    match_prob: float = param(0.5, check_number, 0, 1, low_open=True, high_open=True)

    description: ClassVar[str] = "n-back: at every step, MATCH or NONMATCH: is this symbol the one n steps back?"
    version: ClassVar[int] = 1
    special_names: ClassVar[tuple[str, ...]] = _SPECIAL_NAMES  # tokens 0, 1, ..; the symbols follow
    readable_names: ClassVar[tuple[str, ...]] = _READABLE_NAMES

    def back(self, seq_len: int) -> int:
        """n used at `seq_len`, with n=None derived."""
        return self.n if self.n is not None else max(1, seq_len // _TOKENS_PER_BACK)

    def min_length(self) -> int:
        return (self.n or 1) + 1  # one scored position

    # --- generation ------------------------------------------------------------------------
    def _generate(self, batch_size: int, seq_len: int, gen: torch.Generator, device: torch.device) -> Batch:
        B, T, S, n = batch_size, seq_len, self.num_symbols, self.back(seq_len)
        m = -(-T // n)  # chain length: positions c, c + n, .., padded to m * n
        first = torch.randint(S, (B, 1, n), generator=gen, device=device)  # (B, 1, n): s_0 .. s_{n-1}
        match = torch.rand(B, m, n, generator=gen, device=device) < self.match_prob  # (B, m, n)
        shift = torch.randint(1, S, (B, m, n), generator=gen, device=device)  # (B, m, n): a different symbol
        step = torch.where(match, 0, shift)  # (B, m, n)
        step[:, 0] = 0  # the chain heads are `first` itself
        symbols = (first + step.cumsum(dim=1)) % S  # (B, m, n)
        inputs = (symbols.reshape(B, m * n)[:, :T] + self.first_symbol).contiguous()  # (B, T)

        scored = torch.arange(T, device=device) >= n  # (T,)
        answer = torch.where(match, MATCH, NONMATCH).reshape(B, m * n)[:, :T]  # (B, T)
        targets = torch.where(scored, answer, IGNORE)  # (B, T)
        lags = torch.where(scored, n, NO_LAG).expand(B, T).contiguous()  # (B, T)
        return Batch(inputs, targets, lags)

    # --- reference -------------------------------------------------------------------------
    def solve(self, inputs: torch.Tensor) -> torch.Tensor:
        """Compare every symbol with the one n back. (B, T) -> (B, T)."""
        n = self.back(inputs.shape[1])
        answer = torch.full_like(inputs, IGNORE)
        answer[:, n:] = torch.where(inputs[:, n:] == inputs[:, :-n], MATCH, NONMATCH)
        return answer

    # --- display ---------------------------------------------------------------------------
    def symbol_table(self, seq_len: int) -> SymbolTable:
        """Readable text: the first n symbols on one line, then each later symbol on a line of its own with its
        answer, yes (MATCH) or no (NONMATCH): `s1 s3` / `s1: yes` / `s2: no`."""
        n = self.back(seq_len)
        return SymbolTable(
            word=self.readable_word,
            instruction=f"After each symbol, answer yes if it is the symbol {n} before it, else no.",
            joints=lambda inputs, targets: Joints(
                ["" if t == 0 else "\n" if t >= n else " " for t in range(len(inputs))], [": "] * len(inputs)),
        )

    def render(self, batch: Batch, i: int = 0) -> str:
        """`2-back: s0 s0 [s2 -> NONMATCH] ...`: the stream, each scored symbol marked with its answer."""
        return f"{self.back(batch.inputs.shape[1])}-back: " + super().render(batch, i)
