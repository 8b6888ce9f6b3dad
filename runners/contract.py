"""The contract every model and task must keep, as a library: `membench check` runs it on anything a user
names (a family, an import path, an `hf:` model, a plugin), and tests can call it too.

    >>> rows = check_model("lstm")
    >>> [(r.name, r.status) for r in rows][:3]
    [('builds at two widths', 'pass'), ('shapes and dtype', 'pass'), ('causal (fast path)', 'pass')]
    >>> all(r.ok for r in check_task("copy"))
    True

Each check is one row: `pass`, `FAIL` with a one-line reason, or `skipped` with why. A check that raises
anything else fails with the exception's one-line text, so a broken model never stops the report.

Each check is a function of its own, given a `ModelUnderCheck` (how to build the model, the built copy, a seeded
token stream) or a `TaskUnderCheck` (the built task, the lengths to sample); MODEL_CHECKS and TASK_CHECKS list
them, (row name, function), in the order they run: a new check is one function and one row there.

Model checks (vocabulary 16, two layers, widths 32 and 48, CPU):
    builds at two widths    both build, report their width, and the wider has more parameters
    shapes and dtype        (B, T) int64 -> (B, T, V) float32 finite logits and (B, T, D) features, T = 1, 17, 64
    causal (fast/reference) changing tokens after t never changes a logit at or before t (eval mode)
    gradient reaches every parameter   one backward gives each parameter a finite, non-zero gradient
    overfits a tiny batch   Adam at 3e-3 brings the loss on 8 x 16 random targets below 10% of its start in
                            300 steps (a memoryless model, state 0, fits a function of the current token)
    bf16 autocast           finite logits under CPU autocast to bfloat16
    state size              declared: an int >= 0, growing with length for O(n^2), bounded for O(n) / O(n*w);
                            not declared: skipped (tables show it as unknown)
    flops                   within 5% of FlopCounterMode on the reference path (or counted by it)
    same seed, same output  two builds from one seed agree, and so do two train-mode forwards (no dropout)

Task checks (default params unless given):
    shapes at odd lengths, token range, a scored position in every example, determinism (same seed same
    bytes, another seed differs), solver agrees with every label, lags point at the evidence, memory is
    necessary (a current-token-only predictor is no better than a constant guess + 0.05), generation without
    host syncs (it runs on the meta device, which has no values to read back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch

from membench.checks import ConfigError
from membench.memtasks import IGNORE, NO_LAG, Task, get_task, task_class
from membench.models import MemoryModel, build_model, family_params
from membench.models.imported import count_reference_forward
from membench.models.pretrained import is_pretrained
from membench.registry import unknown_name_message

VOCAB, WIDTHS, LAYERS = 16, (32, 48), 2
PASS, FAIL, SKIP = "pass", "FAIL", "skipped"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # pass | FAIL | skipped
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Passed or skipped: only a FAIL makes `membench check` exit 1."""
        return self.status != FAIL


class Failed(Exception):
    """A check's one-line reason for failing."""


class Skipped(Exception):
    """A check that does not apply, and why."""


def _run(name: str, check: Callable[[], str | None]) -> CheckResult:
    try:
        return CheckResult(name, PASS, check() or "")
    except Failed as why:
        return CheckResult(name, FAIL, str(why))
    except Skipped as why:
        return CheckResult(name, SKIP, str(why))
    except Exception as err:  # noqa: BLE001 - any error of the checked model is a failed check, reported
        return CheckResult(name, FAIL, " ".join(f"{type(err).__name__}: {err}".split())[:300])


def format_results(rows: list[CheckResult]) -> str:
    """One row per check: name, result, detail."""
    width = max(len(r.name) for r in rows)
    return "\n".join(f"{r.name.ljust(width)}  {r.status.ljust(7)}  {r.detail}".rstrip() for r in rows)


