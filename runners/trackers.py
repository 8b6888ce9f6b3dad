"""Training curves to the experiment trackers people use: TensorBoard, Weights & Biases, MLflow (`--log`).

The tables stay the source of truth; a tracker is a copy of each trial's curves for reading in the tool one
already uses. Off by default. `--log tensorboard,wandb` (or `--log` repeated) asks for one or more:

    tensorboard  event files in OUT/tensorboard/<trial_id>/, one run per trial, its hyper-parameters attached
                 (the HParams dashboard); `tensorboard --logdir OUT/tensorboard`
    wandb        one Weights & Biases run per trial (project membench, group: the sweep's name), files in
                 OUT/wandb/; offline unless logged in (WANDB_API_KEY, or `wandb login`), or as WANDB_MODE says
    mlflow       one MLflow run per trial in a local file store OUT/mlruns (experiment: the sweep's name);
                 `mlflow ui --backend-store-uri OUT/mlruns`

What each trial logs, at the steps the tables record them (runners.train): `train/loss` and `train/lr` every
`log_every` steps, `eval/accuracy` (the mean of the slices at the train length, the curves table's
eval_accuracy) and `eval/<slice>` every `eval_every` steps; non-finite values are left out.

    tracker = Trackers({"tensorboard": TensorBoardTracker("out", "smoke")})
    tracker.start(config.trial_id, config.label(), hparams(config))
    tracker.log(25, {"train/loss": 1.73, "train/lr": 3e-3})
    tracker.finish("ok")

A tracker is created in the process that trains the trial (a worker of the executor), from the picklable
`TrackerSettings`. A requested tracker whose package is not installed stops the command before anything runs
(`check_installed`: exit 2, naming the extra to install). One that fails later, to import or to start or to
log, is dropped for the rest of that trial and leaves one line in `Trackers.problems`; the trial trains and
writes its rows as if it had not been asked for, and the sweep says so once per tracker.
"""

from __future__ import annotations

import importlib.util
import json
import math
import netrc
import os
import time
from dataclasses import dataclass
from pathlib import Path

from membench.registry import unknown_name_message
from membench.runners.errors import UsageError


class Tracker:
    """Where one trial's curves go; this one drops them (the default: nothing asked for).

    `start(trial_id, name, hparams)` once before the first step, `log(step, metrics)` at each logged step
    (steps never decrease; one step may be logged twice, the loss then the evaluation), `finish(status)` once
    at the end, with the trial's status (ok, timeout, oom, diverged, error).
    """

    module = ""  # the package it imports, checked before a sweep starts (see check_installed)

    @classmethod
    def prepare(cls, out_dir: str, sweep: str) -> None:
        """Once per sweep, in the sweep's process, before any trial: what the workers must not race to make."""

    def start(self, trial_id: str, name: str, hparams: dict[str, str | int | float | bool]) -> None:
        pass

    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def finish(self, status: str) -> None:
        pass


NO_TRACKER = Tracker()


class TensorBoardTracker(Tracker):
    """Event files in OUT/tensorboard/<trial_id>/ (torch.utils.tensorboard): a scalar per metric, and the
    hyper-parameters as an HParams session whose metric is eval/accuracy."""

    module = "tensorboard"

    def __init__(self, out_dir: str, sweep: str) -> None:
        self.root = Path(out_dir) / "tensorboard"
        self.writer, self.session_end = None, None

    def start(self, trial_id, name, hparams) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        self.writer = SummaryWriter(str(self.root / trial_id))
        experiment, session_start, self.session_end = hparams_summaries(hparams, {"eval/accuracy": math.nan})
        for summary in (experiment, session_start):
            self.writer.file_writer.add_summary(summary)

    def log(self, step, metrics) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def finish(self, status) -> None:
        self.writer.file_writer.add_summary(self.session_end)
        self.writer.close()


