"""--log: each trial's curves reach TensorBoard, W&B (offline) and MLflow, read back with each tool's own reader;
a tracker that fails is one warning and never a lost trial; a missing package stops the command before anything
runs. The trackers' tests skip when their package is not installed (the tensorboard, wandb, mlflow extras)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pandas as pd
import pytest

from membench.runners import trackers
from membench.runners.errors import UsageError
from membench.runners.trackers import Tracker, Trackers, tracker_names, wandb_mode
from membench.runners.train import lr_at
from tests.helpers import run_cli, tiny_spec, undo_plugin_side_effects  # noqa: F401 (autouse)

INSTALLED = [name for name, cls in trackers.TRACKERS.items()
             if __import__("importlib").util.find_spec(cls.module) is not None]
TWO_TRIALS = {"models": ["mlp"], "seeds": [0, 1], "steps": 8, "eval_every": 4, "log_every": 2}


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One two-trial sweep logged to every installed tracker (W&B offline: no login in a bare environment):
    (results directory, curves table, stderr)."""
    if not INSTALLED:
        pytest.skip("no tracker package installed (pip install 'membench[tensorboard,wandb,mlflow]')")
    root = tmp_path_factory.mktemp("logged")
    spec = tiny_spec(root, {"copy": {"params": {"content_vocab": 4}}}, **TWO_TRIALS)
    with pytest.MonkeyPatch.context() as env:
        for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
            env.delenv(var, raising=False)
        env.setenv("NETRC", str(root / "no-netrc"))  # never a login of the machine's user
        for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):  # nothing of it in the user's home
            env.setenv(var, str(root / var.lower()))
        env.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # what the mlflow tracker sets is undone after
        code, stdout, err = _run_cli_uncaptured("run", "--spec", spec, "--out", str(root / "out"), "--quiet",
                                                "--log", ",".join(INSTALLED))
    assert code == 0, err
    curves = pd.read_csv(root / "out" / "curves.csv")
    assert curves["trial_id"].nunique() == 2
    return root / "out", curves, err


def _run_cli_uncaptured(*argv) -> tuple[int, str, str]:
    import contextlib
    import io

    from membench.runners.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _losses(curves: pd.DataFrame, trial_id: str) -> dict[int, float]:
    rows = curves[(curves["trial_id"] == trial_id) & curves["train_loss"].notna()]
    return dict(zip(rows["step"].astype(int), rows["train_loss"]))


def test_tensorboard_holds_one_run_per_trial_with_its_loss_per_step_and_hparams(logged):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, curves, _ = logged
    runs = sorted(p.name for p in (out / "tensorboard").iterdir())
    assert runs == sorted(curves["trial_id"].unique())
    for trial_id in runs:
        events = EventAccumulator(str(out / "tensorboard" / trial_id))
        events.Reload()
        loss = {e.step: e.value for e in events.Scalars("train/loss")}
        assert loss.keys() == _losses(curves, trial_id).keys() == {2, 4, 6, 8}
        for step, value in _losses(curves, trial_id).items():
            assert loss[step] == pytest.approx(value, rel=1e-6)
        assert {e.step for e in events.Scalars("eval/accuracy")} == {4, 8}
        config = json.loads((out / "trials" / f"{trial_id}.json").read_text())["config"]
        lr = {e.step: e.value for e in events.Scalars("train/lr")}  # the rate of the step just taken
        assert lr == pytest.approx({s: lr_at(s - 1, config["steps"], config["lr"], config["warmup"]) for s in loss})
        assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def test_mlflow_store_holds_one_run_per_trial_with_params_and_metric_history(logged):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    out, curves, _ = logged
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("spec")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["trial_id"] for r in runs) == sorted(curves["trial_id"].unique())
    for run in runs:
        trial_id = run.data.tags["trial_id"]
        assert run.info.status == "FINISHED"
        assert run.data.params["model"] == "mlp" and run.data.params["trial_id"] == trial_id
        assert run.data.params["seed"] in ("0", "1")
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/loss")}
        assert history == pytest.approx(_losses(curves, trial_id), rel=1e-6)


def test_wandb_offline_run_directories_hold_the_logged_history(logged):
    pytest.importorskip("wandb")
    from wandb.proto import wandb_internal_pb2

    out, curves, _ = logged
    files = sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2
    by_trial = {}
    for file in files:
        records = [wandb_internal_pb2.Record.FromString(data) for data in _wandb_records(file.read_bytes())]
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        values = {item.key: json.loads(item.value_json) for item in run.config.update}
        trial_id = values["trial_id"]
        history = {}
        for record in records:
            if record.WhichOneof("record_type") == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)  # train/loss: nested
                       for item in record.history.item}
                if "train/loss" in row:
                    history[row["_step"]] = row["train/loss"]
        by_trial[trial_id] = history
    assert by_trial.keys() == set(curves["trial_id"].unique())
    for trial_id, history in by_trial.items():
        assert history == pytest.approx(_losses(curves, trial_id), rel=1e-6)


def _wandb_records(data: bytes) -> list[bytes]:
    """The records of a .wandb file: a 7-byte header (":W&B", magic, version), then LevelDB's log format:
    32 KiB blocks of chunks, each (crc32 4 bytes, length 2, type 1: full, first, middle, last) + payload."""
    assert data[:4] == b":W&B"
    records, pending, at, block = [], b"", 7, 32768
    while at + 7 <= len(data):
        if block - at % block < 7:  # a block's tail too short for a header is padding
            at += block - at % block
            continue
        _, length, kind = struct.unpack("<IHB", data[at:at + 7])
        chunk, at = data[at + 7:at + 7 + length], at + 7 + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            records.append(pending)
    return records


