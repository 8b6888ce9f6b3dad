"""The training loop of one trial: an endless seeded stream, AdamW, warm-up + cosine, early stop, time cap.

Each step s draws a fresh batch on the model's device from one segment of the training mixture (chosen
in proportion to the segments' weights by a generator seeded with the trial seed), with data seed
`train_seed(seed, s)`. The loss is computed only at scored positions:

    h = model.features(x)                   # (B, T, D)
    logits = model.head(h[scored])          # (N, V), N = number of scored positions
    loss = cross_entropy(logits, y[scored])

The loss is summed on the device and read every `log_every` steps; a non-finite reading raises
`Diverged`. (The only other wait for the device is inside `h[scored]`: selecting a data-dependent number
of positions needs that number on the host, the price of computing the head only where it is scored.) Every `eval_every` steps, and once at the end, every
eval slice is scored on held-out seeds. Training stops early when the slices at the train length
reach `threshold`; time-to-accuracy is the first evaluation at which EVERY slice reached it.

Clocks: `train_seconds` and time-to-accuracy count training only (evaluation pauses the clock), so
the eval frequency does not change them; the time cap counts the trial's whole wall time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from memtasks import train_seed
from runners import metrics

COMPILE_MODES = ("none", "torch_compile", "cuda_graphs")


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainOutcome:
    steps: int = 0  # optimizer steps taken
    train_seconds: float = 0.0  # wall seconds spent training (evaluation excluded)
    tokens: int = 0  # training tokens seen (B * T summed over steps)
    segment_steps: list[int] = field(default_factory=list)  # steps drawn from each segment
    timed_out: bool = False
    slices: dict = field(default_factory=dict)  # slice name -> metrics.SliceResult (final evaluation)
    time_to_accuracy: dict = field(default_factory=dict)  # seconds, steps, tokens; empty if never reached
    curve: list[dict] = field(default_factory=list)  # step, seconds, tokens, train_loss, eval_accuracy


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


def features_fn(model, compile: str, device: torch.device):
    """The function computing (B, T) tokens -> (B, T, D) features in training, captured per `compile`:

    none: eager; torch_compile: torch.compile; cuda_graphs: torch.compile with mode "reduce-overhead",
    which replays CUDA graphs (CUDA only). Evaluation always runs eagerly (its lengths vary).
    """
    if compile == "none":
        return model.features
    if compile == "torch_compile":
        return torch.compile(model.features)
    if compile == "cuda_graphs":
        if device.type != "cuda":
            raise ValueError(f"compile='cuda_graphs' needs a CUDA device, got {device}; use none or torch_compile")
        return torch.compile(model.features, mode="reduce-overhead")
    raise ValueError(f"unknown compile mode {compile!r}; valid: {', '.join(COMPILE_MODES)}")


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
    stop_names = [s.name for s in config.eval_slices if s.seq_len == config.train_len] or list(eval_tasks)
    schedule = segment_schedule([s.weight for s in config.segments], config.steps, config.seed)
    optimizer = make_optimizer(model, config.lr, config.weight_decay, device)
    features = features_fn(model, compile, device)
    out = TrainOutcome(segment_steps=[0] * len(config.segments))
    points: dict[int, dict] = {}  # step -> curve point

    def point(step: int, seconds: float) -> dict:
        return points.setdefault(step, {"step": step, "seconds": seconds, "tokens": out.tokens,
                                        "train_loss": math.nan, "eval_accuracy": math.nan})

    def evaluate(step: int) -> bool:
        """Score every slice; record the curve and time-to-accuracy; True when training should stop."""
        seconds = clock.pause()
        out.slices = {
            s.name: metrics.evaluate(model, eval_tasks[s.name], s.seq_len, s.n_sequences, config.batch_size,
                                     config.seed, device)
            for s in config.eval_slices
        }
        clock.resume()
        accuracy = {name: r.accuracy if r.status == "ok" else math.nan for name, r in out.slices.items()}
        point(step, seconds)["eval_accuracy"] = sum(accuracy[n] for n in stop_names) / len(stop_names)
        reached = {name for name, a in accuracy.items() if a >= config.threshold}
        if not out.time_to_accuracy and reached == set(accuracy):
            out.time_to_accuracy = {"seconds": seconds, "steps": step, "tokens": out.tokens}
        if bar is not None:
            bar.set_postfix_str(f"loss {loss_value:.3f} acc {point(step, seconds)['eval_accuracy']:.3f}")
        return set(stop_names) <= reached

    def read_loss(step: int) -> None:
        """Host sync: the mean loss since the last reading; raises Diverged when it is not finite."""
        nonlocal window, loss_value
        loss_value = float(loss_sum) / window
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
            scored = batch.scored  # (B, T)
            with metrics.autocast(device):
                h = features(batch.inputs)  # (B, T, D)
                logits = model.head(h[scored])  # (N, V)
            loss = F.cross_entropy(logits.float(), batch.targets[scored])
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
        if last_eval != out.steps:
            evaluate(out.steps)
    finally:
        if bar is not None:
            bar.close()
    out.curve = [points[s] for s in sorted(points)]
    return out
