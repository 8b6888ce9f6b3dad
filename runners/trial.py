"""One trial: (task + params, model + size, train length, seed, learning rate, budget) -> result rows.

A `TrialConfig` says WHAT is measured; `run_trial(config, device, compile)` says WHERE and HOW, and
returns a JSON-ready payload with the trial's rows of the four results tables:

    {"trial_id": ..., "config": {...}, "runs": [row per eval slice], "lags": [...], "curves": [...],
     "slice_curves": [row per eval slice per evaluation]}

Training data may be a mixture of `Segment`s (seq_len, task params, weight; one segment per step,
drawn in proportion to its weight) and evaluation is a list of named `EvalSlice`s (seq_len, task
params, n_sequences). A plain trial has one segment, (train_len, {}, 1), and slices at train_len and
its multiples. Params of segments and slices are merged over the trial's `task_params`.

Failures are results: an out-of-memory error gives status "oom", a non-finite loss "diverged", the
time cap "timeout" (the partly trained model is still evaluated), any other exception "error" with
its message. Failed trials still get one runs row per slice, NaN where a metric is unknown.

The fault boundary (runners.faults) is the whole trial: building the model, counting its parameters,
FLOPs and state (`measure_cost`, before training), training, evaluating each slice (a slice that raises
fails alone: runners.metrics.evaluate) and making the rows. Whatever any of it raises, user code
included, becomes the trial's "error" rows with a one-line reason and the traceback in the payload
("traceback"). A cost that is not a finite non-negative number is left blank, with a line in the
payload's "warnings"; a state size of None means unknown and is blank without one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import torch

from membench.checks import ConfigError
from membench.memtasks import get_task, task_class
from membench.models import build_model, model_class
from membench.runners import metrics
from membench.runners.faults import FaultBoundary, cost_value
from membench.runners.precision import precision_name
from membench.runners.tables import CURVES_COLUMNS, LAGS_COLUMNS, RUNS_COLUMNS
from membench.runners.train import Diverged, TrainOutcome, train

STATUSES = ("ok", "oom", "diverged", "timeout", "error")
EARLY_STOPS = ("train_len", "all_slices")  # which slices must reach the threshold to stop training early
BUDGETS = ("fixed", "plateau")  # train to the step budget, or also stop when the accuracy stops improving


@dataclass(frozen=True)
class Segment:
    """One component of the training mixture: sequences of `seq_len` with these task params."""

    seq_len: int
    params: dict = field(default_factory=dict)
    weight: float = 1.0

    def __hash__(self) -> int:
        return hash(json.dumps(dataclasses.asdict(self), sort_keys=True))


@dataclass(frozen=True)
class EvalSlice:
    """A named evaluation set: `n_sequences` held-out sequences of `seq_len` with these task params."""

    name: str
    seq_len: int
    n_sequences: int
    params: dict = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash(json.dumps(dataclasses.asdict(self), sort_keys=True))


@dataclass(frozen=True)
class TrialConfig:
    """Everything that defines a trial's result. `trial_id` hashes its canonical JSON (task version included).

    Example: TrialConfig("copy", {}, "lstm", {}, d_model=32, n_layers=2, train_len=64, seed=0, lr=3e-3,
    batch_size=32, steps=500, eval_slices=(EvalSlice("L64", 64, 256), EvalSlice("L128", 128, 256)))
    """

    task: str
    task_params: dict
    model: str
    model_params: dict
    d_model: int
    n_layers: int
    train_len: int
    seed: int
    lr: float
    batch_size: int
    steps: int  # the budget: at most this many optimizer steps ...
    eval_slices: tuple[EvalSlice, ...]
    time_cap: float = 600.0  # ... and at most this many wall seconds (timeout after)
    threshold: float = 0.99  # early stop when the `early_stop` slices reach this eval accuracy
    eval_every: int = 100
    log_every: int = 25
    warmup: float = 0.1  # fraction of `steps` of linear learning-rate warm-up
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    segments: tuple[Segment, ...] = ()  # empty: one segment (train_len, {}, 1.0)
    task_version: int = 0  # 0: looked up in the task registry
    early_stop: str = "train_len"  # the slices at the train length, or "all_slices"
    model_version: int = 0  # 0: looked up in the model registry
    budget: str = "fixed"  # "fixed": train to `steps`; "plateau": also stop once the accuracy stops improving
    patience: int = 5  # plateau: evaluations without an improvement of at least `min_delta` ...
    min_delta: float = 0.01  # ... of the early-stop slices' mean accuracy (also what "still improving" means)
    min_steps: int = 0  # plateau: no plateau stop before this many steps (a loss plateau can precede learning)

    def __post_init__(self) -> None:
        if self.early_stop not in EARLY_STOPS:
            raise ConfigError(f"early_stop must be one of {', '.join(EARLY_STOPS)}, got {self.early_stop!r}")
        if self.budget not in BUDGETS:
            raise ConfigError(f"budget must be one of {', '.join(BUDGETS)}, got {self.budget!r}")
        if not self.task_version:
            object.__setattr__(self, "task_version", task_class(self.task).version)
        if not self.model_version:
            object.__setattr__(self, "model_version", model_class(self.model).version)
        if not self.segments:
            object.__setattr__(self, "segments", (Segment(self.train_len),))

    def __hash__(self) -> int:
        return hash(self.trial_id)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrialConfig":
        data = dict(data)
        data["segments"] = tuple(Segment(**s) for s in data.get("segments", ()))
        data["eval_slices"] = tuple(EvalSlice(**s) for s in data["eval_slices"])
        return cls(**data)

    @functools.cached_property
    def trial_id(self) -> str:
        """12 hex digits of the SHA-1 of the canonical JSON (sorted keys) of every field.

        Fields added later (`_LATER_FIELDS`) enter the JSON only when they differ from their default, so
        the ids of earlier trials, and the results directories that hold them, stay valid.
        """
        fields = {k: v for k, v in self.to_dict().items() if k not in _LATER_FIELDS or v != _LATER_FIELDS[k]}
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def label(self) -> str:
        return f"{self.task} {self.model} L{self.train_len} seed{self.seed} lr{self.lr:g}"

    # --- the tasks it draws from -------------------------------------------------------
    def segment_task(self, segment: Segment):
        return get_task(self.task, **{**self.task_params, **segment.params})

    def slice_task(self, eval_slice: EvalSlice):
        return get_task(self.task, **{**self.task_params, **eval_slice.params})

    def vocab_size(self) -> int:
        """The largest vocabulary of any segment or slice (one head serves them all)."""
        tasks = [self.segment_task(s) for s in self.segments] + [self.slice_task(s) for s in self.eval_slices]
        return max(t.vocab_size for t in tasks)

    def build_model(self):
        """The model, initialised from `seed` (the same seed gives the same weights)."""
        torch.manual_seed(self.seed)
        return build_model(self.model, self.vocab_size(), d_model=self.d_model, n_layers=self.n_layers,
                           **self.model_params)


# field -> default: hashed only when set otherwise, so the ids of trials made before the field existed hold
_LATER_FIELDS = {"early_stop": "train_len", "model_version": 1, "budget": "fixed", "patience": 5, "min_delta": 0.01,
                 "min_steps": 0}


CODE_PATHS = ("membench", "memtasks", "models", "runners", "pyproject.toml")  # what a result depends on


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """Short commit of the checkout this code runs from, '+dirty' when its code (CODE_PATHS) has
    uncommitted changes, or '' outside a git checkout. Read once per process, when its first trial
    starts, so commits made while a sweep runs do not relabel the code it loaded."""
    return describe_checkout(Path(__file__).resolve().parent.parent)


def describe_checkout(root: Path) -> str:
    """'<short commit>[+dirty]' of the git checkout at `root` (see git_commit), '' if it is none."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root,
                              capture_output=True, text=True, timeout=5)
        changes = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
                                 cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    if head.returncode != 0:
        return ""
    return head.stdout.strip() + ("+dirty" if changes.returncode == 0 and changes.stdout.strip() else "")