def test_wandb_is_offline_without_a_login(tmp_path):
    assert wandb_mode({"NETRC": str(tmp_path / "none")}) == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password secret\n")
    assert wandb_mode({"NETRC": str(tmp_path / "netrc")}) == "online"
    assert wandb_mode({"NETRC": str(tmp_path / "netrc"), "WANDB_MODE": "offline"}) == "offline"


class Failing(Tracker):
    """A tracker that raises in one of its stages (`stage`), and counts the calls that reach it."""

    module = "json"  # installed everywhere
    stage = "log"
    calls: list[str] = []

    def __init__(self, out_dir, sweep):
        self._maybe_fail("__init__")

    @classmethod
    def prepare(cls, out_dir, sweep):
        if cls.stage == "prepare":
            raise OSError("store unreachable")

    def start(self, trial_id, name, hparams):
        self._maybe_fail("start")

    def log(self, step, metrics):
        self._maybe_fail("log")

    def finish(self, status):
        self._maybe_fail("finish")

    def _maybe_fail(self, stage):
        Failing.calls.append(stage)
        if stage == self.stage:
            raise RuntimeError(f"tracker broke in {stage}")


@pytest.mark.parametrize("stage", ["__init__", "prepare", "start", "log", "finish"])
def test_a_tracker_that_raises_is_one_warning_and_every_trial_writes_its_rows(tmp_path, capsys, monkeypatch, stage):
    monkeypatch.setitem(trackers.TRACKERS, "failing", Failing)
    monkeypatch.setattr(Failing, "stage", stage)
    monkeypatch.setattr(Failing, "calls", [])
    spec = tiny_spec(tmp_path, {"copy": {"params": {"content_vocab": 4}}}, models=["mlp"], seeds=[0, 1], steps=4,
                     eval_every=4, log_every=2)
    code, stdout, err = run_cli(capsys, "run", "--spec", spec, "--out", str(tmp_path / "out"), "--log", "failing")
    assert code == 0, err
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert runs["trial_id"].nunique() == 2 and set(runs["status"]) == {"ok"}
    warnings = [line for line in err.splitlines() if "--log failing" in line]
    assert len(warnings) == 1, err
    assert ("store unreachable" if stage == "prepare" else f"tracker broke in {stage}") in warnings[0]
    assert "Traceback" not in err and "2 trials: 2 ok" in stdout
    assert "tracker_problems" not in json.loads(next((tmp_path / "out" / "trials").glob("*.json")).read_text())
    if stage == "start":  # dropped for the rest of the trial: neither logged to nor finished
        assert "log" not in Failing.calls and "finish" not in Failing.calls


def test_a_group_drops_only_the_tracker_that_failed_and_leaves_out_non_finite_values():
    class Recording(Tracker):
        def __init__(self):
            self.logged = []

        def log(self, step, metrics):
            self.logged.append((step, metrics))

    class BreaksOnLog(Tracker):
        def log(self, step, metrics):
            raise ValueError("disk full")

    good = Recording()
    group = Trackers({"good": good, "bad": BreaksOnLog()})
    group.log(2, {"train/loss": 1.5, "eval/L16": math.nan})
    group.log(4, {"train/loss": 1.25})
    assert good.logged == [(2, {"train/loss": 1.5}), (4, {"train/loss": 1.25})]
    assert group.problems == {"bad": "ValueError: disk full (in log)"} and list(group.live) == ["good"]


def test_log_flags_take_comma_lists_and_repeats_and_name_the_valid_trackers():
    assert tracker_names(["wandb", "mlflow,tensorboard", "wandb"]) == ("wandb", "mlflow", "tensorboard")
    assert tracker_names(None) == ()
    with pytest.raises(UsageError, match=r"unknown tracker 'tensorbord'; did you mean 'tensorboard'"):
        tracker_names(["tensorbord"])


def test_a_tracker_whose_package_is_missing_stops_the_run_before_anything_is_written(tmp_path, capsys,
                                                                                       monkeypatch):
    monkeypatch.setattr(trackers.WandbTracker, "module", "membench_no_such_package")
    spec = tiny_spec(tmp_path, {"copy": {}}, models=["mlp"])
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "run", "--spec", spec, "--out", str(out), "--log", "wandb")
    assert code == 2 and not out.exists()
    assert err.strip().splitlines() == [
        "membench: error: --log wandb needs the membench_no_such_package package, which is not installed: "
        "pip install 'membench[wandb]' (or leave out --log wandb)"]


def test_every_tracker_names_an_extra_of_the_same_name():
    import tomllib

    extras = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert set(trackers.TRACKERS) <= set(extras)


@pytest.mark.slow
def test_trackers_are_made_in_the_worker_processes(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    spec = tiny_spec(tmp_path, {"copy": {"params": {"content_vocab": 4}}}, models=["mlp"], seeds=[0, 1, 2],
                     steps=4, eval_every=4, log_every=2, cpu_workers=2)
    code, _, err = run_cli(capsys, "run", "--spec", spec, "--out", str(tmp_path / "out"), "--quiet",
                           "--log", "tensorboard")
    assert code == 0 and "warning" not in err, err
    trials = {p.stem for p in (tmp_path / "out" / "trials").glob("*.json")}
    logged = {p.parent.name for p in (tmp_path / "out" / "tensorboard").glob("*/events.out.tfevents.*")}
    assert logged == trials and len(trials) == 3
