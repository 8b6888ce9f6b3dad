"""flip_flop: flip-flop language modelling (Liu et al., 2023, "Exposing Attention Glitches with Flip-Flop
Language Modeling"). Remember one bit, overwritten by every write, through a stream of ignores.

A sequence is a stream of (instruction, bit) pairs, instructions `w` (write), `r` (read), `i` (ignore):

    w 1  i 0  r 1  i 1  w 0  i 1  i 0  r 0        -> 1 at the first r, 0 at the second

At every `r` the bit that follows is the bit of the latest `w`; the other bits are random. The answer is
scored at the `r` itself (the model reads `r` and predicts the bit due next), so the stream the model is fed
is the paper's, teacher-forced, and scoring covers exactly the paper's deterministic tokens.

Law of the draws. Instructions are i.i.d.: `w` with probability p_write, `r` with p_read, `i` with
p_ignore = 1 - p_write - p_read, except that the first instruction is always `w` (as in the paper, so every
read has a write before it) and the last is always `r` (so every sequence has a scored read). The bits of
`w` and `i` are i.i.d. fair coins. The paper's FFL(p_ignore) has p_write = p_read = (1 - p_ignore) / 2
(`ffl_params`); the defaults are its training distribution FFL(0.8), and `NAMED_SLICES` holds the two
out-of-distribution streams it evaluates on: **sparse** FFL(0.98) (long gaps between writes and reads) and
**dense** FFL(0.1) (writes and reads at nearly every step).

Layout: instruction j sits at t = 2j, its bit at t = 2j + 1; an odd seq_len ends with an instruction (the
final `r`) and no bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from membench.checks import ConfigError, check_number
from membench.memtasks import IGNORE, NO_LAG, Batch, Task, param, register_task
from membench.memtasks.base import Joints, SymbolTable

ZERO, ONE, WRITE, READ, IGNORE_OP = range(5)  # tokens: the two bits, then the three instructions
_NAMES = ("0", "1", "w", "r", "i")


def ffl_params(p_ignore: float) -> dict[str, float]:
    """The params of the paper's FFL(p_ignore): writes and reads equally likely, sharing 1 - p_ignore.

    >>> ffl_params(0.8)
    {'p_write': 0.1, 'p_read': 0.1}
    """
    half = round((1.0 - p_ignore) / 2, 12)
    return {"p_write": half, "p_read": half}


@register_task("flip_flop", order=40)
@dataclass
class FlipFlop(Task):
    """Flip-flop: at every read `r`, answer the bit of the latest write `w`, ignoring the `i` pairs between.

    Params (the paper's FFL(p_ignore) is p_write = p_read = (1 - p_ignore) / 2):
        p_write: probability that an instruction is `w` (0 < p_write < 1); 0.1 as FFL(0.8).
        p_read:  probability that an instruction is `r` (0 < p_read, p_write + p_read <= 1); 0.1 as FFL(0.8).

    What grows with seq_len: the number of reads, each a chance to err (the error rate over many reads is
    what this task reports). What is held is always one bit; how far back it lies is geometric: a read's
    write is k instructions back with probability p_write (1 - p_write)^(k - 1), truncated by the start.
    Named slices (`NAMED_SLICES`): the paper's sparse FFL(0.98) stretches those gaps ~25x, dense FFL(0.1)
    shrinks them; a spec evaluates them beside the in-distribution stream as `eval_slices`.

    Lag: at a read, the distance back to the latest write's bit, so inputs[t - lag] = that bit = target.

    Worked example (defaults, seq_len=15, seed=43; `.` = not scored). The forced first write stores 1, the
    write at t = 10 overwrites it with 0; the last instruction (t = 14; an odd length, so no bit follows
    it) is the forced read:

        t        0  1  2  3  4  5  6  7  8  9  10 11 12 13 14
        inputs   w  1  r  1  i  1  i  0  r  1  w  0  i  1  r
        targets  .  .  1  .  .  .  .  .  1  .  .  .  .  .  0
        lags     .  .  1  .  .  .  .  .  7  .  .  .  .  .  3

    `render` shows one pair per cell, each read marked with its answer:

        w1 [r -> 1] i1 i0 [r -> 1] w0 i1 [r -> 0]

    Shapes: inputs, targets, lags (B, T) int64.
    """

    p_write: float = param(0.1, check_number, 0, 1, low_open=True, high_open=True)
    p_read: float = param(0.1, check_number, 0, 1, low_open=True, high_open=True)

    description: ClassVar[str] = (
        "flip-flop language (Liu et al. 2023): at every read, the bit of the latest write, through ignores"
    )
    version: ClassVar[int] = 1
    reports_error_rate: ClassVar[bool] = True  # runners/reporting/error_rates.py: errors per read, with intervals
    # the paper's evaluation streams, as task params for a spec's eval_slices (the smoke preset uses them)
    NAMED_SLICES: ClassVar[dict[str, dict[str, float]]] = {"sparse": ffl_params(0.98), "dense": ffl_params(0.1)}

    def check_params(self) -> None:
        if self.p_write + self.p_read > 1 + 1e-9:
            raise ConfigError(
                f"p_write + p_read must be <= 1 (the rest is p_ignore), got {self.p_write} + {self.p_read}"
            )

    def min_length(self) -> int:
        return 3  # w b r

    @property
    def vocab_size(self) -> int:
        return len(_NAMES)

    def answer_candidates(self) -> list[int]:
        """The two bits."""
        return [ZERO, ONE]

    # --- generation ------------------------------------------------------------------------
    def _generate(self, batch_size: int, seq_len: int, gen: torch.Generator, device: torch.device) -> Batch:
        B, T = batch_size, seq_len
        n = (T + 1) // 2  # instructions; the last has no bit when T is odd
        u = torch.rand(B, n, generator=gen, device=device)  # (B, n)
        ops = torch.where(u < self.p_write, WRITE, torch.where(u < self.p_write + self.p_read, READ, IGNORE_OP))
        ops[:, 0], ops[:, -1] = WRITE, READ
        bits = torch.randint(2, (B, n), generator=gen, device=device)  # (B, n): the bits of w and i
        index = torch.arange(n, device=device).expand(B, n)  # (B, n)
        last_write = torch.where(ops == WRITE, index, -1).cummax(dim=1).values  # (B, n), >= 0: op 0 is w
        stored = bits.gather(1, last_write)  # (B, n): the bit held after instruction j
        is_read = ops == READ
        bits = torch.where(is_read, stored, bits)  # a read's bit is the stored one

        pairs = torch.stack([ops, bits], dim=2).reshape(B, 2 * n)  # (B, 2n): op, bit, op, bit, ...
        targets = torch.full((B, 2 * n), IGNORE, dtype=torch.long, device=device)
        targets[:, 0::2] = torch.where(is_read, stored, IGNORE)  # scored at the read instruction
        lags = torch.full((B, 2 * n), NO_LAG, dtype=torch.long, device=device)
        lags[:, 0::2] = torch.where(is_read, 2 * (index - last_write) - 1, NO_LAG)  # back to the write's bit
        return Batch(pairs[:, :T].contiguous(), targets[:, :T].contiguous(), lags[:, :T].contiguous())

    # --- reference -------------------------------------------------------------------------
    def solve(self, inputs: torch.Tensor) -> torch.Tensor:
        """The flip-flop itself: walk the stream, store the bit after each `w`, answer it at each `r`.

        A loop over tokens, vectorised over the batch (the reference need not be fast). (B, T) -> (B, T).
        """
        B, T = inputs.shape
        answer = torch.full_like(inputs, IGNORE)
        held = torch.full((B,), IGNORE, dtype=torch.long, device=inputs.device)  # (B,): no write yet
        for t in range(0, T, 2):
            op = inputs[:, t]
            answer[:, t] = torch.where(op == READ, held, IGNORE)
            if t + 1 < T:
                held = torch.where(op == WRITE, inputs[:, t + 1], held)
        return answer

    # --- display ---------------------------------------------------------------------------
    def token_name(self, token: int) -> str:
        return _NAMES[token] if 0 <= token < len(_NAMES) else str(token)

    def symbol_table(self, seq_len: int) -> SymbolTable:
        """Readable text: a pair per line, `w 1` / `i 0` / `r 1`; a read's answer is the bit that follows it (fed
        by the task itself), or written after it when the sequence ends on the read."""
        return SymbolTable(
            word=self.token_name,
            instruction="'w b' writes the bit b, 'i b' is ignored; each 'r' is followed by the bit written last.",
            joints=self._joints,
        )

    def _joints(self, inputs: list[int], targets: list[int]) -> Joints:
        T = len(inputs)
        before = ["" if t == 0 else "\n" if t % 2 == 0 else " " for t in range(T)]
        fed = frozenset(t for t in range(0, T - 1, 2) if targets[t] != IGNORE)  # a read, and its bit follows
        return Joints(before, [" "] * T, fed)

    def render(self, batch: Batch, i: int = 0) -> str:
        """One cell per (instruction, bit) pair, `w1 i0 [r -> 1] ...`: a read shows its answer, not its bit."""
        inputs, targets = batch.inputs[i].tolist(), batch.targets[i].tolist()
        cells = []
        for t in range(0, len(inputs), 2):
            op = self.token_name(inputs[t])
            if targets[t] != IGNORE:
                cells.append(f"[{op} -> {self.token_name(targets[t])}]")
            else:
                cells.append(op + (self.token_name(inputs[t + 1]) if t + 1 < len(inputs) else ""))
        return " ".join(cells)