def run_trial(config: TrialConfig, device: str = "cpu", compile: str = "none", progress: bool = False,
              threads: int | None = None) -> dict:
    """Train and evaluate one trial on `device`; never raises for a failed trial (see the module doc).

    `threads`: torch's intra-op threads for a trial on the CPU (None: leave torch's setting alone).
    """
    device = torch.device(device)
    git_commit()  # read now, before training, not when the result is written
    model, cost, task_params, memory = None, None, config.task_params, metrics.PeakMemory(device)
    warnings: list[str] = []
    with FaultBoundary() as fault, _cpu_threads(threads if device.type == "cpu" else None):
        task_params = get_task(config.task, **config.task_params).params()  # the task's defaults filled in
        model = config.build_model().to(device)
        cost = measure_cost(config, model, warnings)
        with memory:
            outcome = train(model, config, device, compile=compile, progress=progress)
        status = "timeout" if outcome.timed_out else "ok"
        payload = _payload(config, task_params, cost, model, outcome, status, "", memory.peak_mb, device)
        if slice_traces := [f"slice {name}: {r.traceback}" for name, r in outcome.slices.items() if r.traceback]:
            payload["traceback"] = "".join(slice_traces)  # those slices' rows have status "error"
        del outcome
    # after the boundary, so the traceback's tensors (and the optimizer, the batches) are already freed
    if fault.failed:
        if model is not None:
            model.zero_grad(set_to_none=True)  # gradients of a failed step
        if issubclass(fault.exception_type, Diverged):
            status, reason = "diverged", fault.message
        else:
            status, reason = ("oom" if fault.oom else "error"), fault.reason
        payload = _payload(config, task_params, cost, model, None, status, reason, math.nan, device)
        if status == "error":  # a bug, most likely: keep its traceback for the user (trial file, stderr)
            payload["traceback"] = fault.traceback
    del model
    with FaultBoundary() as cleanup:
        metrics.end_trial(device)  # success or failure: reset dynamo, release memory (the next trial starts clean)
    if cleanup.failed and not fault.failed:  # e.g. a sticky CUDA error: this trial's numbers are not to be trusted
        payload = failed_trial(config, "error", cleanup.reason, str(device), cleanup.traceback)
    if warnings:
        payload["warnings"] = warnings
    return payload  # after a sticky error the executor moves the rest of the sweep to a fresh process