def wandb_mode(environ=os.environ) -> str:
    """online or offline: as WANDB_MODE says when it is set, else online only when logged in (WANDB_API_KEY,
    or a login in ~/.netrc or $NETRC for the W&B host), so a sweep never waits on a login prompt.

        >>> wandb_mode({"WANDB_MODE": "disabled"}), wandb_mode({"WANDB_API_KEY": "k"})
        ('disabled', 'online')
    """
    if environ.get("WANDB_MODE"):
        return environ["WANDB_MODE"]
    if environ.get("WANDB_API_KEY"):
        return "online"
    host = environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0].split(":")[0]
    try:
        logged_in = netrc.netrc(environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):  # no netrc file, or one that cannot be read
        logged_in = False
    return "online" if logged_in else "offline"


class WandbTracker(Tracker):
    """One W&B run per trial in project membench, grouped by sweep, files under OUT/wandb/; silent (nothing
    of wandb's in the sweep's log), its console capture off."""

    module = "wandb"

    def __init__(self, out_dir: str, sweep: str) -> None:
        self.out_dir, self.sweep, self.run = out_dir, sweep, None

    def start(self, trial_id, name, hparams) -> None:
        import wandb

        self.run = wandb.init(project="membench", group=self.sweep, name=f"{name} {trial_id}", dir=self.out_dir,
                              config=hparams, tags=[trial_id], mode=wandb_mode(), reinit="create_new",
                              settings=wandb.Settings(silent=True, console="off"))

    def log(self, step, metrics) -> None:
        self.run.log(metrics, step=step)

    def finish(self, status) -> None:
        self.run.finish(exit_code=0 if status in ("ok", "timeout") else 1)


class MlflowTracker(Tracker):
    """One MLflow run per trial in the file store OUT/mlruns, in an experiment named after the sweep; the
    hyper-parameters as params, the trial id as a tag. MLflow keeps its file store in maintenance mode and
    refuses it unless MLFLOW_ALLOW_FILE_STORE is true: this sets it (in the worker) when it is unset. The
    experiment is made once, by the sweep's process (`prepare`): the file store does not stop two workers
    from each making one of the same name."""

    module = "mlflow"

    def __init__(self, out_dir: str, sweep: str) -> None:
        self.out_dir, self.sweep, self.client, self.run_id = out_dir, sweep, None, None

    @classmethod
    def prepare(cls, out_dir: str, sweep: str) -> None:
        client = cls._client(out_dir)
        if client.get_experiment_by_name(sweep) is None:
            client.create_experiment(sweep)

    @staticmethod
    def _client(out_dir: str):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=Path(out_dir, "mlruns").resolve().as_uri())

    def start(self, trial_id, name, hparams) -> None:
        from mlflow.entities import Param

        self.client = self._client(self.out_dir)
        experiment = self.client.get_experiment_by_name(self.sweep)
        if experiment is None:  # not prepared (a trial run on its own): made here
            experiment = self.client.get_experiment(self.client.create_experiment(self.sweep))
        run = self.client.create_run(experiment.experiment_id, run_name=name, tags={"trial_id": trial_id})
        self.run_id = run.info.run_id
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in hparams.items()])

    def log(self, step, metrics) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def finish(self, status) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if status in ("ok", "timeout") else "FAILED")


TRACKERS: dict[str, type[Tracker]] = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker,
                                      "mlflow": MlflowTracker}


def tracker_names(values: list[str] | None) -> tuple[str, ...]:
    """The trackers of `--log` flags (each one name or a comma list), in order, each once; UsageError for an
    unknown name.

        >>> tracker_names(["tensorboard,mlflow", "tensorboard"])
        ('tensorboard', 'mlflow')
    """
    names = [n.strip().lower() for value in values or () for n in value.split(",") if n.strip()]
    for name in names:
        if name not in TRACKERS:
            raise UsageError(f"--log: {unknown_name_message('tracker', name, list(TRACKERS))}")
    return tuple(dict.fromkeys(names))


