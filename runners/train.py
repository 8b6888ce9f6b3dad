"""The training loop of one trial: an endless seeded stream, AdamW, warm-up + cosine, early stop, time cap.

Each step s draws a fresh batch on the model's device from one segment of the training mixture (chosen
in proportion to the segments' weights by a generator seeded with the trial seed), with data seed
`train_seed(seed, s)`. A trial with a `train_length_range` (lo, hi) draws each step's length uniformly from
lo..hi instead (`length_schedule`, seeded by the trial seed: the same seed gives the same lengths), as the
length-generalisation papers train. The output head and the loss are computed only at the scored
positions, without a wait for the device (runners/step_loss.py).

The loss is summed on the device and read every `log_every` steps; a non-finite reading raises
`Diverged`. Those readings and the evaluations are the only waits for the device (plus one per segment
for its capacity, and whatever the task's generator needs). Every `eval_every` steps, and once at the end,
every eval slice is scored on held-out seeds. Training stops early when the slices named by
`config.early_stop` reach `threshold`: those at the train length ("train_len") or all of them
("all_slices"). Time-to-accuracy is the first evaluation at which EVERY slice reached it.

Clocks: `train_seconds` and time-to-accuracy count training only, from the first step to the evaluation;
evaluation pauses the clock, so the eval frequency does not change them, except through their resolution
of `eval_every` steps. The time cap counts the trial's wall time from the first step, evaluation included:
no training step and no eval batch starts after it (an evaluation cut short ends training with status
timeout), and the final evaluation may take one more cap, so a trial ends within about 2 x time_cap after
its first step. Compilation is none of these: it happens in a warm-up before the first step
(`Training.warm_up`), timed as `compile_seconds`.

`compile` captures the training forward (runners/step_loss.py: `resolve_compile`, asked once per trial).

A trial's run is one `Training`: its state (tasks, optimizer, captured step, counters, the outcome so far)
and its stages as methods, from the warm-up to the final evaluation; `train` runs one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import torch

from membench.memtasks import train_seed
from membench.runners import metrics
from membench.runners.step_loss import (
    CapacityExceeded,
    captured_loss,
    gather_capacity,
    resolve_compile,
    scored_positions,
)
from membench.runners.trackers import NO_TRACKER, Tracker


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainOutcome:
    steps: int = 0  # optimizer steps taken
    train_seconds: float = 0.0  # wall seconds spent training (evaluation and the compile warm-up excluded)
    compile_seconds: float = 0.0  # wall seconds of the warm-up that compiles the captured step (0: eager)
    tokens: int = 0  # training tokens seen (B * T summed over steps)
    segment_steps: list[int] = field(default_factory=list)  # steps drawn from each segment
    head_rows: list[int | None] = field(default_factory=list)  # rows the output head runs on, per segment
    timed_out: bool = False
    stop_reason: str = "budget"  # threshold, plateau, budget or time_cap: what ended training
    under_trained: bool = False  # stopped by the budget or the time cap below threshold while still improving
    progress: float = math.nan  # the early-stop slices' mean accuracy at the final evaluation
    chance_plateau: str = ""  # the near-chance rule: "", more_steps, second_lr_better or second_lr_worse
    slices: dict = field(default_factory=dict)  # slice name -> metrics.SliceResult (final evaluation)
    time_to_accuracy: dict = field(default_factory=dict)  # seconds, steps, tokens; empty if never reached
    curve: list[dict] = field(default_factory=list)  # step, seconds, tokens, train_loss, eval_accuracy
    slice_curve: list[dict] = field(default_factory=list)  # step, seconds, tokens, slice, accuracy: every eval


def lr_at(step: int, steps: int, peak: float, warmup: float) -> float:
    """Learning rate of step `step` (0-based) of `steps`: linear warm-up over w steps, then cosine to peak/10.

        w = max(1, round(warmup * steps))
        lr(s) = peak * (s + 1) / w                                        for s < w
        lr(s) = peak * (0.1 + 0.45 * (1 + cos(pi * (s - w) / (steps - w))))  for s >= w

    Example: peak=1e-3, steps=100, warmup=0.1 -> lr(0)=1e-4, lr(9)=1e-3, lr(10)=1e-3, lr(55)=5.5e-4.
    """
    w = max(1, round(warmup * steps))
    if step < w:
        return peak * (step + 1) / w
    progress = (step - w) / max(1, steps - w)
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


FUSED_ADAMW_DEVICES = ("cuda", "cpu")  # where make_optimizer fuses AdamW


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device):
    """AdamW; weight decay on matrices (dim >= 2) only, not on biases and norm gains; fused (one kernel over
    all parameters) on CUDA and on the CPU, where it halves the ~1.4 ms the per-tensor loop takes for the
    ~30 tensors of a 2-layer smoke model (a tenth of its step)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=device.type in FUSED_ADAMW_DEVICES)


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> None:
    """Scale the gradients of `params` so that their global L2 norm is at most `max_norm`: the operations of
    torch.nn.utils.clip_grad_norm_ alone (one foreach norm, the norm of the norms, one foreach scale by
    min(1, max_norm / (norm + 1e-6))), so the same bytes, in ~0.1 ms a step instead of ~0.5 on the CPU, where
    the library's grouping and checks cost more than the arithmetic for the ~40 small tensors of a smoke model.
    Gradients of several devices or dtypes go to the library function."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    if len({(g.device, g.dtype) for g in grads}) > 1:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))  # () the global norm
    torch._foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp(max=1.0))


def length_schedule(length_range: tuple[int, ...], steps: int, seed: int) -> list[int]:
    """The length of each step's batch: uniform on lo..hi (both ends included), i.i.d., fixed by `seed`.

        >>> lengths = length_schedule((8, 12), 6, seed=0)
        >>> lengths == length_schedule((8, 12), 6, seed=0), all(8 <= n <= 12 for n in lengths)
        (True, True)
    """
    low, high = length_range
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(low, high + 1, (steps,), generator=gen).tolist()


def segment_schedule(weights: list[float], steps: int, seed: int) -> list[int]:
    """Which segment each step draws from: i.i.d. in proportion to `weights`, fixed by `seed`."""
    if len(weights) == 1:
        return [0] * steps
    gen = torch.Generator().manual_seed(seed)
    return torch.multinomial(torch.tensor(weights, dtype=torch.double), steps, replacement=True,
                             generator=gen).tolist()


class _Clock:
    """Wall seconds of training, paused while evaluating (synchronising the device at each reading)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.total, self._since = device, 0.0, time.perf_counter()

    def pause(self) -> float:
        metrics.synchronize(self.device)
        self.total += time.perf_counter() - self._since
        return self.total

    def resume(self) -> None:
        self._since = time.perf_counter()


