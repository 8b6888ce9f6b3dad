"""state_tracking: the word problem of a finite group (Merrill et al., 2024, "The Illusion of State in
State-Space Models"; the Chomsky-hierarchy benchmark's parity and modular arithmetic). Read a sequence of
group elements, answer their running product.

A sequence is T elements g_0 .. g_{T-1}; the answer at t is the product p_t = g_0 g_1 .. g_t (score="all",
at every t >= 1) or only p_{T-1} at the last position (score="last"). With group="parity" (Z2, elements
0 and 1) the product is the running parity of the bits:

    1 0 1 1 0        -> 1 at t=1, 0 at t=2, 1 at t=3, 1 at t=4

A fixed-size state (the current product) solves it at any length, but no shortcut does: the answer
depends on every token so far, in order (for S3 and S5, which are not commutative). S5 is the smallest
non-solvable group, whose word problem is NC1-complete: a constant-depth transformer or a diagonal SSM
cannot track it at every length (Merrill et al.), an RNN can.

Groups (`group`): parity (Z2), cyclic (Zm, m = `modulus`), S3 (6 permutations of 3 points), S5 (120 of 5).
Every group is an exact multiplication table `table[a, b] = a * b` over element indices; the identity is
element 0. For permutations, elements are the permutations of (0, .., n-1) in lexicographic order and
a * b is "a, then b": (a * b)(x) = b(a(x)). Tokens are element indices, inputs and answers alike.

Law of the draws: the g_t are i.i.d. uniform over the group, so every p_t is uniform too, and p_t is
independent of g_t (no answer can be read off the current token).

Products by parallel prefix composition: Hillis-Steele doubling, log2(T) rounds of one table lookup each,
no loop over tokens. After round k, P[t] is the product of g over (t - 2^k, t]:

    P[t] <- table[P[t - d], P[t]]  for t >= d,  d = 1, 2, 4, ..   (earlier factor on the left)

Example with Z5 (a * b = a + b mod 5), g = 1 2 3 4: d=1 -> 1 3 0 2, d=2 -> 1 3 1 0 = the running sums mod 5.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import ClassVar

import torch

from membench.checks import ConfigError, check_choice, check_int
from membench.memtasks import IGNORE, NO_LAG, Batch, Task, param, register_task
from membench.memtasks.base import Joints, SymbolTable

GROUPS = ("parity", "cyclic", "S3", "S5")
SCORES = ("all", "last")
_MAX_MODULUS = 1024  # a cyclic group's table has modulus^2 entries
_INSTRUCTIONS = {  # the one line before the text rendering
    "parity": "After each bit, answer the parity of all the bits so far.",
    "cyclic": "After each number, answer the sum of all the numbers so far modulo {modulus}.",
    "S3": "Permutations in one-line notation: after each, answer the product of all so far, the first applied first.",
}


@functools.cache
def permutations(points: int) -> tuple[tuple[int, ...], ...]:
    """The permutations of (0, .., points-1) in lexicographic order (the identity first).

    >>> permutations(3)[:3]
    ((0, 1, 2), (0, 2, 1), (1, 0, 2))
    """
    return tuple(itertools.permutations(range(points)))


@functools.cache
def _cpu_table(group: str, modulus: int | None) -> torch.Tensor:
    if group in ("parity", "cyclic"):
        m = 2 if group == "parity" else modulus
        index = torch.arange(m)
        return (index[:, None] + index[None, :]) % m  # (m, m): Zm adds
    perms = permutations(3 if group == "S3" else 5)
    position = {p: i for i, p in enumerate(perms)}
    return torch.tensor([[position[tuple(b[a[x]] for x in range(len(a)))] for b in perms] for a in perms])


@functools.cache
def multiplication_table(group: str, modulus: int | None, device: torch.device) -> torch.Tensor:
    """(G, G) int64 on `device`: table[a, b] = index of a * b (see the module doc for the convention)."""
    return _cpu_table(group, modulus).to(device)


def prefix_products(table: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """Running products P[:, t] = words[:, 0] * .. * words[:, t] by log-depth doubling (module doc).

    table (G, G), words (B, T) element indices -> (B, T). ceil(log2 T) rounds, each one (B, T) gather.
    """
    G, T = table.shape[0], words.shape[1]
    flat = table.reshape(-1).to(torch.int32)  # (G*G,): a * b at a * G + b; int32 gathers faster
    out, d = words.to(torch.int32), 1
    while d < T:
        combined = out.clone()  # (B, T): positions t < d are already complete
        combined[:, d:] = flat[out[:, :-d] * G + out[:, d:]]  # (t-2d, t-d] * (t-d, t]
        out, d = combined, 2 * d
    return out.long()


def prefix_products_reference(table: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """The same running products, one token at a time. (B, T) -> (B, T)."""
    out = words.clone()
    for t in range(1, words.shape[1]):
        out[:, t] = table[out[:, t - 1], words[:, t]]
    return out


@register_task("state_tracking", order=42)
@dataclass
class StateTracking(Task):
    """State tracking: the running product of a sequence of group elements.

    Params:
        group:   parity (Z2) | cyclic (Zm, with `modulus`) | S3 | S5 (permutations, not commutative).
        modulus: m of the cyclic group, 2 .. 1024 (only with group="cyclic").
        score:   "all": the product at every t >= 1; "last": only at the last position.

    What grows with seq_len: the number of elements multiplied, each of which the answer depends on. The
    state that solves it has a fixed size (one element), so length tests the mechanism, not capacity.

    Lag: the answer is computed, not copied (`recalls_token = False`): it depends on every token so far,
    so the lag points at the first of them, g_0: lag = t at position t (and t = 0, whose product is the
    token itself and needs no memory, is not scored).

    Worked example (group="S3", seq_len=6, seed=0; elements in one-line notation: 021 maps 0->0, 1->2,
    2->1, and 012 is the identity; `.` = not scored). At t=1, 102 then 120 is 210 (0 -> 1 -> 2,
    1 -> 0 -> 1, 2 -> 2 -> 0); at t=3 the identity leaves the product as it was:

        t        0    1    2    3    4    5
        inputs   102  120  210  012  021  120
        targets  .    210  012  012  021  102
        lags     .    1    2    3    4    5

    `render` writes each element, scored ones as [element -> running product]:

        102 [120 -> 210] [210 -> 012] [012 -> 012] [021 -> 021] [120 -> 102]

    Shapes: inputs, targets, lags (B, T) int64.
    """

    group: str = param("S5", check_choice, GROUPS)
    modulus: int | None = None  # its rule depends on group: check_params
    score: str = param("all", check_choice, SCORES)

    description: ClassVar[str] = (
        "the running product of group elements (parity, Zm, S3, S5): state tracking (Merrill et al. 2024)"
    )
    version: ClassVar[int] = 1
    recalls_token: ClassVar[bool] = False

    def check_params(self) -> None:
        if self.group == "cyclic":
            if self.modulus is None:
                raise ConfigError("group='cyclic' needs modulus, an integer in [2, 1024] (Zm)")
            check_int("modulus", self.modulus, 2, maximum=_MAX_MODULUS)
        elif self.modulus is not None:
            check_int("modulus", self.modulus, 2, maximum=_MAX_MODULUS)
            raise ConfigError(f"modulus is only for group='cyclic', got modulus={self.modulus} with "
                              f"group={self.group!r}")

    def min_length(self) -> int:
        return 2  # position 0 is never scored

    @property
    def vocab_size(self) -> int:
        return {"parity": 2, "cyclic": self.modulus, "S3": 6, "S5": 120}[self.group]

    def answer_candidates(self) -> list[int]:
        """Every element of the group: a running product can be any of them."""
        return list(range(self.vocab_size))

    def table(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The (G, G) multiplication table of the group on `device`."""
        return multiplication_table(self.group, self.modulus, torch.device(device))

    # --- generation ------------------------------------------------------------------------
    def _generate(self, batch_size: int, seq_len: int, gen: torch.Generator, device: torch.device) -> Batch:
        B, T = batch_size, seq_len
        words = torch.randint(self.vocab_size, (B, T), generator=gen, device=device)  # (B, T)
        products = prefix_products(self.table(device), words)  # (B, T)
        position = torch.arange(T, device=device).expand(B, T)  # (B, T)
        scored = position >= (1 if self.score == "all" else T - 1)  # (B, T)
        targets = torch.where(scored, products, IGNORE)
        lags = torch.where(scored, position, NO_LAG)  # back to g_0
        return Batch(words, targets, lags)

    # --- reference -------------------------------------------------------------------------
    def solve(self, inputs: torch.Tensor) -> torch.Tensor:
        """The group multiplication itself, token by token, not through the table: for Zm the running sum
        mod m; for permutations the composition of the permutation arrays. (B, T) -> (B, T)."""
        T = inputs.shape[1]
        if self.group in ("parity", "cyclic"):
            products = inputs.cumsum(dim=1) % self.vocab_size
        else:
            perms = torch.tensor(permutations(3 if self.group == "S3" else 5), device=inputs.device)  # (G, n)
            n = perms.shape[1]
            digits = n ** torch.arange(n, device=inputs.device)  # (n,): a permutation array read base n
            element = torch.zeros(n**n, dtype=torch.long, device=inputs.device)  # base-n code -> element index
            element[(perms * digits).sum(dim=1)] = torch.arange(len(perms), device=inputs.device)
            state = perms[inputs[:, 0]]  # (B, n): p_0 as an array, x -> p(x)
            products = inputs.clone()
            for t in range(1, T):
                state = perms[inputs[:, t]].gather(1, state)  # (a then b)(x) = b[a[x]]
                products[:, t] = element[(state * digits).sum(dim=1)]
        first = 1 if self.score == "all" else T - 1
        answer = torch.full_like(inputs, IGNORE)
        answer[:, first:] = products[:, first:]
        return answer

    # --- display ---------------------------------------------------------------------------
    def symbol_table(self, seq_len: int) -> SymbolTable:
        """Readable text: an element per line, each scored one followed by the running product after `: `
        (parity: `1` / `0: 1` / `1: 0`)."""
        instruction = _INSTRUCTIONS["S3" if self.group == "S5" else self.group].format(modulus=self.modulus)
        return SymbolTable(
            word=self.token_name,
            instruction=instruction,
            joints=lambda inputs, targets: Joints([""] + ["\n"] * (len(inputs) - 1), [": "] * len(inputs)),
        )

    def token_name(self, token: int) -> str:
        if self.group in ("S3", "S5"):
            return "".join(map(str, permutations(3 if self.group == "S3" else 5)[token]))
        return str(token)