# --- models -----------------------------------------------------------------------------------------------
@dataclass
class ModelUnderCheck:
    """What every model check is given: how to build the model, the one copy the checks share (built once the
    first check passes), and one seeded stream of tokens that the checks draw from in turn."""

    name: str
    params: dict
    vocab_size: int
    model: MemoryModel | None = None
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))

    def build(self, d_model: int = WIDTHS[0], seed: int = 0) -> MemoryModel:
        torch.manual_seed(seed)
        return build_model(self.name, self.vocab_size, d_model=d_model, n_layers=LAYERS, **self.params)

    def tokens(self, batch: int, seq_len: int) -> torch.Tensor:
        return torch.randint(0, self.vocab_size, (batch, seq_len), generator=self.generator)  # (B, T)


def builds_at_two_widths(subject: ModelUnderCheck) -> str:
    models = [subject.build(w) for w in WIDTHS]
    for width, model in zip(WIDTHS, models):
        if model.d_model != width:
            raise Failed(f"asked for d_model={width}, the model reports d_model={model.d_model}")
    small, wide = (model.num_params() for model in models)
    if not 0 < small < wide:
        raise Failed(f"parameters do not grow with width: {small:,} at {WIDTHS[0]}, {wide:,} at {WIDTHS[1]}")
    return f"{small:,} params at d_model={WIDTHS[0]}, {wide:,} at {WIDTHS[1]}"


def shapes_and_dtype(subject: ModelUnderCheck) -> None:
    model, vocab_size = subject.model, subject.vocab_size
    for batch, seq_len in ((2, 1), (3, 17), (2, 64)):
        x = subject.tokens(batch, seq_len)  # (B, T)
        logits = model(x)  # (B, T, V)
        if logits.shape != (batch, seq_len, vocab_size) or logits.dtype != torch.float32:
            raise Failed(f"({batch}, {seq_len}) tokens gave {logits.dtype} logits of shape {tuple(logits.shape)}, "
                         f"expected float32 {(batch, seq_len, vocab_size)}")
        if not torch.isfinite(logits).all():
            raise Failed(f"non-finite logits at ({batch}, {seq_len})")
        features = model.features(x)  # (B, T, D)
        if features.shape != (batch, seq_len, model.d_model):
            raise Failed(f"features have shape {tuple(features.shape)}, expected {(batch, seq_len, model.d_model)}")


def causal(subject: ModelUnderCheck, path: str) -> str:
    """Changing every token after t, for a few t, leaves the logits at and before t as they were (eval mode)."""
    model = subject.model
    if path == "reference" and not getattr(model, "has_reference_path", False):
        raise Skipped("no separate reference path (the fast path is the only one)")
    model.set_path(path).eval()
    seq_len = 40
    x = subject.tokens(2, seq_len)  # (B, T)
    with torch.no_grad():
        base = model(x)  # (B, T, V)
        for t in (0, 7, 23, 38):
            changed = x.clone()
            changed[:, t + 1:] = (changed[:, t + 1:] + 1) % subject.vocab_size  # every later token differs
            moved = (model(changed)[:, : t + 1] - base[:, : t + 1]).abs().max().item()
            if moved > 1e-4:
                raise Failed(f"changing tokens after position {t} changed a logit at or before it by {moved:.3g}")
    model.set_path("fast").train()
    return "future tokens never change past logits"


def causal_fast_path(subject: ModelUnderCheck) -> str:
    return causal(subject, "fast")


def causal_reference_path(subject: ModelUnderCheck) -> str:
    return causal(subject, "reference")


