"""The task interface: a seeded, vectorised generator of scored token sequences.

A task is a dataclass whose fields are its parameters, each declared with its rule by `param`. `sample`
draws a `Batch` directly on the requested device with torch ops; `solve` is an algorithmic reference that
reads only the inputs and must reproduce every scored target, which is the proof that the labels are right.

Seeds: the same (params, seq_len, seed, device type) always gives the same bytes. Training and
evaluation draw from disjoint seed spaces, see `train_seed` and `eval_seed`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from membench.checks import ConfigError, check_int

IGNORE = -100  # target value at positions that are not scored (torch's cross-entropy default)
NO_LAG = -1  # lag value at positions that are not scored
_STREAM_BITS = 31


def train_seed(run_seed: int, step: int) -> int:
    """Seed of training batch `step` of run `run_seed`: the lower half of the run's seed block."""
    return (run_seed << (_STREAM_BITS + 1)) + (step % (1 << _STREAM_BITS))


def eval_seed(run_seed: int, index: int) -> int:
    """Seed of evaluation batch `index`: the upper half of the run's block, never drawn in training."""
    return (run_seed << (_STREAM_BITS + 1)) + (1 << _STREAM_BITS) + (index % (1 << _STREAM_BITS))


def param(default: object, check: Callable[..., object], *bounds: object, **options: object) -> Any:
    """A task param: its default and its rule, declared once, beside the field.

    `check` is a rule of `membench.checks` (or one of the same form, `check(name, value, ...)`); when the task
    is built, `Task` calls `check(field name, value, *bounds, **options)` for each param in field order, before
    the task's own `check_params` (which keeps only the rules between params):

        vocab_size: int = param(64, check_int, 4)                                 # an integer >= 4
        delay: int | None = param(None, check_int, 0, none_means="derived from seq_len")
        frac_noise: float = param(0.2, check_number, 0.0, 1.0, high_open=True)   # in [0, 1)

    >>> from membench.checks import check_int
    >>> @dataclass
    ... class Stream(Task):
    ...     num_symbols: int = param(8, check_int, 2)
    >>> Stream(num_symbols=1)
    Traceback (most recent call last):
    membench.checks.ConfigError: num_symbols must be an integer >= 2, got 1
    """
    return field(default=default, metadata={"check": lambda name, value: check(name, value, *bounds, **options)})


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A torch generator on `device` (CPU or CUDA), seeded with `seed`."""
    device = torch.device(device)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


@dataclass(frozen=True)
class Batch:
    """One batch of examples. All tensors are int64 of shape (B, T) on the same device.

    inputs:  token ids fed to the model.
    targets: the token to predict at each position, IGNORE (-100) where not scored.
    lags:    at scored positions, how many tokens back the evidence lies (>= 1); NO_LAG (-1) elsewhere.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    lags: torch.Tensor

    @property
    def scored(self) -> torch.Tensor:
        """Bool (B, T): the positions whose prediction is scored."""
        return self.targets != IGNORE

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.inputs.to(device), self.targets.to(device), self.lags.to(device))


@dataclass(frozen=True)
class Joints:
    """The text between the symbols of one example of T tokens, for the readable mode of `memtasks.text`.

    before: T strings; before[t] is written before symbol t (before[0] is usually "").
    marks:  T strings; at a scored t whose answer is written after symbol t, marks[t] goes between the two
            (it ends in whitespace, so the answer starts a fresh token). Ignored elsewhere.
    fed:    the scored positions t whose answer is symbol t + 1 itself (the task feeds the answer back, as
            flip_flop's read bit or the tokens of a fuzzy_recall value): nothing is written, the answer's
            span is that symbol's.

    Example: inputs k3 v2 k3 v5, the second k3 (t = 2) scored with answer v2, before ["", ": ", "\n", " "],
    marks[2] = ": ", fed empty: "k3: v2\nk3: v2 v5".
    """

    before: list[str]
    marks: list[str]
    fed: frozenset[int] = frozenset()

    @classmethod
    def spaced(cls, length: int) -> "Joints":
        """One space between symbols, every answer after ": ": the default of a task that declares none."""
        return cls([""] + [" "] * (length - 1), [": "] * length)


@dataclass(frozen=True)
class SymbolTable:
    """How a task reads as text (the readable mode of `memtasks.text.render_text`).

    word:        a token id -> its readable word, no whitespace (associative_recall: 5 -> "k5").
    instruction: one line written before the example ("" for none).
    joints:      (inputs, targets) of one example, as lists -> its `Joints`; by default one space between
                 symbols and each answer written after ": ".
    """

    word: Callable[[int], str]
    instruction: str = ""
    joints: Callable[[list[int], list[int]], Joints] = field(default=lambda inputs, targets: Joints.spaced(len(inputs)))