@dataclass
class TrialCost:
    """What a trial's model costs, measured before training (NaN: unknown or invalid, blank in the tables).

    Per training segment: forward FLOPs at (batch_size, seq_len), and their attention and memory parts; per
    eval slice: the state size at its length."""

    params: float
    flops: list[float]
    attention_flops: list[float]
    memory_flops: list[float]
    state_size: dict[str, float]


def measure_cost(config: TrialConfig, model, warnings: list[str]) -> TrialCost:
    """Ask the model its costs once, each answer checked (runners.faults.cost_value); an exception propagates
    (the trial's error). Before training, so that a cost method that raises wastes no training."""
    def each(method: str, *args) -> float:
        return cost_value(f"{method}({', '.join(map(str, args))})", getattr(model, method), args, warnings)

    lengths = [s.seq_len for s in config.segments]
    return TrialCost(
        params=cost_value("num_params()", model.num_params, (), warnings),
        flops=[each("flops", config.batch_size, n) for n in lengths],
        attention_flops=[each("attention_flops", config.batch_size, n) for n in lengths],
        memory_flops=[each("memory_flops", config.batch_size, n) for n in lengths],
        state_size={s.name: cost_value(f"state_size({s.seq_len})", model.state_size, (s.seq_len,), warnings,
                                       unknown_ok=True) for s in config.eval_slices},
    )