def gradient_reaches_every_parameter(subject: ModelUnderCheck) -> None:
    model = subject.model
    model.zero_grad()
    model(subject.tokens(3, 24)).logsumexp(-1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (
        p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise Failed(f"no gradient reaches {shown}")


def overfits_a_tiny_batch(subject: ModelUnderCheck) -> str:
    fresh, vocab_size = subject.build(), subject.vocab_size
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, vocab_size, (8, 16), generator=g)  # (B, T)
    y = torch.randint(0, vocab_size, (8, 16), generator=g)  # (B, T)
    if fresh.state_size(16) == 0:  # memoryless: only a function of the current token can be fitted
        y = (x * 3 + 1) % vocab_size
    opt = torch.optim.Adam(fresh.parameters(), lr=3e-3)
    start = loss = math.inf
    for step in range(1, 301):
        loss = torch.nn.functional.cross_entropy(fresh(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        start = min(start, loss.item()) if step == 1 else start
        if loss.item() < 0.1 * start:
            return f"loss {start:.3f} -> {loss.item():.3f} in {step} steps"
    raise Failed(f"loss only went from {start:.3f} to {loss.item():.3f} in 300 steps")


def bf16_autocast(subject: ModelUnderCheck) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = subject.model(subject.tokens(2, 33))  # (B, T, V)
    if logits.shape != (2, 33, subject.vocab_size) or not torch.isfinite(logits.float()).all():
        raise Failed(f"logits of shape {tuple(logits.shape)}, finite: {bool(torch.isfinite(logits.float()).all())}")


def state_size(subject: ModelUnderCheck) -> str:
    model = subject.model
    sizes = {n: model.state_size(n) for n in (64, 256, 4096, 8192)}
    kind = getattr(model, "state_kind", "")  # what the state is, where the model says (hf: models do)
    if any(s is None for s in sizes.values()):
        why = kind or "not declared (no state_size(seq_len))"
        raise Skipped(f"{why}: tables and charts show it as unknown")
    if not all(isinstance(s, int) and s >= 0 for s in sizes.values()):
        raise Failed(f"state_size must be an int >= 0, got {sizes}")
    cost = getattr(model, "cost_class", "unknown")
    if cost == "O(n^2)" and not sizes[64] < sizes[256] < sizes[4096]:
        raise Failed(f"an O(n^2) model's state should grow with length: {sizes}")
    if cost in ("O(n)", "O(n*w)") and sizes[4096] != sizes[8192]:
        raise Failed(f"a bounded-memory ({cost}) model's state grows: {sizes}")
    kind_note = kind + ", " if kind else ""
    return f"{sizes[64]:,} floats at length 64, {sizes[4096]:,} at 4096 ({kind_note}cost class {cost})"


def flops(subject: ModelUnderCheck) -> str:
    counter = count_reference_forward(subject.model, subject.tokens(2, 32))
    counted, claimed = counter.get_total_flops(), subject.model.flops(2, 32)
    if counted and abs(claimed - counted) > 0.05 * counted:
        raise Failed(f"flops(2, 32) = {claimed:,} but FlopCounterMode counts {counted:,} on the reference path")
    return f"{claimed:,} at (2, 32), FlopCounterMode {counted:,}"


def same_seed_same_output(subject: ModelUnderCheck) -> None:
    x = subject.tokens(2, 20)  # (B, T)
    a, b = subject.build(seed=3), subject.build(seed=3)
    a.train(), b.train()
    with torch.no_grad():
        out_a, out_b, again = a(x), b(x), a(x)
    if not torch.equal(out_a, out_b):
        raise Failed("two builds from the same seed give different outputs")
    if not torch.equal(out_a, again):
        raise Failed("two train-mode forwards of one model differ (dropout or other randomness in forward)")


# The model contract, in the order it runs (the checks share one token stream, so the order is part of it).
# The first builds the model; when it does not pass, the others are skipped.
MODEL_CHECKS: tuple[tuple[str, Callable[[ModelUnderCheck], str | None]], ...] = (
    ("builds at two widths", builds_at_two_widths),
    ("shapes and dtype", shapes_and_dtype),
    ("causal (fast path)", causal_fast_path),
    ("causal (reference path)", causal_reference_path),
    ("gradient reaches every parameter", gradient_reaches_every_parameter),
    ("overfits a tiny batch", overfits_a_tiny_batch),
    ("bf16 autocast", bf16_autocast),
    ("state size", state_size),
    ("flops", flops),
    ("same seed, same output", same_seed_same_output),
)


def check_model(name: str, params: dict | None = None, vocab_size: int = VOCAB) -> list[CheckResult]:
    """Every model check (MODEL_CHECKS) on model `name` (a family, an import path, hf:TYPE) built with `params`;
    a pretrained:PATH_OR_ID model gets its own checks (runners/pretrained_eval.py: PRETRAINED_CHECKS).

    A name that does not resolve, or a param the model does not take, raises ConfigError (not a row)."""
    params = dict(params or {})
    valid = family_params(name)
    for key in params:
        if key not in valid:
            raise ConfigError(f"model {name}: {unknown_name_message('param', key, list(valid))}")
    if is_pretrained(name):  # a checkpoint with its own size and tokenizer: checks of its own
        from membench.runners.pretrained_eval import check_pretrained

        return check_pretrained(name, params)
    subject = ModelUnderCheck(name, params, vocab_size)
    (first_name, first_check), *rest = MODEL_CHECKS
    first = _run(first_name, partial(first_check, subject))
    if first.status != PASS:
        return [first, *[CheckResult(n, SKIP, "the model does not build") for n, _ in rest]]
    subject.model = subject.build()
    return [first, *[_run(n, partial(check, subject)) for n, check in rest]]


# --- tasks ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskUnderCheck:
    """What every task check is given: the task's registry name, the task built with its params, and the
    lengths to sample at (its minimum, just above it, odd lengths, and a typical 64 or more)."""

    name: str
    task: Task

    @property
    def typical(self) -> int:
        return max(64, self.task.min_length())

    @property
    def lengths(self) -> list[int]:
        base = self.task.min_length()
        return sorted({base, base + 1, base + 7, 2 * base + 3, self.typical + 1})


def shapes_at_odd_lengths(subject: TaskUnderCheck) -> str:
    for seq_len in subject.lengths:
        batch = subject.task.sample(8, seq_len, seed=1)
        for label, t in (("inputs", batch.inputs), ("targets", batch.targets), ("lags", batch.lags)):
            if t.shape != (8, seq_len) or t.dtype != torch.int64:
                raise Failed(f"{label} at length {seq_len}: {t.dtype} {tuple(t.shape)}, expected int64 (8, {seq_len})")
    return f"lengths {', '.join(map(str, subject.lengths))}"


def token_range(subject: TaskUnderCheck) -> None:
    vocab_size = subject.task.vocab_size
    for seq_len in subject.lengths:
        batch = subject.task.sample(8, seq_len, seed=1)
        scored = batch.scored  # (B, T) bool
        if int(batch.inputs.min()) < 0 or int(batch.inputs.max()) >= vocab_size:
            raise Failed(f"inputs outside [0, {vocab_size}) at length {seq_len}")
        if scored.any() and (int(batch.targets[scored].min()) < 0 or int(batch.targets[scored].max()) >= vocab_size):
            raise Failed(f"scored targets outside [0, {vocab_size}) at length {seq_len}")
        if not ((batch.targets[~scored] == IGNORE).all() and (batch.lags[~scored] == NO_LAG).all()):
            raise Failed("unscored positions must hold target IGNORE (-100) and lag NO_LAG (-1)")


def a_scored_position_in_every_example(subject: TaskUnderCheck) -> None:
    for seq_len in subject.lengths:
        batch = subject.task.sample(16, seq_len, seed=2)
        empty = (~batch.scored.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise Failed(f"at length {seq_len}, example {empty[0]} has no scored position")


def determinism(subject: TaskUnderCheck) -> None:
    a, b, other = (subject.task.sample(16, subject.typical, seed=s) for s in (7, 7, 8))
    if not all(torch.equal(x, y) for x, y in ((a.inputs, b.inputs), (a.targets, b.targets), (a.lags, b.lags))):
        raise Failed("the same seed gave different bytes")
    if torch.equal(a.inputs, other.inputs):
        raise Failed("seeds 7 and 8 gave the same inputs")
    again = get_task(subject.name, **subject.task.params()).sample(16, subject.typical, seed=7)
    if not torch.equal(a.inputs, again.inputs):
        raise Failed("a fresh task object with the same params gave different bytes")


def solver_agrees_with_every_label(subject: TaskUnderCheck) -> None:
    for seq_len in subject.lengths:
        batch = subject.task.sample(32, seq_len, seed=3)
        solved = subject.task.solve(batch.inputs)  # (B, T)
        wrong = (solved[batch.scored] != batch.targets[batch.scored]).sum().item()
        if solved.shape != batch.inputs.shape or wrong:
            labels = int(batch.scored.sum())
            raise Failed(f"at length {seq_len} the solver disagrees with {wrong} of {labels} labels")


def lags_point_at_the_evidence(subject: TaskUnderCheck) -> str:
    batch = subject.task.sample(32, subject.typical + 5, seed=4)
    rows, cols = batch.scored.nonzero(as_tuple=True)  # (S,) each: the scored positions
    lag = batch.lags[rows, cols]  # (S,)
    evidence = cols - lag  # (S,) where each answer's evidence sits
    if (lag < 1).any() or (evidence < 0).any():
        raise Failed("a scored lag is < 1 or points before the start of the sequence")
    if subject.task.recalls_token:
        wrong = (batch.inputs[rows, evidence] != batch.targets[rows, cols]).sum().item()
        if wrong:
            raise Failed(f"{wrong} scored targets are not the input token their lag points at")
        return "every target is the input token its lag points at"
    return "lags in range (recalls_token is False: the answer is computed, not copied)"


def memory_is_necessary(subject: TaskUnderCheck) -> str:
    """A lookup table from the current token to its most frequent target, fitted on one sample and scored on
    another, must do no better than always guessing the most frequent target (+ 0.05)."""
    vocab_size = subject.task.vocab_size
    fit, held = subject.task.sample(256, subject.typical, seed=10), subject.task.sample(256, subject.typical, seed=11)
    cur, tgt = fit.inputs[fit.scored], fit.targets[fit.scored]  # (S,) each
    table = torch.zeros(vocab_size, vocab_size, dtype=torch.long)  # (current token, target) -> count
    table.index_put_((cur, tgt), torch.ones_like(cur), accumulate=True)
    guess, constant = table.argmax(1), int(tgt.bincount(minlength=vocab_size).argmax())
    seen = table.sum(1) > 0
    h_cur, h_tgt = held.inputs[held.scored], held.targets[held.scored]
    local = torch.where(seen[h_cur], guess[h_cur], torch.full_like(h_cur, constant))
    local_acc = (local == h_tgt).float().mean().item()
    constant_acc = (h_tgt == constant).float().mean().item()
    if local_acc > constant_acc + 0.05:
        raise Failed(f"a current-token-only predictor scores {local_acc:.3f} vs a constant guess "
                     f"{constant_acc:.3f}: the answer leaks locally")
    return f"current-token-only {local_acc:.3f}, constant {constant_acc:.3f}"


def generation_without_host_syncs(subject: TaskUnderCheck) -> None:
    batch = subject.task._generate(8, subject.typical + 3, None, torch.device("meta"))  # meta: no values to read back
    if not batch.inputs.shape == batch.targets.shape == batch.lags.shape == (8, subject.typical + 3):
        raise Failed("on the meta device the batch has the wrong shape")


# The task contract, after the task has built ("builds" is the first row; when it fails, these are skipped).
TASK_CHECKS: tuple[tuple[str, Callable[[TaskUnderCheck], str | None]], ...] = (
    ("shapes at odd lengths", shapes_at_odd_lengths),
    ("token range", token_range),
    ("a scored position in every example", a_scored_position_in_every_example),
    ("determinism", determinism),
    ("solver agrees with every label", solver_agrees_with_every_label),
    ("lags point at the evidence", lags_point_at_the_evidence),
    ("memory is necessary", memory_is_necessary),
    ("generation without host syncs", generation_without_host_syncs),
)


def task_builds(name: str, params: dict) -> str:
    task = get_task(name, **params)
    return f"vocab_size {task.vocab_size}, min length {task.min_length()}"


def check_task(name: str, params: dict | None = None) -> list[CheckResult]:
    """Every task check (TASK_CHECKS) on task `name` (a registered task, an import path) with `params`; a name
    that does not resolve raises ConfigError (not a row)."""
    params = dict(params or {})
    task_class(name)
    built = _run("builds", partial(task_builds, name, params))
    if built.status != PASS:
        return [built, *[CheckResult(n, SKIP, "the task does not build") for n, _ in TASK_CHECKS]]
    subject = TaskUnderCheck(name, get_task(name, **params))
    return [built, *[_run(n, partial(check, subject)) for n, check in TASK_CHECKS]]
