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

Clocks: `train_seconds` and time-to-accuracy count training only, from the first step (compilation by the
`compile` option included) to the evaluation; evaluation pauses the clock, so the eval frequency does
not change them, except through their resolution of `eval_every` steps. The time cap counts the
trial's whole wall time, evaluation included: no training step and no eval batch starts after it (an
evaluation cut short ends training with status timeout), and the final evaluation may take one more cap,
so a trial ends within about 2 x time_cap.

`compile` captures the training forward (features, gather, head and loss; the backward follows through
AOTAutograd): "none" (eager), "torch_compile", "cuda_graphs" (torch.compile's "reduce-overhead" mode,
which replays CUDA graphs; CUDA only) or "auto" (cuda_graphs on CUDA, none elsewhere).
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


class CapacityExceeded(RuntimeError):
    """A batch had more scored positions than the gather capacity of its segment."""


@dataclass
class TrainOutcome:
    steps: int = 0  # optimizer steps taken
    train_seconds: float = 0.0  # wall seconds spent training (evaluation excluded)
    tokens: int = 0  # training tokens seen (B * T summed over steps)
    segment_steps: list[int] = field(default_factory=list)  # steps drawn from each segment
    head_rows: list[int | None] = field(default_factory=list)  # rows the output head runs on, per segment
    timed_out: bool = False
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


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device):
    """AdamW; weight decay on matrices (dim >= 2) only, not on biases and norm gains; fused on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=device.type == "cuda")


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
    return min(batch_size * seq_len, batch_size * most + seq_len)


def scored_positions(targets: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sync-free selection of the scored positions, padded to `capacity` rows (see the module doc).

    targets (B, T) -> index (C,) into the flattened (B*T) positions, ascending, padded with 0;
    picked (C,) their targets, IGNORE on padding rows; excess () int64, max(0, N - C) (0 when exact).
    """
    flat = targets.reshape(-1)  # (B*T,)
    scored = flat != IGNORE  # (B*T,)
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


