"""copy: hold n content tokens through a delay, then reproduce them in order after a GO cue.

A sequence is (n = num_tokens, d = delay, c = content tokens, x = a delay token):

    c_1 .. c_n  x_1 .. x_d  GO  _ .. _        -> c_1 at GO, then c_2 .. c_n on the n - 1 blanks after it

The output phase is fed blanks (`_`), never the model's own outputs, so all n tokens must be held in
memory at once; the first answer is due at the cue itself. Delay tokens are blanks, or with `noise`
random noise symbols (a separate alphabet, so they cannot be mistaken for content). With `selective`
the content is scattered at random positions among the n + d tokens before the cue (the Mamba paper's
selective copying) and must still come out in order. Positions after the output phase are blanks,
not scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from membench.checks import check_bool, check_int
from membench.memtasks import IGNORE, NO_LAG, Batch, Task, param, register_task
from membench.memtasks.base import Joints, SymbolTable

BLANK, GO = range(2)
_SPECIAL_NAMES = ("_", "GO")
_FIRST_CONTENT = len(_SPECIAL_NAMES)  # content symbol i is token _FIRST_CONTENT + i
_TOKENS_PER_CONTENT = 8  # num_tokens and delay both None: seq_len // 8 content tokens


@register_task("copy", order=0)
@dataclass
class Copy(Task):
    """Copy: remember n tokens through a delay and output them in order, fed only blanks.

    Params:
        num_tokens:    n, content tokens to copy; None: grows with seq_len (see below).
        content_vocab: symbols the content is drawn from, uniformly (>= 2); noise has as many more.
        delay:         d, delay tokens between the content and the GO cue; None: whatever the rest of
                       the sequence leaves, seq_len - 2n.
        noise:         delay tokens are random noise symbols instead of blanks.
        selective:     the n content tokens sit at random positions among the first n + d tokens.

    What grows with seq_len: with the defaults both the content, n = seq_len // 8 (at least 1), and
    the delay, d = seq_len - 2n. With num_tokens set, only the delay; with delay set,
    n = (seq_len - d) // 2. With both set the layout is fixed and the tail is unscored blanks.

    Lag: output i (at GO + i - 1, counting from 1) points back at content token c_i,
    so inputs[t - lag] = c_i = target.

    Worked example (num_tokens=3, content_vocab=4: symbols c0..c3; delay=2, seq_len=9, seed=0;
    `.` = not scored):

        t        0   1   2   3   4   5   6   7   8
        inputs   c0  c3  c1  _   _   GO  _   _   _
        targets  .   .   .   .   .   c0  c3  c1  .
        lags     .   .   .   .   .   5   5   5   .

    With selective=True and noise=True (noise symbols n0..n3; seed=1) the content is scattered among noise:

        t        0   1   2   3   4   5   6   7   8
        inputs   c1  n0  c3  n1  c0  GO  _   _   _
        targets  .   .   .   .   .   c1  c3  c0  .
        lags     .   .   .   .   .   5   4   3   .

    `render` writes the example in one line, runs of unscored blanks shortened to `_*k`:

        c0 c3 c1 _ _ [GO -> c0] [_ -> c3] [_ -> c1] _

    Shapes: inputs, targets, lags (B, T) int64.
    """

    num_tokens: int | None = param(None, check_int, 1, none_means="grows with seq_len")
    content_vocab: int = param(8, check_int, 2)
    delay: int | None = param(None, check_int, 0, none_means="the rest of the sequence")
    noise: bool = param(False, check_bool)
    selective: bool = param(False, check_bool)

    description: ClassVar[str] = "hold n tokens through a delay (blanks or noise), output them in order after a GO cue"
    version: ClassVar[int] = 1

    # --- layout ----------------------------------------------------------------------------
    def layout(self, seq_len: int) -> tuple[int, int]:
        """(num_tokens, delay) used at `seq_len`, with the None params derived."""
        n, d = self.num_tokens, self.delay
        if n is None and d is None:
            n = max(1, seq_len // _TOKENS_PER_CONTENT)
        elif n is None:
            n = (seq_len - d) // 2
        if d is None:
            d = seq_len - 2 * n
        return n, d

    def min_length(self) -> int:
        n, d = self.num_tokens, self.delay
        return 2 * (n or 1) + (d or 0)

    def length_rule(self) -> str:
        return f"n content tokens, d delay tokens and n outputs need seq_len >= 2n + d = {self.min_length()}"

    @property
    def _first_noise(self) -> int:
        return _FIRST_CONTENT + self.content_vocab

    @property
    def vocab_size(self) -> int:
        return self._first_noise + (self.content_vocab if self.noise else 0)

    def answer_candidates(self) -> list[int]:
        """The content symbols: every output is one of them."""
        return list(range(_FIRST_CONTENT, self._first_noise))

    # --- generation ------------------------------------------------------------------------
    def _generate(self, batch_size: int, seq_len: int, gen: torch.Generator, device: torch.device) -> Batch:
        B, T, V = batch_size, seq_len, self.content_vocab
        n, d = self.layout(T)
        go = n + d  # position of the cue: the first answer is due there
        content = _FIRST_CONTENT + torch.randint(V, (B, n), generator=gen, device=device)  # (B, n)
        if self.selective:  # n of the n + d positions, uniformly, kept in increasing order
            scores = torch.rand(B, n + d, generator=gen, device=device)  # (B, n + d)
            where = scores.topk(n, dim=1).indices.sort(dim=1).values  # (B, n)
        else:
            where = torch.arange(n, device=device).expand(B, n)  # (B, n)

        inputs = torch.full((B, T), BLANK, dtype=torch.long, device=device)
        if self.noise:
            inputs[:, :go] = self._first_noise + torch.randint(V, (B, go), generator=gen, device=device)
        inputs.scatter_(1, where, content)
        inputs[:, go] = GO
        targets = torch.full((B, T), IGNORE, dtype=torch.long, device=device)
        targets[:, go:go + n] = content
        lags = torch.full((B, T), NO_LAG, dtype=torch.long, device=device)
        lags[:, go:go + n] = go + torch.arange(n, device=device) - where  # (B, n)
        return Batch(inputs, targets, lags)

    # --- reference -------------------------------------------------------------------------
    def solve(self, inputs: torch.Tensor) -> torch.Tensor:
        """Collect the content tokens in order; output the i-th at GO + i. Reads no layout. (B, T) -> (B, T)."""
        B, T = inputs.shape
        pos = torch.arange(T, device=inputs.device).expand(B, T)  # (B, T)
        is_content = (inputs >= _FIRST_CONTENT) & (inputs < self._first_noise)  # (B, T)
        rank = is_content.cumsum(dim=1) - 1  # (B, T): index of each content token among its row's
        slot = torch.where(is_content, rank, T)  # (B, T); non-content goes to a spare column T
        in_order = torch.zeros((B, T + 1), dtype=torch.long, device=inputs.device).scatter_(1, slot, inputs)
        offset = pos - (inputs == GO).long().argmax(dim=1, keepdim=True)  # (B, T): i at GO + i
        answer = in_order.gather(1, offset.clamp(0, T - 1))  # (B, T)
        due = (offset >= 0) & (offset < is_content.sum(dim=1, keepdim=True))
        return torch.where(due, answer, torch.full_like(inputs, IGNORE))

    # --- display ---------------------------------------------------------------------------
    def token_name(self, token: int) -> str:
        if 0 <= token < _FIRST_CONTENT:
            return _SPECIAL_NAMES[token]
        if token < self._first_noise:
            return f"c{token - _FIRST_CONTENT}"
        return f"n{token - self._first_noise}"

    def symbol_table(self, seq_len: int) -> SymbolTable:
        """Readable text: the symbols before GO on one line, then GO and each symbol of the output phase on a
        line of its own with its answer after `: ` (`c0 c3 c1 _ _` / `GO: c0` / `_: c3` / `_: c1` / `_`)."""
        return SymbolTable(
            word=self.token_name,
            instruction="Remember the c symbols; from GO on, write them back in order, one after each symbol.",
            joints=self._joints,
        )

    def _joints(self, inputs: list[int], targets: list[int]) -> Joints:
        before = [""] + [" "] * (len(inputs) - 1)
        for t in range(1, len(inputs)):
            if inputs[t] == GO or targets[t - 1] != IGNORE:
                before[t] = "\n"
        return Joints(before, [": "] * len(inputs))

    def render(self, batch: Batch, i: int = 0) -> str:
        """One line, scored positions marked [input -> answer], runs of 4+ unscored blanks as `_*k`."""
        cells: list[str] = []
        run = 0  # unscored blanks not yet written

        def flush() -> None:
            cells.extend(["_"] * run if run < 4 else [f"_*{run}"])

        for tok, tgt in zip(batch.inputs[i].tolist(), batch.targets[i].tolist()):
            if tok == BLANK and tgt == IGNORE:
                run += 1
                continue
            flush()
            run = 0
            name = self.token_name(tok)
            cells.append(f"[{name} -> {self.token_name(tgt)}]" if tgt != IGNORE else name)
        flush()
        return " ".join(cells)