@contextlib.contextmanager
def _cpu_threads(threads: int | None):
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def failed_trial(config: TrialConfig, status: str, error: BaseException | str, device: str,
                 trace: str = "") -> dict:
    """The payload of a trial that failed before it had results, or whose process died before it could report:
    rows with NaN metrics, made from the config alone (nothing here calls user code that could raise again)."""
    reason = error if isinstance(error, str) else metrics.short_error(error)
    payload = _payload(config, config.task_params, None, None, None, status, reason, math.nan, torch.device(device))
    return {**payload, "traceback": trace} if trace else payload


def _payload(config: TrialConfig, task_params: dict, cost: TrialCost | None, model, outcome: TrainOutcome | None,
             status: str, error: str, peak_mb: float, device: torch.device) -> dict:
    return {
        "trial_id": config.trial_id,
        "config": config.to_dict(),
        "runs": _runs_rows(config, task_params, cost, model, outcome, status, error, peak_mb, device),
        "lags": _lag_rows(config, outcome),
        "curves": _curve_rows(config, outcome),
        "slice_curves": _slice_curve_rows(config, outcome),
    }


def _runs_rows(config: TrialConfig, task_params: dict, cost: TrialCost | None, model, outcome: TrainOutcome | None,
               status: str, error: str, peak_mb: float, device: torch.device) -> list[dict]:
    nan = math.nan
    if cost is not None:  # analytic cost, known even when training failed
        # the output head runs only on the gathered scored rows of each segment, not on all B*T positions
        head_rows = outcome.head_rows if outcome is not None and outcome.head_rows else [None] * len(config.segments)
        step_flops = [
            3 * (flops - model.head_flops(config.batch_size * s.seq_len)
                 + model.head_flops(rows if rows is not None else config.batch_size * s.seq_len))
            for s, flops, rows in zip(config.segments, cost.flops, head_rows)
        ]
        # per step: the mean over the steps taken, or over the mixture's weights before any step
        counts = outcome.segment_steps if outcome is not None and outcome.steps else [s.weight for s in config.segments]

        def mean_per_step(per_segment: list[float]) -> float:
            return sum(c * 3 * f for c, f in zip(counts, per_segment)) / sum(counts)

        mean_flops = sum(c * f for c, f in zip(counts, step_flops)) / sum(counts)
        attention_share = mean_per_step(cost.attention_flops) / mean_flops if mean_flops else nan
        memory_share = mean_per_step(cost.memory_flops) / mean_flops if mean_flops else nan
        params = cost.params
    else:
        mean_flops = attention_share = memory_share = params = nan
    common = {
        "trial_id": config.trial_id, "task": config.task, "task_version": config.task_version,
        "task_params": json.dumps(task_params, sort_keys=True, default=repr),
        "model": config.model, "model_version": config.model_version,
        "model_params": json.dumps(config.model_params, sort_keys=True), "d_model": config.d_model,
        "n_layers": config.n_layers, "params": params,
        "train_len": config.train_len, "seed": config.seed, "lr": config.lr, "batch_size": config.batch_size,
    }
    timing = dict.fromkeys(
        ["steps", "train_seconds", "compile_seconds", "ms_per_step", "tokens_per_second", "tflops_per_s",
         "time_to_accuracy_seconds", "time_to_accuracy_steps", "time_to_accuracy_tokens"], nan)
    if outcome is not None and outcome.steps > 0:
        seconds = outcome.train_seconds
        timing.update(
            steps=outcome.steps, train_seconds=seconds, compile_seconds=outcome.compile_seconds,
            ms_per_step=1000 * seconds / outcome.steps,
            tokens_per_second=outcome.tokens / seconds,
            tflops_per_s=mean_flops * outcome.steps / seconds / 1e12,
            time_to_accuracy_seconds=outcome.time_to_accuracy.get("seconds", nan),
            time_to_accuracy_steps=outcome.time_to_accuracy.get("steps", nan),
            time_to_accuracy_tokens=outcome.time_to_accuracy.get("tokens", nan),
        )
    elif outcome is not None:
        timing["steps"] = 0
    tail = {"device": metrics.device_name(device), "precision": _precision(device), "git_commit": git_commit(),
            "torch_version": torch.__version__}
    rows = []
    for s in config.eval_slices:
        result = outcome.slices.get(s.name) if outcome is not None else None
        row_status, row_error = status, error
        if result is not None and result.status != "ok":  # this slice alone failed (e.g. oom at 4x length)
            row_status, row_error = result.status, result.error
        scored = result is not None and result.status == "ok"
        row = {
            **common, **timing, **tail, "eval_len": s.seq_len, "slice": s.name,
            "is_train_len": s.seq_len == config.train_len,
            "accuracy": result.accuracy if scored else nan,
            "exact_match": result.exact_match if scored else nan,
            "loss": result.loss if scored else nan,
            "scored": result.scored if scored else nan,
            "peak_memory_mb": peak_mb, "flops_per_step": mean_flops, "attention_flops_share": attention_share,
            "memory_flops_share": memory_share,
            "state_size": cost.state_size[s.name] if cost is not None else nan,
            "status": row_status, "error": row_error,
            "stop_reason": outcome.stop_reason if outcome is not None else "",
            "under_trained": outcome.under_trained if outcome is not None else False,
        }
        rows.append({c: row[c] for c in RUNS_COLUMNS})
    return rows


