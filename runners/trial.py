"""One trial: (task + params, model + size, train length, seed, learning rate, budget) -> its payload.

A `TrialConfig` says WHAT is measured; `run_trial(config, device, compile)` says WHERE and HOW: it builds
the model, measures its cost, trains and evaluates it, and hands what it measured to runners.rows, which
makes the trial's rows of the four results tables, returned as one JSON-ready payload:

    {"trial_id": ..., "config": {...}, "runs": [row per eval slice], "lags": [...], "curves": [...],
     "slice_curves": [row per eval slice per evaluation]}

Training data may be a mixture of `Segment`s (seq_len, task params, weight; one segment per step,
drawn in proportion to its weight) and evaluation is a list of named `EvalSlice`s (seq_len, task
params, n_sequences). A plain trial has one segment, (train_len, {}, 1), and slices at train_len and
its multiples. Params of segments and slices are merged over the trial's `task_params`.

Failures are results: an out-of-memory error gives status "oom", a non-finite loss "diverged", the
time cap "timeout" (the partly trained model is still evaluated), any other exception "error" with
its message. Failed trials still get one runs row per slice, NaN where a metric is unknown
(runners.rows.failed_trial for a trial that never ran or whose process died).

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
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from membench.checks import ConfigError
from membench.memtasks import get_task, task_class
from membench.models import build_model, model_class
from membench.models.pretrained import is_pretrained
from membench.runners import metrics
from membench.runners.faults import FaultBoundary, cost_value
from membench.runners.rows import failed_trial, git_commit, trial_payload
from membench.runners.trackers import Trackers, TrackerSettings, hparams
from membench.runners.train import Diverged, train

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
    train_length_range: tuple[int, ...] = ()  # (lo, hi): each step's length drawn from lo..hi (train_len = hi)
    near_chance: float = 0.0  # plateau: one whose scaled accuracy is below this is not convergence (0: off) ...
    second_lr: float = 0.0  # ... and a run that ends there is run again at this learning rate (0: none)
    shots: int = 0  # a pretrained: model's evaluation: solved examples of the task before each evaluated one
    save_model: bool = False  # write the finished model as a Hugging Face folder (models/pretrained.py)

    def __post_init__(self) -> None:
        if self.early_stop not in EARLY_STOPS:
            raise ConfigError(f"early_stop must be one of {', '.join(EARLY_STOPS)}, got {self.early_stop!r}")
        if self.budget not in BUDGETS:
            raise ConfigError(f"budget must be one of {', '.join(BUDGETS)}, got {self.budget!r}")
        if not 0 <= self.near_chance < 1 or self.second_lr < 0 or (self.second_lr and not self.near_chance):
            raise ConfigError(f"near_chance must be in [0, 1) and second_lr >= 0, a second_lr only with a "
                              f"near_chance above 0, got near_chance {self.near_chance}, second_lr {self.second_lr}")
        if not self.task_version:
            object.__setattr__(self, "task_version", task_class(self.task).version)
        if not self.model_version:
            object.__setattr__(self, "model_version", model_class(self.model).version)
        if not self.segments:
            object.__setattr__(self, "segments", (Segment(self.train_len),))
        object.__setattr__(self, "train_length_range", tuple(self.train_length_range))  # a list when read back
        if self.train_length_range:
            check_length_range(self.train_length_range, "train_length_range")
            if self.train_length_range[1] != self.train_len or len(self.segments) > 1:
                raise ConfigError(f"train_length_range {list(self.train_length_range)} needs train_len equal to "
                                  f"its upper end and no train_mixture (got train_len {self.train_len}, "
                                  f"{len(self.segments)} segments)")

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
        lengths = "L{}-{}".format(*self.train_length_range) if self.train_length_range else f"L{self.train_len}"
        return f"{self.task} {self.model} {lengths} seed{self.seed} lr{self.lr:g}"

    def trained_lengths(self) -> tuple[int, int]:
        """(shortest, longest) length trained on: the range's ends, the mixture's, or train_len twice.

            >>> base = dict(task="copy", task_params={}, model="lstm", model_params={}, d_model=8, n_layers=1,
            ...             seed=0, lr=1e-3, batch_size=4, steps=1, eval_slices=())
            >>> TrialConfig(**base, train_len=32).trained_lengths()
            (32, 32)
            >>> TrialConfig(**base, train_len=32, train_length_range=(8, 32)).trained_lengths()
            (8, 32)
        """
        if self.train_length_range:
            return self.train_length_range[0], self.train_length_range[1]
        lengths = [s.seq_len for s in self.segments]
        return min(lengths), max(lengths)

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
                 "min_steps": 0, "train_length_range": (), "near_chance": 0.0, "second_lr": 0.0,
                 "shots": 0, "save_model": False}


def check_length_range(value, where: str) -> tuple[int, int]:
    """A range of training lengths [lo, hi], two integers with 1 <= lo < hi; ConfigError otherwise.

        >>> check_length_range([8, 32], "train_length_range")
        (8, 32)
        >>> check_length_range([32, 8], "train_length_range")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        membench.checks.ConfigError: train_length_range must be [lo, hi] with lo < hi, got [32, 8]; ...
    """
    pair = list(value) if isinstance(value, (list, tuple)) else value
    if (not isinstance(pair, list) or len(pair) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in pair)):
        raise ConfigError(f"{where} must be two lengths [lo, hi], integers >= 1, got {value!r}")
    if pair[0] >= pair[1]:
        raise ConfigError(f"{where} must be [lo, hi] with lo < hi, got {pair}; write the shorter length first "
                          f"(one length: use lengths)")
    return pair[0], pair[1]


def run_trial(config: TrialConfig, device: str = "cpu", compile: str = "none", progress: bool = False,
              threads: int | None = None, trackers: TrackerSettings | None = None) -> dict:
    """Train and evaluate one trial on `device`; never raises for a failed trial (see the module doc).

    `threads`: torch's intra-op threads for a trial on the CPU (None: leave torch's setting alone).
    `trackers`: where its curves also go (runners.trackers), made here, in the process that trains it; one
    that fails is dropped and named in the payload's "tracker_problems", never the trial's failure.
    """
    device = torch.device(device)
    git_commit()  # read now, before training, not when the result is written
    model, cost, task_params, memory = None, None, config.task_params, metrics.PeakMemory(device)
    warnings: list[str] = []
    tracker = trackers.open() if trackers else Trackers({})
    tracker.start(config.trial_id, config.label(), hparams(config))
    with FaultBoundary() as fault, _cpu_threads(threads if device.type == "cpu" else None):
        task_params = get_task(config.task, **config.task_params).params()  # the task's defaults filled in
        model = config.build_model().to(device)
        cost = measure_cost(config, model, warnings)
        with memory:
            if is_pretrained(config.model):  # steps = 0: the model as it is, reading the task as text
                from membench.runners.pretrained_eval import evaluate_pretrained  # imports transformers

                outcome = evaluate_pretrained(model, config, device, cost)
            else:
                outcome = train(model, config, device, compile=compile, progress=progress, tracker=tracker)
        status = "timeout" if outcome.timed_out else "ok"
        if config.save_model:
            save_trial_model(config, model, warnings)
        payload = trial_payload(config, task_params, cost, model, outcome, status, "", memory.peak_mb, device)
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
        payload = trial_payload(config, task_params, cost, model, None, status, reason, math.nan, device)
        if status == "error":  # a bug, most likely: keep its traceback for the user (trial file, stderr)
            payload["traceback"] = fault.traceback
    del model
    with FaultBoundary() as cleanup:
        metrics.end_trial(device)  # success or failure: reset dynamo, release memory (the next trial starts clean)
    if cleanup.failed and not fault.failed:  # e.g. a sticky CUDA error: this trial's numbers are not to be trusted
        payload = failed_trial(config, "error", cleanup.reason, str(device), cleanup.traceback)
    tracker.finish(next((row["status"] for row in payload["runs"] if row["status"] != "ok"), "ok"))
    if tracker.problems:  # the sweep says them (once per tracker); not kept in the trial file
        payload["tracker_problems"] = tracker.problems
    if warnings:
        payload["warnings"] = warnings
    return payload  # after a sticky error the executor moves the rest of the sweep to a fresh process


SAVED_MODELS_ENV = "MEMBENCH_SAVED_MODELS"  # where save_model writes: <out>/models, set by runners.sweep.run_sweep
SAVED_MODELS_DIR = "models"


def save_trial_model(config: TrialConfig, model, warnings: list[str]) -> None:
    """save_model: the finished model as the folder $MEMBENCH_SAVED_MODELS/<trial_id>, which `pretrained:`
    loads and evaluates in plain mode (models/pretrained.py: save_as_pretrained); a warning when the trial runs
    outside a sweep (no folder to write into)."""
    root = os.environ.get(SAVED_MODELS_ENV)
    if not root:
        warnings.append(f"save_model: no folder to write into (${SAVED_MODELS_ENV} is unset outside membench run)")
        return
    from membench.memtasks.text import plain_vocabulary
    from membench.models.pretrained import save_as_pretrained

    task = get_task(config.task, **config.task_params)
    save_as_pretrained(model, plain_vocabulary(task), Path(root) / config.trial_id,
                       {"trial_id": config.trial_id, "task": config.task, "task_params": config.task_params,
                        "model": config.model, "train_len": config.train_len, "seed": config.seed})


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
