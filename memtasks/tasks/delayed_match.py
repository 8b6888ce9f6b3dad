"""delayed_match: delayed match-to-sample. Hold a pattern through a delay, then say whether a probe equals it.

Each trial is a fixed template of 2k + D + 3 tokens (k = pattern_len, D = delay):

    SAMPLE s_1 .. s_k   d_1 .. d_D   PROBE p_1 .. p_k   ?        -> MATCH or NONMATCH at `?`

The sample and the distractors d are drawn uniformly from the same `num_symbols` symbols, so the sample is
found by its SAMPLE marker, not by its alphabet. Half the probes (in expectation) repeat the sample; the
other half differ from it in exactly one position, so the whole sample must be held, not a summary of it.
A sequence is `num_trials` trials back to back; the tail that does not fill a trial is PAD (unscored).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from membench.checks import check_int
from membench.memtasks import IGNORE, NO_LAG, Batch, param, register_task
from membench.memtasks.base import Joints, SymbolTable
from membench.memtasks.match_tasks import MatchTask

PAD, SAMPLE, PROBE, QUERY, MATCH, NONMATCH = range(6)
_SPECIAL_NAMES = ("_", "SAMPLE", "PROBE", "?", "MATCH", "NONMATCH")
_READABLE_NAMES = ("_", "sample", "probe", "?", "yes", "no")  # the words of the text rendering
_MAX_TRIALS = 8  # trials per sequence when both num_trials and delay are derived (fewer if they do not fit)


@register_task("delayed_match", order=20)
@dataclass
class DelayedMatch(MatchTask):
    """Delayed match-to-sample: after a delay, is the probe pattern the same as the sample pattern?

    Params:
        pattern_len: k, tokens in the sample and in the probe.
        num_symbols: size of the alphabet of sample, probe and distractor tokens (>= 2).
        num_trials:  trials per sequence; None: as many as fit, at most 8 when `delay` is derived too.
        delay:       D, distractor tokens between the sample and the probe's PROBE marker;
                     None: the longest delay that fits, seq_len // num_trials - (2k + 3).

    What grows with seq_len: with the defaults the delay (eight trials stretch over the sequence, so the
    delay is about seq_len / 8); with `delay` set, the number of trials.

    Lag: the answer MATCH/NONMATCH is computed, not copied (`recalls_token = False`), so the lag at `?`
    points at the first token of that trial's sample: lag = 2k + D + 1, i.e. inputs[t - lag] = s_1.

    Worked example (pattern_len=2, num_symbols=4, num_trials=2, delay=2, seq_len=19, seed=2; symbols
    s0..s3, `.` = not scored, `_` = padding). Trial 1 matches; trial 2's probe differs in its second token:

        t        0      1  2  3  4  5      6  7  8      9      10 11 12 13 14     15 16 17        18
        inputs   SAMPLE s0 s3 s2 s3 PROBE  s0 s3 ?      SAMPLE s1 s0 s2 s3 PROBE  s1 s2 ?         _
        targets  .      .  .  .  .  .      .  .  MATCH  .      .  .  .  .  .      .  .  NONMATCH  .
        lags     .      .  .  .  .  .      .  .  7      .      .  .  .  .  .      .  .  7         .

    `render` shows it one trial per line:

        trial 1: SAMPLE s0 s3 | s2 s3 | PROBE s0 s3 | ? -> MATCH
        trial 2: SAMPLE s1 s0 | s2 s3 | PROBE s1 s2 | ? -> NONMATCH
        (padding: 1 token)

    Shapes: inputs, targets, lags (B, T) int64.
    """

    pattern_len: int = param(2, check_int, 1)
    num_symbols: int = param(8, check_int, 2)
    num_trials: int | None = param(None, check_int, 1, none_means="as many as fit")
    delay: int | None = param(None, check_int, 0, none_means="derived from seq_len")

    description: ClassVar[str] = (
        "hold a k-token sample through a delay of distractors; say MATCH or NONMATCH to a probe"
    )
    version: ClassVar[int] = 1
    special_names: ClassVar[tuple[str, ...]] = _SPECIAL_NAMES  # tokens 0, 1, ..; the symbols follow
    readable_names: ClassVar[tuple[str, ...]] = _READABLE_NAMES

    # --- layout ----------------------------------------------------------------------------
    @property
    def _overhead(self) -> int:
        """Tokens of a trial besides its delay: SAMPLE, k sample, PROBE, k probe, `?`."""
        return 2 * self.pattern_len + 3

    def layout(self, seq_len: int) -> tuple[int, int]:
        """(num_trials, delay) used at `seq_len`, with the None params derived."""
        if self.delay is None:
            trials = self.num_trials or min(_MAX_TRIALS, seq_len // self._overhead)
            return trials, seq_len // trials - self._overhead
        trials = self.num_trials or seq_len // (self._overhead + self.delay)
        return trials, self.delay

    def min_length(self) -> int:
        trials = self.num_trials or 1
        return trials * (self._overhead + (self.delay or 0))

    # --- generation ------------------------------------------------------------------------
    def _generate(self, batch_size: int, seq_len: int, gen: torch.Generator, device: torch.device) -> Batch:
        B, k, S = batch_size, self.pattern_len, self.num_symbols
        n, D = self.layout(seq_len)
        L, first = self._overhead + D, self.first_symbol  # tokens per trial, token of symbol 0

        def draw(high: int, *shape: int) -> torch.Tensor:
            return torch.randint(high, shape, generator=gen, device=device)

        sample = draw(S, B, n, k)  # (B, n, k)
        distractors = draw(S, B, n, D)  # (B, n, D)
        nonmatch = draw(2, B, n).bool()  # (B, n): half the trials, in expectation
        where = draw(k, B, n, 1)  # (B, n, 1): the one position a non-match changes
        shift = 1 + draw(S - 1, B, n, 1)  # (B, n, 1): in [1, S), so the symbol really changes
        changed = sample.scatter(2, where, (sample.gather(2, where) + shift) % S)  # (B, n, k)
        probe = torch.where(nonmatch[..., None], changed, sample)  # (B, n, k)

        def full(shape: tuple[int, ...], value: int) -> torch.Tensor:
            return torch.full(shape, value, dtype=torch.long, device=device)

        trials = torch.cat(
            [full((B, n, 1), SAMPLE), sample + first, distractors + first,
             full((B, n, 1), PROBE), probe + first, full((B, n, 1), QUERY)],
            dim=2,
        )  # (B, n, L)
        targets = full((B, n, L), IGNORE)
        targets[:, :, -1] = torch.where(nonmatch, NONMATCH, MATCH)  # scored at `?`
        lags = full((B, n, L), NO_LAG)
        lags[:, :, -1] = L - 2  # from `?` (index L-1) back to s_1 (index 1)

        tail = (B, seq_len - n * L)  # padding that does not fill a trial
        return Batch(
            inputs=torch.cat([trials.reshape(B, n * L), full(tail, PAD)], dim=1),  # (B, T)
            targets=torch.cat([targets.reshape(B, n * L), full(tail, IGNORE)], dim=1),  # (B, T)
            lags=torch.cat([lags.reshape(B, n * L), full(tail, NO_LAG)], dim=1),  # (B, T)
        )

    # --- reference -------------------------------------------------------------------------
    def solve(self, inputs: torch.Tensor) -> torch.Tensor:
        """At every `?`, compare the k tokens after the latest PROBE with the k after the latest SAMPLE.

        Reads only the markers and symbols, so it does not need to know the delay. (B, T) -> (B, T).
        """
        B, T = inputs.shape
        k = self.pattern_len
        pos = torch.arange(T, device=inputs.device).expand(B, T)  # (B, T)
        none = torch.full_like(pos, -1)
        last_sample = torch.where(inputs == SAMPLE, pos, none).cummax(dim=1).values  # (B, T)
        last_probe = torch.where(inputs == PROBE, pos, none).cummax(dim=1).values  # (B, T)
        offsets = torch.arange(1, k + 1, device=inputs.device)  # (k,)

        def pattern_after(marker_pos: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, k)
            index = (marker_pos[..., None] + offsets).clamp(0, T - 1)  # (B, T, k)
            return inputs.gather(1, index.reshape(B, T * k)).reshape(B, T, k)

        same = (pattern_after(last_sample) == pattern_after(last_probe)).all(dim=2)  # (B, T)
        answer = torch.where(same, MATCH, NONMATCH)
        return torch.where(inputs == QUERY, answer, torch.full_like(inputs, IGNORE))

    # --- display ---------------------------------------------------------------------------
    def symbol_table(self, seq_len: int) -> SymbolTable:
        """Readable text: a trial per line, its answer yes (MATCH) or no (NONMATCH) after the `?`:
        `sample s0 s3 | s2 s3 | probe s0 s3? yes`; padding on a last line of its own."""
        return SymbolTable(
            word=self.readable_word,
            instruction="After each '?', answer yes if the probe's symbols are the sample's, else no.",
            joints=self._joints,
        )

    def _joints(self, inputs: list[int], targets: list[int]) -> Joints:
        n, D = self.layout(len(inputs))
        k, L = self.pattern_len, self._overhead + D
        before = [" "] * len(inputs)
        for j in range(n):
            a = j * L
            before[a] = "\n"  # SAMPLE
            if D:
                before[a + 1 + k] = " | "  # the first distractor
            before[a + 1 + k + D] = " | "  # PROBE
            before[a + L - 1] = ""  # `?` right after the probe
        if n * L < len(inputs):
            before[n * L] = "\n"  # padding
        before[0] = ""
        return Joints(before, [" "] * len(inputs))

    def render(self, batch: Batch, i: int = 0) -> str:
        """One trial per line: `trial 1: SAMPLE s1 s3 | s0 s2 | PROBE s1 s3 | ? -> MATCH`."""
        inputs, targets = batch.inputs[i].tolist(), batch.targets[i].tolist()
        n, D = self.layout(len(inputs))
        k, L = self.pattern_len, self._overhead + D
        names = [self.token_name(t) for t in inputs]
        lines = []
        for j in range(n):
            a = j * L
            parts = [
                " ".join(names[a:a + 1 + k]),  # SAMPLE s_1 .. s_k
                " ".join(names[a + 1 + k:a + 1 + k + D]) or "(no delay)",
                " ".join(names[a + 1 + k + D:a + L - 1]),  # PROBE p_1 .. p_k
                f"? -> {self.token_name(targets[a + L - 1])}",
            ]
            lines.append(f"trial {j + 1}: " + " | ".join(parts))
        if len(inputs) > n * L:
            tail = len(inputs) - n * L
            lines.append(f"(padding: {tail} token{'s' if tail > 1 else ''})")
        return "\n".join(lines)
