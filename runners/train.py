"""The training loop of one trial: an endless seeded stream, AdamW, warm-up + cosine, early stop, time cap.

Each step s draws a fresh batch on the model's device from one segment of the training mixture (chosen
in proportion to the segments' weights by a generator seeded with the trial seed), with data seed
`train_seed(seed, s)`. The output head and the loss are computed only at the N scored positions:

    h = model.features(x)                                # (B, T, D)
    logits = model.head(h[scored])                       # (N, V)
    loss = cross_entropy(logits, y[scored])              # mean over the N scored positions

That is `scored_loss_reference`. Selecting a data-dependent number of rows needs N on the host, a wait for
the device at every step, so training uses a sync-free form of it (`scored_positions`, `scored_loss`):
the first batch of each segment fixes a capacity C >= N (`gather_capacity`), and every step gathers
exactly C rows, the N scored ones in order and C - N padding rows whose target is ignored:

    index  = nonzero_static(scored.flatten(), size=C)    # (C,) scored positions, then padding
    picked = y.flatten()[index] where row < N else -100  # (C,) the padding targets are ignored
    loss   = cross_entropy(head(h.flatten(0, 1)[index]), picked)   # the same mean over the N

Example: B=2, T=4, scored at flat positions 1 and 6, C=3 -> index = [1, 6, 0], picked = [y1, y6, -100].
A step whose N exceeds C would drop positions, so the excess is counted on the device and read with the
loss; `CapacityExceeded` is raised there (the trial's status is "error"), never a silent error.

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
its first step. Compilation is none of these: it happens in a warm-up before the first step (`warm_up`),
timed as `compile_seconds`.

`compile` captures the training forward (features, gather, head and loss; the backward follows through
AOTAutograd): "none" (eager), "torch_compile", "cuda_graphs" (torch.compile's "reduce-overhead" mode,
which replays CUDA graphs; CUDA only) or "auto" (cuda_graphs on CUDA for a family that declares capture
helps it, `compile_friendly`; none elsewhere: `resolve_compile`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from membench.checks import ConfigError
from membench.memtasks import IGNORE, train_seed
from membench.runners import metrics, precision

COMPILE_MODES = ("none", "torch_compile", "cuda_graphs", "auto")


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


class NothingScored(RuntimeError):
    """A training batch without a single scored position (the trial's status is "error")."""


class CapacityExceeded(RuntimeError):
    """A batch had more scored positions than the gather capacity of its segment."""


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


# --- the loss at scored positions ----------------------------------------------------------
def scored_loss_reference(model, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy at the scored positions by boolean indexing (readable; syncs for N).

    h (B, T, D) features, targets (B, T) with IGNORE where not scored -> () loss.
    """
    scored = targets != IGNORE  # (B, T)
    logits = model.head(h[scored])  # (N, V)
    return F.cross_entropy(logits.float(), targets[scored])


def gather_capacity(targets: torch.Tensor) -> int:
    """Rows C reserved for the scored positions of batches like this one: B times the most scored positions
    of one of its sequences, plus one whole sequence, at most B*T. Reads the batch (one device sync).

    Example: B=256, T=64, 4 scored in every row -> C = 256 * 4 + 64 = 1088 (N = 1024).
    """
    batch_size, seq_len = targets.shape
    most = int((targets != IGNORE).sum(dim=1).max())
    if most == 0:  # the loss would be a mean over nothing (NaN), which is not a divergence
        raise NothingScored(f"the task scores no position in its first batch of {batch_size} sequences of length "
                            f"{seq_len}: there is nothing to train on (check the task's params at this length)")
    return min(batch_size * seq_len, batch_size * most + seq_len)


def scored_positions(targets: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sync-free selection of the scored positions, padded to `capacity` rows (see the module doc).

    targets (B, T) -> index (C,) into the flattened (B*T) positions, ascending, padded with 0;
    picked (C,) their targets, IGNORE on padding rows; excess () int64, max(0, N - C) (0 when exact).
    """
    flat = targets.reshape(-1)  # (B*T,)
    scored = flat != IGNORE  # (B*T,)
    # nonzero_static has a CUDA kernel from torch 2.6 on (hence pyproject's torch>=2.6)
    index = torch.nonzero_static(scored, size=capacity, fill_value=0).squeeze(1)  # (C,)
    count = scored.sum()  # (), stays on the device
    real = torch.arange(capacity, device=flat.device) < count  # (C,)
    picked = torch.where(real, flat[index], IGNORE)  # (C,)
    return index, picked, (count - capacity).clamp(min=0)


def scored_loss(model, h: torch.Tensor, index: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the rows of `picked` that are not IGNORE: equal to `scored_loss_reference`.

    h (B, T, D), index and picked (C,) from `scored_positions` -> () loss.
    """
    rows = h.flatten(0, 1).index_select(0, index)  # (C, D)
    logits = model.head(rows)  # (C, V)
    return F.cross_entropy(logits.float(), picked)


def resolve_compile(model, compile: str, device: torch.device) -> str:
    """The capture a trial gets: `compile` itself, or for "auto" cuda_graphs where the device can replay CUDA
    graphs (`precision.graphs_supported`: CUDA, sm_80+) and the family declares that capture helps it
    (`compile_friendly`, see models.base), none otherwise.

    Example: auto -> cuda_graphs for a transformer on an H100, none for an lstm there, none for both on a T4
    or the CPU.
    """
    if compile not in COMPILE_MODES:
        raise ConfigError(f"unknown compile mode {compile!r}; valid: {', '.join(COMPILE_MODES)}")
    if compile != "auto":
        return compile
    helps = getattr(model, "compile_friendly", True)
    return "cuda_graphs" if helps and precision.graphs_supported(device) else "none"


def loss_fn(model, compile: str, device: torch.device):
    """The training forward (inputs (B, T), index (C,), picked (C,)) -> () loss, captured per `compile`
    ("auto" resolved by `resolve_compile`; see the module doc). Evaluation always runs eagerly (its lengths
    vary)."""
    compile = resolve_compile(model, compile, device)
    dtype = precision.choose_precision(device)  # chosen here, outside what torch.compile captures

    def forward(inputs: torch.Tensor, index: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
        with metrics.autocast_to(device, dtype):
            return scored_loss(model, model.features(inputs), index, picked)

    if compile == "none":
        return forward
    if compile == "torch_compile":
        return torch.compile(forward)
    if compile == "cuda_graphs":
        precision.check_compile(compile, device)
        return torch.compile(forward, mode="reduce-overhead")
    raise ConfigError(f"unknown compile mode {compile!r}; valid: {', '.join(COMPILE_MODES)}")


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


@dataclass
class _Run:
    """What one trial's training loop reads and updates: its tasks, optimizer, counters and results so far."""

    config: object  # runners.trial.TrialConfig
    model: torch.nn.Module
    device: torch.device
    train_tasks: list  # one task per training segment
    eval_tasks: dict  # slice name -> task
    at_train_len: list[str]  # the slices whose mean is the curve's eval_accuracy
    stop_names: list[str]  # the slices that must reach the threshold to stop early
    schedule: list[int]  # segment of each step
    optimizer: torch.optim.Optimizer
    params: list  # the model's parameters in its order (what clip_grad_norm scales)
    compile: str  # the capture of the step, "auto" resolved (see resolve_compile)
    step_loss: object  # (inputs, index, picked) -> () loss, captured per `compile`
    capacity: list[int | None]  # gather rows of each segment, set from its first batch
    out: TrainOutcome
    loss_sum: torch.Tensor  # () on the device: the loss summed since the last reading
    excess: torch.Tensor  # () int64 on the device: scored positions dropped (must stay 0)
    clock: _Clock | None = None
    started: float = 0.0  # time.perf_counter() at the first step: the time cap counts from it
    bar: object = None  # tqdm progress bar, or None
    points: dict = field(default_factory=dict)  # step -> curve point
    window: int = 0  # steps summed in loss_sum
    loss_value: float = math.nan  # the last loss reading
    last_eval: int = -1  # step of the last evaluation
    best: float = -math.inf  # the best mean accuracy of the early-stop slices so far
    stale: int = 0  # evaluations since `best` last rose by at least config.min_delta

    def point(self, step: int, seconds: float) -> dict:
        """The curve point of `step`, created at `seconds` on first use."""
        return self.points.setdefault(step, {"step": step, "seconds": seconds, "tokens": self.out.tokens,
                                             "train_loss": math.nan, "eval_accuracy": math.nan})


def start(model, config, device: torch.device, compile: str) -> _Run:
    """The state of a trial before its first step: tasks, schedule, optimizer, captured loss, empty counters."""
    eval_tasks = {s.name: config.slice_task(s) for s in config.eval_slices}
    compile = resolve_compile(model, compile, device)
    at_train_len = [s.name for s in config.eval_slices if s.seq_len == config.train_len] or list(eval_tasks)
    return _Run(
        config=config, model=model, device=device,
        train_tasks=[config.segment_task(s) for s in config.segments],
        eval_tasks=eval_tasks, at_train_len=at_train_len,
        stop_names=list(eval_tasks) if config.early_stop == "all_slices" else at_train_len,
        schedule=segment_schedule([s.weight for s in config.segments], config.steps, config.seed),
        optimizer=make_optimizer(model, config.lr, config.weight_decay, device), params=list(model.parameters()),
        compile=compile, step_loss=loss_fn(model, compile, device),
        capacity=[None] * len(config.segments),
        out=TrainOutcome(segment_steps=[0] * len(config.segments), head_rows=[None] * len(config.segments)),
        loss_sum=torch.zeros((), device=device),
        excess=torch.zeros((), dtype=torch.long, device=device),
    )


def draw(run: _Run, step: int):
    """The batch of step `step`, on the device, and its scored positions gathered to its segment's capacity
    (set from the segment's first batch): inputs (B, T), index (C,), picked (C,), dropped ()."""
    seg = run.schedule[step]
    batch = run.train_tasks[seg].sample(run.config.batch_size, run.config.segments[seg].seq_len,
                                        train_seed(run.config.seed, step), run.device)
    if run.capacity[seg] is None:
        run.capacity[seg] = gather_capacity(batch.targets)
        run.out.head_rows[seg] = run.capacity[seg]
    return (batch.inputs, *scored_positions(batch.targets, run.capacity[seg]))


def warm_up(run: _Run) -> float:
    """Compile the captured step before the clock starts; returns its wall seconds (0.0 when eager).

    One forward and backward on the first batch of each segment (the batch its first step will draw, so the
    capacities are the ones training uses; each segment's shapes compile now, not mid-run), twice under
    cuda_graphs (the first call compiles, the second records the graph); the gradients are dropped after each
    backward pass and the optimizer is not stepped, so nothing is learnt and training's numbers are those of an
    eager run. (Dropped after each one, not after both: under cuda_graphs the first backward's gradients live in
    the graphs' memory pool, which the second forward overwrites, and a second backward adding to them fails.)
    """
    if run.compile == "none":
        return 0.0
    started = time.perf_counter()
    first_steps = {}  # segment -> its first step
    for step, seg in enumerate(run.schedule):
        first_steps.setdefault(seg, step)
    for step in first_steps.values():
        inputs, index, picked, _ = draw(run, step)
        for _ in range(2 if run.compile == "cuda_graphs" else 1):
            run.step_loss(inputs, index, picked).backward()
            run.model.zero_grad(set_to_none=True)
    metrics.synchronize(run.device)
    return time.perf_counter() - started


def train_step(run: _Run, step: int) -> None:
    """Step `step` (0-based): draw its batch, forward and backward, clip, update; the loss stays on the device."""
    config, out = run.config, run.out
    seg = run.schedule[step]
    for group in run.optimizer.param_groups:
        group["lr"] = lr_at(step, config.steps, config.lr, config.warmup)
    inputs, index, picked, dropped = draw(run, step)  # (B, T), (C,), (C,), ()
    loss = run.step_loss(inputs, index, picked)
    run.excess += dropped
    loss.backward()
    clip_grad_norm(run.params, config.grad_clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.loss_sum += loss.detach()
    run.window += 1
    out.steps, out.tokens = step + 1, out.tokens + config.batch_size * config.segments[seg].seq_len
    out.segment_steps[seg] += 1


def read_loss(run: _Run, step: int) -> None:
    """Host sync: the mean loss since the last reading, recorded on the curve; raises Diverged when it is
    not finite and CapacityExceeded when a step dropped scored positions."""
    run.loss_value = float(run.loss_sum) / run.window
    if int(run.excess):
        raise CapacityExceeded(
            f"{int(run.excess)} scored positions did not fit the gather capacity {run.capacity} (per segment, "
            f"set from its first batch) in steps {step - run.window + 1}..{step}: this task's count of scored "
            f"positions varies more than the margin of one sequence")
    if not math.isfinite(run.loss_value):
        raise Diverged(f"training loss is {run.loss_value} at step {step}")
    run.point(step, run.clock.pause())["train_loss"] = run.loss_value
    run.clock.resume()
    run.loss_sum.zero_()
    run.window = 0
    if run.bar is not None:
        run.bar.set_postfix_str(f"loss {run.loss_value:.3f}")


def evaluate(run: _Run, step: int, final: bool = False) -> bool:
    """Score every slice (clock paused); record the curve and time-to-accuracy; True when training should stop.
    Scoring stops at the time cap (the final evaluation may take one more time cap)."""
    config, out = run.config, run.out
    seconds = run.clock.pause()
    deadline = run.started + config.time_cap * (2 if final else 1)
    out.slices = {
        s.name: metrics.evaluate(run.model, run.eval_tasks[s.name], s.seq_len, s.n_sequences, config.batch_size,
                                 config.seed, run.device, deadline)
        for s in config.eval_slices
    }
    if not final and time.perf_counter() > deadline:
        out.timed_out = True  # this evaluation was cut short: the final one (with its grace) replaces it
    run.clock.resume()
    run.last_eval = step
    accuracy = {name: r.accuracy if r.status == "ok" else math.nan for name, r in out.slices.items()}
    out.slice_curve += [{"step": step, "seconds": seconds, "tokens": out.tokens, "slice": name, "accuracy": a}
                        for name, a in accuracy.items()]
    point = run.point(step, seconds)
    point["eval_accuracy"] = sum(accuracy[n] for n in run.at_train_len) / len(run.at_train_len)
    reached = {name for name, a in accuracy.items() if a >= config.threshold}
    if not out.time_to_accuracy and reached == set(accuracy):
        out.time_to_accuracy = {"seconds": seconds, "steps": step, "tokens": out.tokens}
    if run.bar is not None:
        run.bar.set_postfix_str(f"loss {run.loss_value:.3f} acc {point['eval_accuracy']:.3f}")
    return stop_check(run, accuracy, reached, final)


def stop_check(run: _Run, accuracy: dict[str, float], reached: set[str], final: bool = False) -> bool:
    """After an evaluation: update the plateau counters and say whether training stops, and why.

    progress = the mean accuracy of the early-stop slices; it improves when it rises by at least min_delta
    over the best so far. Training stops at the threshold (every early-stop slice reached it) or, with
    budget "plateau", after `patience` evaluations without an improvement, once `min_steps` are done: a
    task can sit at chance for hundreds of steps before a model learns it (a loss plateau, then a sudden
    drop), and a stop inside that plateau would read as a memory that cannot do the task.
    """
    config, out = run.config, run.out
    progress = sum(accuracy[n] for n in run.stop_names) / len(run.stop_names)
    if progress >= run.best + config.min_delta:  # NaN (a slice that failed) never improves
        run.best, run.stale = progress, 0
    else:
        run.stale += 1
        run.best = progress if progress > run.best else run.best
    if final:  # training has ended already: its reason stands
        return False
    if set(run.stop_names) <= reached:
        out.stop_reason = "threshold"
        return True
    if config.budget == "plateau" and run.stale >= config.patience and out.steps >= config.min_steps:
        out.stop_reason = "plateau"
        return True
    return False


def train(model, config, device: torch.device, compile: str = "none", progress: bool = False) -> TrainOutcome:
    """Train `model` (already on `device`) under `config` (a runners.trial.TrialConfig) and evaluate it.

    The loop, stage by stage: the compile warm-up (before the clocks start); steps until the budget, the
    time cap or an early stop, the loss read every `log_every` steps and the slices scored every
    `eval_every`; then the last loss reading, the training time, and a final evaluation unless the last
    step was just evaluated.
    """
    run = start(model, config, device, compile)
    out = run.out
    if progress:
        from tqdm.auto import tqdm

        run.bar = tqdm(total=config.steps, desc=config.label(), unit="step", leave=False, position=1)
    model.train()
    try:
        out.compile_seconds = warm_up(run)
        run.started = time.perf_counter()
        run.clock = _Clock(device)
        for step in range(config.steps):
            if time.perf_counter() - run.started > config.time_cap:
                out.timed_out = True
                break
            train_step(run, step)
            if run.bar is not None:
                run.bar.update()
            if out.steps % config.log_every == 0:
                read_loss(run, out.steps)
            if out.steps % config.eval_every == 0 and evaluate(run, out.steps):
                break
        if run.window:
            read_loss(run, out.steps)
        out.train_seconds = run.clock.pause()
        run.clock.resume()
        if run.last_eval != out.steps or out.timed_out:
            evaluate(run, out.steps, final=True)
        if out.timed_out:
            out.stop_reason = "time_cap"
        out.under_trained = (out.stop_reason in ("budget", "time_cap") and run.best < config.threshold
                             and run.stale < config.patience)
    finally:
        if run.bar is not None:
            run.bar.close()
    out.curve = [run.points[s] for s in sorted(run.points)]
    return out