class Training:
    """One trial's training run: what it reads (model, config, tasks, schedule, optimizer, captured step) and
    what it updates (the loss on the device, the counters, the outcome so far), with its stages as methods.

    `run` is the loop: `__init__` (the state before the first step, the compile mode resolved once) ->
    `warm_up` (compile, before the clocks) -> `train_step` for each step -> `read_loss` every `log_every`
    steps -> `evaluate` every `eval_every` steps, which asks `stop_check` whether to stop -> a final
    `read_loss` and `evaluate`. `train` is `Training(model, config, device, compile).run(progress)`.
    """

    def __init__(self, model, config, device: torch.device, compile: str, tracker: Tracker = NO_TRACKER) -> None:
        self.tracker = tracker  # also receives the loss, lr and accuracies as they are read (runners.trackers)
        self.model, self.config, self.device = model, config, device  # config: a runners.trial.TrialConfig
        self.eval_tasks = {s.name: config.slice_task(s) for s in config.eval_slices}  # slice name -> task
        if config.train_length_range and compile == "auto":
            compile = "none"  # a capture per drawn length would cost more than it saves
        self.compile = resolve_compile(model, compile, device)  # the capture of the step, "auto" resolved
        self.train_tasks = [config.segment_task(s) for s in config.segments]  # one task per training segment
        # the slices whose mean is the curve's eval_accuracy, and those that must reach the threshold to stop early
        self.at_train_len = ([s.name for s in config.eval_slices if s.seq_len == config.train_len]
                             or list(self.eval_tasks))
        self.stop_names = list(self.eval_tasks) if config.early_stop == "all_slices" else self.at_train_len
        self.schedule = segment_schedule([s.weight for s in config.segments], config.steps, config.seed)
        # each step's sequence length: its segment's, or drawn from the trial's train_length_range
        self.lengths = (length_schedule(config.train_length_range, config.steps, config.seed)
                        if config.train_length_range else [config.segments[seg].seq_len for seg in self.schedule])
        self.optimizer = make_optimizer(model, config.lr, config.weight_decay, device)
        self.params = list(model.parameters())  # in the model's order: what clip_grad_norm scales
        self.step_loss = captured_loss(model, self.compile, device)  # (inputs, index, picked) -> () loss
        self.capacity: dict[tuple[int, int], int] = {}  # (segment, length) -> its gather rows
        self.out = TrainOutcome(segment_steps=[0] * len(config.segments), head_rows=[None] * len(config.segments))
        self.loss_sum = torch.zeros((), device=device)  # () the loss summed since the last reading
        self.excess = torch.zeros((), dtype=torch.long, device=device)  # () scored positions dropped (stays 0)
        self.window = 0  # steps summed in loss_sum
        self.loss_value = math.nan  # the last loss reading
        self.points: dict[int, dict] = {}  # step -> curve point
        self.last_eval = -1  # step of the last evaluation
        self.best = -math.inf  # the best mean accuracy of the early-stop slices so far
        self.stale = 0  # evaluations since `best` last rose by at least config.min_delta
        # the chance level of the early-stop slices (their mean): what a near-chance plateau is measured against
        self.chance = sum(self.eval_tasks[n].chance_level for n in self.stop_names) / len(self.stop_names)
        self.clock: _Clock | None = None  # training seconds, from the first step (set by `run`)
        self.started = 0.0  # time.perf_counter() at the first step: the time cap counts from it
        self.bar = None  # tqdm progress bar, or None

    def run(self, progress: bool = False) -> TrainOutcome:
        """The loop, stage by stage: the compile warm-up (before the clocks start); steps until the budget,
        the time cap or an early stop (a plateau near chance is no stop: `stop_check`), the loss read every
        `log_every` steps and the slices scored every
        `eval_every`; then the last loss reading, the training time, and a final evaluation unless the last
        step was just evaluated."""
        config, out = self.config, self.out
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=config.steps, desc=config.label(), unit="step", leave=False, position=1)
        self.model.train()
        try:
            out.compile_seconds = self.warm_up()
            self.started = time.perf_counter()
            self.clock = _Clock(self.device)
            for step in range(config.steps):
                if time.perf_counter() - self.started > config.time_cap:
                    out.timed_out = True
                    break
                self.train_step(step)
                if self.bar is not None:
                    self.bar.update()
                if out.steps % config.log_every == 0:
                    self.read_loss(out.steps)
                if out.steps % config.eval_every == 0 and self.evaluate(out.steps):
                    break
            if self.window:
                self.read_loss(out.steps)
            out.train_seconds = self.clock.pause()
            self.clock.resume()
            if self.last_eval != out.steps or out.timed_out:
                self.evaluate(out.steps, final=True)
            if out.timed_out:
                out.stop_reason = "time_cap"
            out.under_trained = (out.stop_reason in ("budget", "time_cap") and self.best < config.threshold
                                 and self.stale < config.patience)
        finally:
            if self.bar is not None:
                self.bar.close()
        out.curve = [self.points[s] for s in sorted(self.points)]
        return out

    def draw(self, step: int):
        """The batch of step `step`, on the device, and its scored positions gathered to the capacity of its
        segment and length (set from their first batch): inputs (B, T), index (C,), picked (C,), dropped ()."""
        seg, length = self.schedule[step], self.lengths[step]
        batch = self.train_tasks[seg].sample(self.config.batch_size, length, train_seed(self.config.seed, step),
                                             self.device)
        if (seg, length) not in self.capacity:
            self.capacity[seg, length] = gather_capacity(batch.targets)
            self.out.head_rows[seg] = max(self.out.head_rows[seg] or 0, self.capacity[seg, length])
        return (batch.inputs, *scored_positions(batch.targets, self.capacity[seg, length]))

    def warm_up(self) -> float:
        """Compile the captured step before the clock starts; returns its wall seconds (0.0 when eager).

        One forward and backward on the first batch of each segment (the batch its first step will draw, so
        the capacities are the ones training uses; each segment's shapes compile now, not mid-run), twice
        under cuda_graphs (the first call compiles, the second records the graph); the gradients are dropped
        after each backward pass and the optimizer is not stepped, so nothing is learnt and training's numbers
        are those of an eager run. (Dropped after each one, not after both: under cuda_graphs the first
        backward's gradients live in the graphs' memory pool, which the second forward overwrites, and a second
        backward adding to them fails.)
        """
        if self.compile == "none":
            return 0.0
        started = time.perf_counter()
        first_steps = {}  # segment -> its first step
        for step, seg in enumerate(self.schedule):
            first_steps.setdefault(seg, step)
        for step in first_steps.values():
            inputs, index, picked, _ = self.draw(step)
            for _ in range(2 if self.compile == "cuda_graphs" else 1):
                self.step_loss(inputs, index, picked).backward()
                self.model.zero_grad(set_to_none=True)
        metrics.synchronize(self.device)
        return time.perf_counter() - started

    def train_step(self, step: int) -> None:
        """Step `step` (0-based): draw its batch, forward and backward, clip, update; the loss stays on the
        device."""
        config, out = self.config, self.out
        seg = self.schedule[step]
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, config.steps, config.lr, config.warmup)
        inputs, index, picked, dropped = self.draw(step)  # (B, T), (C,), (C,), ()
        loss = self.step_loss(inputs, index, picked)
        self.excess += dropped
        loss.backward()
        clip_grad_norm(self.params, config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.loss_sum += loss.detach()
        self.window += 1
        out.steps, out.tokens = step + 1, out.tokens + config.batch_size * self.lengths[step]
        out.segment_steps[seg] += 1

    def read_loss(self, step: int) -> None:
        """Host sync: the mean loss since the last reading, recorded on the curve; raises Diverged when it is
        not finite and CapacityExceeded when a step dropped scored positions."""
        self.loss_value = float(self.loss_sum) / self.window
        if int(self.excess):
            raise CapacityExceeded(
                f"{int(self.excess)} scored positions did not fit the gather capacity {self.capacity} (per "
                f"segment and length, set from its first batch) in steps {step - self.window + 1}..{step}: this "
                f"task's count of scored positions varies more than the margin of one sequence")
        if not math.isfinite(self.loss_value):
            raise Diverged(f"training loss is {self.loss_value} at step {step}")
        self.point(step, self.clock.pause())["train_loss"] = self.loss_value
        self.tracker.log(step, {"train/loss": self.loss_value, "train/lr": self.optimizer.param_groups[0]["lr"]})
        self.clock.resume()
        self.loss_sum.zero_()
        self.window = 0
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {self.loss_value:.3f}")

    def evaluate(self, step: int, final: bool = False) -> bool:
        """Score every slice (clock paused); record the curve and time-to-accuracy; True when training should
        stop. Scoring stops at the time cap (the final evaluation may take one more time cap)."""
        config, out = self.config, self.out
        seconds = self.clock.pause()
        deadline = self.started + config.time_cap * (2 if final else 1)
        out.slices = {
            s.name: metrics.evaluate(self.model, self.eval_tasks[s.name], s.seq_len, s.n_sequences,
                                     config.batch_size, config.seed, self.device, deadline)
            for s in config.eval_slices
        }
        if not final and time.perf_counter() > deadline:
            out.timed_out = True  # this evaluation was cut short: the final one (with its grace) replaces it
        self.clock.resume()
        self.last_eval = step
        accuracy = {name: r.accuracy if r.status == "ok" else math.nan for name, r in out.slices.items()}
        out.slice_curve += [{"step": step, "seconds": seconds, "tokens": out.tokens, "slice": name, "accuracy": a}
                            for name, a in accuracy.items()]
        point = self.point(step, seconds)
        point["eval_accuracy"] = sum(accuracy[n] for n in self.at_train_len) / len(self.at_train_len)
        by_slice = {f"eval/{name}": a for name, a in accuracy.items()}
        self.tracker.log(step, {"eval/accuracy": point["eval_accuracy"], **by_slice})
        reached = {name for name, a in accuracy.items() if a >= config.threshold}
        if not out.time_to_accuracy and reached == set(accuracy):
            out.time_to_accuracy = {"seconds": seconds, "steps": step, "tokens": out.tokens}
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {self.loss_value:.3f} acc {point['eval_accuracy']:.3f}")
        return self.stop_check(accuracy, reached, final)

    def stop_check(self, accuracy: dict[str, float], reached: set[str], final: bool = False) -> bool:
        """After an evaluation: update the plateau counters and say whether training stops, and why.

        progress = the mean accuracy of the early-stop slices; it improves when it rises by at least min_delta
        over the best so far. Training stops at the threshold (every early-stop slice reached it) or, with
        budget "plateau", after `patience` evaluations without an improvement, once `min_steps` are done: a
        task can sit at chance for hundreds of steps before a model learns it (a loss plateau, then a sudden
        drop), and a stop inside that plateau would read as a memory that cannot do the task.

        The near-chance rule (`config.near_chance` > 0): a plateau whose best scaled accuracy is below
        near_chance is not convergence, so it earns more steps: training goes on to the step budget (or the
        threshold), and the outcome's `chance_plateau` says "more_steps". Example: chance 1/32 (MQAR, 32
        values), near_chance 0.1: a plateau at 0.11 (scaled 0.08) trains on; one at 0.20 (scaled 0.17) stops.
        """
        config, out = self.config, self.out
        progress = sum(accuracy[n] for n in self.stop_names) / len(self.stop_names)
        out.progress = progress
        if progress >= self.best + config.min_delta:  # NaN (a slice that failed) never improves
            self.best, self.stale = progress, 0
        else:
            self.stale += 1
            self.best = progress if progress > self.best else self.best
        if final:  # training has ended already: its reason stands
            return False
        if set(self.stop_names) <= reached:
            out.stop_reason = "threshold"
            return True
        if config.budget == "plateau" and self.stale >= config.patience and out.steps >= config.min_steps:
            if self.near_chance(self.best):  # not convergence: a flat stretch before learning looks the same
                out.chance_plateau = "more_steps"
                return False
            out.stop_reason = "plateau"
            return True
        return False

    def near_chance(self, progress: float) -> bool:
        """Whether an accuracy of the early-stop slices is near chance: its scaled accuracy (runners.metrics
        `scaled_accuracy`) below `config.near_chance` (never, when that is 0)."""
        return self.config.near_chance > 0 and metrics.scaled_accuracy(progress, self.chance) < self.config.near_chance

    def point(self, step: int, seconds: float) -> dict:
        """The curve point of `step`, created at `seconds` on first use."""
        return self.points.setdefault(step, {"step": step, "seconds": seconds, "tokens": self.out.tokens,
                                             "train_loss": math.nan, "eval_accuracy": math.nan})


def train(model, config, device: torch.device, compile: str = "none", progress: bool = False,
          tracker: Tracker = NO_TRACKER) -> TrainOutcome:
    """Train `model` (already on `device`) under `config` (a runners.trial.TrialConfig) and evaluate it: one
    `Training` run (its `run` gives the stages), or two under the near-chance rule's second learning rate.

    With `config.second_lr` (and near_chance) set, a run that ends with its early-stop slices still near chance
    is run again from the same initial weights at second_lr, and the better of the two (by their final
    accuracy) is the outcome, its `chance_plateau` "second_lr_better" (the second run's) or "second_lr_worse"
    (the first run's, its weights restored), as Zoology's sweep keeps the best learning rate of each cell.
    """
    initial = _weights(model) if config.second_lr else None
    training = Training(model, config, device, compile, tracker)
    first = training.run(progress)
    if initial is None or not training.near_chance(first.progress):
        return first
    reached = _weights(model)
    model.load_state_dict(initial)
    second = Training(model, dataclasses.replace(config, lr=config.second_lr), device, compile, tracker).run(progress)
    better = second.progress > first.progress  # NaN (a failed slice) is never better
    if not better:
        model.load_state_dict(reached)
    kept = second if better else first
    kept.chance_plateau = "second_lr_better" if better else "second_lr_worse"
    return kept


def _weights(model) -> dict:
    """A copy of the model's parameters and buffers (on their device)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