@dataclass
class Task:
    """Base class of every task. Subclasses are dataclasses; each field is a user-settable param, declared with
    its rule by `param` (a plain field is accepted as it is).

    Subclasses set `description` (one line) and `version` (bump it whenever the generated
    distribution changes: it is stored with every result), and implement `check_params` (the rules between
    params, if any), `min_length`, `vocab_size`, `_generate`, `solve` and `token_name`; a task with a closed
    answer set also implements `answer_candidates` (its `chance_level` follows), and `symbol_table` says how
    it reads as text (memtasks/text.py).
    """

    name: ClassVar[str] = "task"  # set by @register_task
    version: ClassVar[int] = 1
    description: ClassVar[str] = ""
    # True when every scored answer is a copy of an earlier input token, so that
    # inputs[b, t - lags[b, t]] == targets[b, t]; tasks whose answer is computed (MATCH/NONMATCH) set False
    # and document what their lag points at.
    recalls_token: ClassVar[bool] = True
    # True when rare errors matter more than the mean (flip_flop): the reports then give errors per scored
    # prediction with an exact interval (runners/reporting/error_rates.py)
    reports_error_rate: ClassVar[bool] = False

    def __post_init__(self) -> None:
        for param_field in dataclasses.fields(self):  # each param's own rule (`param`), then the rules between
            check = param_field.metadata.get("check")
            if check is not None:
                check(param_field.name, getattr(self, param_field.name))
        self.check_params()

    # --- what a subclass provides -------------------------------------------------------
    def check_params(self) -> None:
        """Raise ConfigError naming the params and what is allowed, for the length-independent rules that
        involve more than one param (each param's own rule is declared with it, by `param`)."""

    def min_length(self) -> int:
        """Shortest seq_len these params allow."""
        raise NotImplementedError

    def length_rule(self) -> str:
        """Why `min_length` is what it is, for the error `check_length` raises (a task may say more)."""
        return f"the minimum is {self.min_length()}"

    def check_length(self, seq_len: int) -> None:
        """Raise ConfigError if `seq_len` is impossible with these params (the message says why)."""
        if seq_len < self.min_length():
            raise ConfigError(f"seq_len={seq_len} is too short for task {self.name} with {self.describe_params()}; "
                              f"{self.length_rule()}")

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def _generate(self, batch_size: int, seq_len: int, gen: torch.Generator, device: torch.device) -> Batch:
        raise NotImplementedError

    def solve(self, inputs: torch.Tensor) -> torch.Tensor:
        """Reference answer (B, T) int64 computed from `inputs` alone; must equal every scored target."""
        raise NotImplementedError

    def token_name(self, token: int) -> str:
        """Readable name of one token id, used by `render`."""
        return str(token)

    def symbol_table(self, seq_len: int) -> SymbolTable:
        """How an example of length `seq_len` reads as text. The default, for a task that declares none: its
        token names, one space apart, each answer after ": ", no instruction."""
        return SymbolTable(word=self.token_name)

    def answer_candidates(self) -> list[int] | None:
        """The token ids a scored target can take (a closed answer set), or None when it is open.

        A plugin task that does not say is open. Example: flip_flop's answers are the bits, [0, 1].
        """
        return None

    # --- shared behaviour ------------------------------------------------------------------
    @property
    def chance_level(self) -> float:
        """Accuracy of a uniform guess among `answer_candidates`: 1 / their number, 0.0 when the set is open.

        Example: delayed_match answers MATCH or NONMATCH, so its chance level is 0.5.
        """
        candidates = self.answer_candidates()
        return 1.0 / len(candidates) if candidates else 0.0

    def sample(self, batch_size: int, seq_len: int, seed: int, device: torch.device | str = "cpu") -> Batch:
        """Draw `batch_size` sequences of length `seq_len` on `device`, deterministically from `seed`."""
        check_int("batch_size", batch_size)
        check_int("seq_len", seq_len)
        self.check_length(seq_len)
        device = torch.device(device)
        return self._generate(batch_size, seq_len, make_generator(seed, device), device)

    def params(self) -> dict:
        """The task's params as a plain dict (field name -> value)."""
        return dataclasses.asdict(self)

    def describe_params(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params().items()) or "default params"

    def render(self, batch: Batch, i: int = 0) -> str:
        """Readable text of example `i`: one token per cell, scored positions marked `[token -> answer]`."""
        inputs, targets = batch.inputs[i].tolist(), batch.targets[i].tolist()
        cells = []
        for tok, tgt in zip(inputs, targets):
            name = self.token_name(tok)
            cells.append(f"[{name} -> {self.token_name(tgt)}]" if tgt != IGNORE else name)
        return " ".join(cells)