def loss_fn(model, compile: str, device: torch.device):
    """The training forward (inputs (B, T), index (C,), picked (C,)) -> () loss, captured per `compile`
    (see the module doc). Evaluation always runs eagerly (its lengths vary)."""
    if compile == "auto":
        compile = "cuda_graphs" if precision.graphs_supported(device) else "none"

    def forward(inputs: torch.Tensor, index: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
        with metrics.autocast(device):
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


def train(model, config, device: torch.device, compile: str = "none", progress: bool = False) -> TrainOutcome:
    """Train `model` (already on `device`) under `config` (a runners.trial.TrialConfig) and evaluate it."""
    train_tasks = [config.segment_task(s) for s in config.segments]
    eval_tasks = {s.name: config.slice_task(s) for s in config.eval_slices}
    at_train_len = [s.name for s in config.eval_slices if s.seq_len == config.train_len] or list(eval_tasks)
    stop_names = list(eval_tasks) if config.early_stop == "all_slices" else at_train_len
    schedule = segment_schedule([s.weight for s in config.segments], config.steps, config.seed)
    optimizer = make_optimizer(model, config.lr, config.weight_decay, device)
    step_loss = loss_fn(model, compile, device)
    capacity: list[int | None] = [None] * len(config.segments)  # gather rows of each segment, set on first use
    out = TrainOutcome(segment_steps=[0] * len(config.segments), head_rows=[None] * len(config.segments))
    points: dict[int, dict] = {}  # step -> curve point

    def point(step: int, seconds: float) -> dict:
        return points.setdefault(step, {"step": step, "seconds": seconds, "tokens": out.tokens,
                                        "train_loss": math.nan, "eval_accuracy": math.nan})

    def evaluate(step: int, final: bool = False) -> bool:
        """Score every slice; record the curve and time-to-accuracy; True when training should stop.
        Scoring stops at the time cap (the final evaluation may take one more time cap)."""
        seconds = clock.pause()
        deadline = started + config.time_cap * (2 if final else 1)
        out.slices = {
            s.name: metrics.evaluate(model, eval_tasks[s.name], s.seq_len, s.n_sequences, config.batch_size,
                                     config.seed, device, deadline)
            for s in config.eval_slices
        }
        if not final and time.perf_counter() > deadline:
            out.timed_out = True  # this evaluation was cut short: the final one (with its grace) replaces it
        clock.resume()
        accuracy = {name: r.accuracy if r.status == "ok" else math.nan for name, r in out.slices.items()}
        out.slice_curve += [{"step": step, "seconds": seconds, "tokens": out.tokens, "slice": name, "accuracy": a}
                            for name, a in accuracy.items()]
        point(step, seconds)["eval_accuracy"] = sum(accuracy[n] for n in at_train_len) / len(at_train_len)
        reached = {name for name, a in accuracy.items() if a >= config.threshold}
        if not out.time_to_accuracy and reached == set(accuracy):
            out.time_to_accuracy = {"seconds": seconds, "steps": step, "tokens": out.tokens}
        if bar is not None:
            bar.set_postfix_str(f"loss {loss_value:.3f} acc {point(step, seconds)['eval_accuracy']:.3f}")
        return set(stop_names) <= reached

    def read_loss(step: int) -> None:
        """Host sync: the mean loss since the last reading; raises Diverged when it is not finite and
        CapacityExceeded when a step dropped scored positions."""
        nonlocal window, loss_value
        loss_value = float(loss_sum) / window
        if int(excess):
            raise CapacityExceeded(
                f"{int(excess)} scored positions did not fit the gather capacity {capacity} (per segment, set "
                f"from its first batch) in steps {step - window + 1}..{step}: this task's count of scored "
                f"positions varies more than the margin of one sequence")
        if not math.isfinite(loss_value):
            raise Diverged(f"training loss is {loss_value} at step {step}")
        point(step, clock.pause())["train_loss"] = loss_value
        clock.resume()
        loss_sum.zero_()
        window = 0
        if bar is not None:
            bar.set_postfix_str(f"loss {loss_value:.3f}")

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, desc=config.label(), unit="step", leave=False, position=1)
    loss_sum = torch.zeros((), device=device)
    excess = torch.zeros((), dtype=torch.long, device=device)  # scored positions dropped (must stay 0)
    window, loss_value, last_eval = 0, math.nan, -1
    model.train()
    started = time.perf_counter()
    clock = _Clock(device)
    try:
        for step in range(config.steps):
            if time.perf_counter() - started > config.time_cap:
                out.timed_out = True
                break
            seg = schedule[step]
            seq_len = config.segments[seg].seq_len
            batch = train_tasks[seg].sample(config.batch_size, seq_len, train_seed(config.seed, step), device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, config.steps, config.lr, config.warmup)
            if capacity[seg] is None:
                capacity[seg] = gather_capacity(batch.targets)
                out.head_rows[seg] = capacity[seg]
            index, picked, dropped = scored_positions(batch.targets, capacity[seg])  # (C,), (C,), ()
            loss = step_loss(batch.inputs, index, picked)
            excess += dropped
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
            window += 1
            out.steps, out.tokens = step + 1, out.tokens + config.batch_size * seq_len
            out.segment_steps[seg] += 1
            if bar is not None:
                bar.update()
            if out.steps % config.log_every == 0:
                read_loss(out.steps)
            if out.steps % config.eval_every == 0:
                last_eval = out.steps
                if evaluate(out.steps):
                    break
        if window:
            read_loss(out.steps)
        out.train_seconds = clock.pause()
        clock.resume()
        if last_eval != out.steps or out.timed_out:
            evaluate(out.steps, final=True)
    finally:
        if bar is not None:
            bar.close()
    out.curve = [points[s] for s in sorted(points)]
    return out