def _precision(device: torch.device) -> str:
    """The `precision` of the trial's rows; '' when this process cannot see the device (a dead worker's GPU)."""
    if device.type == "cuda" and not torch.cuda.is_available():
        return ""
    return precision_name(device)


def _lag_rows(config: TrialConfig, outcome: TrainOutcome | None) -> list[dict]:
    """Accuracy by lag bucket at each eval length (slices of the same length are pooled)."""
    if outcome is None:
        return []
    pooled: dict[int, dict[int, list[int]]] = {}  # eval_len -> bucket -> [correct, count]
    for s in config.eval_slices:
        result = outcome.slices.get(s.name)
        if result is None or result.status != "ok":
            continue
        for bucket, (correct, count) in result.lags.items():
            cell = pooled.setdefault(s.seq_len, {}).setdefault(bucket, [0, 0])
            cell[0] += correct
            cell[1] += count
    rows = [
        {"trial_id": config.trial_id, "task": config.task, "model": config.model, "train_len": config.train_len,
         "eval_len": eval_len, "seed": config.seed, "lag_bucket": bucket, "accuracy": correct / count,
         "count": count}
        for eval_len, buckets in sorted(pooled.items())
        for bucket, (correct, count) in sorted(buckets.items())
    ]
    return [{c: row[c] for c in LAGS_COLUMNS} for row in rows]


def _slice_curve_rows(config: TrialConfig, outcome: TrainOutcome | None) -> list[dict]:
    if outcome is None:
        return []
    lengths = {s.name: s.seq_len for s in config.eval_slices}
    return [{"trial_id": config.trial_id, "task": config.task, "model": config.model, "d_model": config.d_model,
             "train_len": config.train_len, "seed": config.seed, "slice": point["slice"],
             "eval_len": lengths[point["slice"]], "step": point["step"], "seconds": point["seconds"],
             "tokens": point["tokens"], "accuracy": point["accuracy"]}
            for point in outcome.slice_curve]


def _curve_rows(config: TrialConfig, outcome: TrainOutcome | None) -> list[dict]:
    if outcome is None:
        return []
    rows = [
        {"trial_id": config.trial_id, "task": config.task, "model": config.model, "train_len": config.train_len,
         "seed": config.seed, **point}
        for point in outcome.curve
    ]
    return [{c: row[c] for c in CURVES_COLUMNS} for row in rows]