def check_installed(names: tuple[str, ...]) -> None:
    """UsageError, before a sweep starts, when a requested tracker's package is not installed."""
    for name in names:
        module = TRACKERS[name].module
        if module and importlib.util.find_spec(module) is None:
            raise UsageError(f"--log {name} needs the {module} package, which is not installed: "
                             f"pip install 'membench[{name}]' (or leave out --log {name})")


def hparams(config) -> dict[str, str | int | float | bool]:
    """A trial's hyper-parameters as trackers take them: its config's scalar fields, task_params and
    model_params one level deep ("task_params.content_vocab"), anything else as JSON, and its trial id.

        >>> from membench.runners.trial import EvalSlice, TrialConfig
        >>> config = TrialConfig("copy", {"content_vocab": 4}, "lstm", {}, d_model=16, n_layers=1, train_len=8,
        ...                      seed=0, lr=3e-3, batch_size=8, steps=10, eval_slices=(EvalSlice("L8", 8, 16),))
        >>> h = hparams(config)
        >>> h["model"], h["lr"], h["task_params.content_vocab"], h["eval_slices"]
        ('lstm', 0.003, 4, '[{"n_sequences": 16, "name": "L8", "params": {}, "seq_len": 8}]')
    """
    flat: dict[str, str | int | float | bool] = {"trial_id": config.trial_id}
    for key, value in config.to_dict().items():
        items = ({f"{key}.{k}": v for k, v in value.items()} if key in ("task_params", "model_params")
                 else {key: value})
        for name, v in items.items():
            flat[name] = v if isinstance(v, (str, int, float, bool)) else json.dumps(v, sort_keys=True)
    return flat


class Trackers(Tracker):
    """The trackers of one trial, each call guarded: one that raises is dropped for the rest of the trial,
    with one line in `problems` (tracker name -> what failed), and the others go on. Non-finite metrics
    (a slice that failed) are left out.

        >>> class Broken(Tracker):
        ...     def start(self, trial_id, name, hparams):
        ...         raise RuntimeError("no server")
        >>> group = Trackers({"broken": Broken()})
        >>> group.start("abc", "copy lstm", {}); group.log(1, {"train/loss": 0.5}); group.finish("ok")
        >>> group.problems
        {'broken': 'RuntimeError: no server (in start)'}
    """

    def __init__(self, trackers: dict[str, Tracker], problems: dict[str, str] | None = None) -> None:
        self.live, self.problems = dict(trackers), dict(problems or {})

    def start(self, trial_id, name, hparams) -> None:
        self._each("start", trial_id, name, hparams)

    def log(self, step, metrics) -> None:
        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
        if finite:
            self._each("log", step, finite)

    def finish(self, status) -> None:
        self._each("finish", status)

    def _each(self, method: str, *args) -> None:
        for name, tracker in list(self.live.items()):
            try:
                getattr(tracker, method)(*args)
            except Exception as err:  # a tracker's failure is never the trial's: the tables hold its results
                del self.live[name]
                self.problems[name] = f"{type(err).__name__}: {' '.join(str(err).split())} (in {method})"


@dataclass(frozen=True)
class TrackerSettings:
    """What a worker needs to make a trial's trackers: their names, the results directory, the sweep's name."""

    names: tuple[str, ...]
    out_dir: str
    sweep: str

    def prepare(self) -> dict[str, str]:
        """Each tracker's once-per-sweep setup (Tracker.prepare), in the sweep's process; the problems of those
        that failed (tracker name -> what failed), for the sweep to say: their trials still try them."""
        problems = {}
        for name in self.names:
            try:
                TRACKERS[name].prepare(self.out_dir, self.sweep)
            except Exception as err:
                problems[name] = f"{type(err).__name__}: {' '.join(str(err).split())} (in prepare)"
        return problems

    def open(self) -> Trackers:
        """A fresh tracker of each name (one whose constructor raises is a problem, not an error)."""
        made, problems = {}, {}
        for name in self.names:
            try:
                made[name] = TRACKERS[name](self.out_dir, self.sweep)
            except Exception as err:
                problems[name] = f"{type(err).__name__}: {err} (in setup)"
        return Trackers(made, problems)
