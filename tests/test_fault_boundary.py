"""One trial, one row: whatever a trial raises (user code included) or answers about its own cost becomes that
trial's result, and the sweep goes on (runners.faults, runners.trial). Each case here crashed a sweep, wrote
no row, or wrote a trial file that could not be read back, before the fault boundary covered it."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from membench.memtasks import TASKS, register_task
from membench.models import MODELS, MemoryModel, register_model
from membench.models.base import Mixer
from membench.models.imported import mixer_model_class
from membench.runners.cli import main
from membench.runners.cost.measure import CostConfig, measure_family
from membench.runners.faults import FaultBoundary, cost_value
from membench.runners.trial import EvalSlice, TrialConfig, run_trial
from tests.test_runner import Echo, echo_spec
from tests.test_runner import trial as echo_trial


class Plain(MemoryModel):
    """A memoryless model whose cost answers each subclass overrides."""

    def __init__(self, vocab_size: int, d_model: int = 8, n_layers: int = 1) -> None:
        super().__init__(vocab_size, d_model, 1, make_mixer=lambda i: None, mlp_ratio=0)


def answering(method: str, answer):
    """A Plain subclass whose `method` returns `answer` (or raises it, when it is an exception)."""
    def reply(self, *args):
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return type(f"Plain_{method}", (Plain,), {method: reply})


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no message for you")


def raising_in_forward(error: BaseException):
    def features(self, tokens):
        raise error

    return type("RaisesInForward", (Plain,), {"features": features})


class WrongShape(nn.Module):
    """A user mixer that returns half the width (and declares no flops: they are counted on a forward)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, d_model // 2)

    def forward(self, x):
        return self.proj(x)


class NoStateMixer(Mixer):
    """Built the README's way (a membench Mixer) with flops but no state_size."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        return self.proj(x)

    def flops(self, batch_size, seq_len):
        return 2 * batch_size * seq_len * self.proj.in_features * self.proj.out_features


class NoStateModel(MemoryModel):
    def __init__(self, vocab_size: int, d_model: int = 8, n_layers: int = 1) -> None:
        super().__init__(vocab_size, d_model, 1, make_mixer=lambda i: NoStateMixer(d_model), mlp_ratio=0)


@dataclass
class BadParams(Echo):
    def params(self):
        raise RuntimeError("params exploded")


@dataclass
class NothingScored(Echo):
    def _generate(self, batch_size, seq_len, gen, device):
        batch = super()._generate(batch_size, seq_len, gen, device)
        batch.targets.fill_(-100)
        return batch


@dataclass
class FailsLong(Echo):
    """Samples fine at the trained length, raises at 16."""

    def _generate(self, batch_size, seq_len, gen, device):
        if seq_len == 16:
            raise RuntimeError("no sequences of 16 today")
        return super()._generate(batch_size, seq_len, gen, device)


MODELS_HERE = {
    "flops_raises": answering("flops", RuntimeError("flops exploded")),
    "flops_nan": answering("flops", math.nan), "flops_none": answering("flops", None),
    "flops_text": answering("flops", "many"), "flops_negative": answering("flops", -5),
    "state_raises": answering("state_size", ValueError("no state")),
    "state_numpy": answering("state_size", np.int64(7)), "state_tensor": answering("state_size", torch.tensor(7)),
    "state_negative": answering("state_size", -1),
    "exits": raising_in_forward(SystemExit(3)), "interrupts": raising_in_forward(KeyboardInterrupt()),
    "unprintable": raising_in_forward(Unprintable()),
    "wrong_shape": mixer_model_class("tests:WrongShape", WrongShape), "no_state": NoStateModel,
}
TASKS_HERE = {"echo": Echo, "bad_params": BadParams, "nothing_scored": NothingScored, "fails_long": FailsLong}


@pytest.fixture(autouse=True, scope="module")
def registered():
    tasks = [name for name in TASKS_HERE if name not in TASKS.names()]  # echo may be test_runner's already
    for name in tasks:
        register_task(name)(TASKS_HERE[name])
    for name, cls in MODELS_HERE.items():
        register_model(name)(cls)
    yield
    for name in tasks:
        TASKS.unregister(name)
    for name in MODELS_HERE:
        MODELS.unregister(name)


def trial(**change) -> TrialConfig:
    """test_runner's echo trial, smaller: these trials only need to get through every stage."""
    return echo_trial(**{"model": "mlp", "d_model": 8, "batch_size": 8, "steps": 6, "eval_every": 3,
                         "log_every": 3, "eval_slices": (EvalSlice("L8", 8, 16), EvalSlice("L16", 16, 16)),
                         **change})


def runs_of(payload) -> pd.DataFrame:
    json.dumps(payload, allow_nan=True)  # what the sweep writes: must not raise (numpy ints, tensors)
    return pd.DataFrame(payload["runs"]).set_index("slice")


@pytest.mark.parametrize("model, message", [
    ("flops_raises", "RuntimeError: flops exploded"),
    ("state_raises", "ValueError: no state"),
    ("exits", "SystemExit: 3"),
    ("interrupts", "KeyboardInterrupt"),
    ("unprintable", "Unprintable: <its message could not be printed: RuntimeError>"),
    ("wrong_shape", "must map (B, T, D)"),
])
def test_what_user_code_raises_is_the_trials_error_row(model, message):
    payload = run_trial(trial(model=model))
    runs = runs_of(payload)
    assert (runs["status"] == "error").all() and runs["error"].str.contains(message, regex=False).all()
    assert "Traceback (most recent call last)" in payload["traceback"]
    assert runs["accuracy"].isna().all()


@pytest.mark.parametrize("task, message", [
    ("bad_params", "RuntimeError: params exploded"),
    ("nothing_scored", "scores no position"),
])
def test_a_task_that_fails_is_an_error_row_not_a_divergence(task, message):
    runs = runs_of(run_trial(trial(task=task)))
    assert (runs["status"] == "error").all() and runs["error"].str.contains(message).all()


@pytest.mark.parametrize("model, column", [
    ("flops_nan", "flops_per_step"), ("flops_none", "flops_per_step"), ("flops_text", "flops_per_step"),
    ("flops_negative", "flops_per_step"), ("state_negative", "state_size"),
])
def test_a_cost_that_is_not_a_finite_nonnegative_number_is_blank_with_a_warning(model, column):
    payload = run_trial(trial(model=model))
    runs = runs_of(payload)
    assert (runs["status"] == "ok").all() and runs[column].isna().all()
    assert any("not a finite non-negative number" in w for w in payload["warnings"])
    assert runs["accuracy"].notna().all()  # the trial itself was measured


@pytest.mark.parametrize("model", ["state_numpy", "state_tensor"])
def test_a_numpy_or_tensor_state_size_is_written_as_a_plain_int(model):
    payload = run_trial(trial(model=model))
    assert [r["state_size"] for r in payload["runs"]] == [7, 7]
    assert all(type(r["state_size"]) is int for r in payload["runs"]) and "warnings" not in payload


def test_a_mixer_without_state_size_is_unknown_not_an_error():
    payload = run_trial(trial(model="no_state"))
    runs = runs_of(payload)
    assert (runs["status"] == "ok").all() and runs["state_size"].isna().all()
    assert any("is not declared" in w for w in payload["warnings"])


def test_a_failing_eval_slice_fails_that_slice_alone():
    payload = run_trial(trial(task="fails_long"))
    runs = runs_of(payload)
    assert runs.loc["L8", "status"] == "ok" and runs.loc["L8", "accuracy"] >= 0
    assert runs.loc["L16", "status"] == "error" and "no sequences of 16 today" in runs.loc["L16", "error"]
    assert "slice L16" in payload["traceback"]


def test_a_real_ctrl_c_passes_through_the_boundary():
    import os
    import signal

    with pytest.raises(KeyboardInterrupt):
        with FaultBoundary():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs between bytecodes
                pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_cost_value_converts_and_rejects():
    warnings = []
    assert cost_value("a", lambda: np.int64(5), (), warnings) == 5
    assert cost_value("b", lambda: 2.5, (), warnings) == 2.5
    assert math.isnan(cost_value("c", lambda: True, (), warnings))
    assert math.isnan(cost_value("d", lambda: None, (), warnings, unknown_ok=True))
    assert len(warnings) == 1 and "True" in warnings[0]
    with pytest.raises(ZeroDivisionError):
        cost_value("e", lambda: 1 / 0, (), warnings)


def test_a_sweep_goes_on_says_how_many_failed_and_retries_them(tmp_path, capsys, monkeypatch):
    spec = echo_spec(tmp_path, models=["mlp", "exits", "flops_raises"], lengths=[8], steps=4)
    out = str(tmp_path / "out")
    assert main(["run", "--spec", spec, "--out", out, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "2 of 3 trials failed with an error" in err and "--retry-failed" in err
    statuses = pd.read_csv(tmp_path / "out" / "runs.csv").groupby("model")["status"].first().to_dict()
    assert statuses == {"mlp": "ok", "exits": "error", "flops_raises": "error"}
    ran = []
    import membench.runners.executors as executors

    real = executors.run_trial
    monkeypatch.setattr(
        executors, "run_trial", lambda config, *a, **k: ran.append(config.model) or real(config, *a, **k)
    )
    assert main(["run", "--spec", spec, "--out", out, "--quiet"]) == 1 and ran == []  # resumed: nothing re-runs
    assert main(["run", "--spec", spec, "--out", out, "--quiet", "--retry-failed"]) == 1
    assert sorted(ran) == ["exits", "flops_raises"]


def test_cost_records_a_failing_family_and_goes_on(tmp_path):
    config = CostConfig(models=("flops_raises", "mlp"), lengths=(8, 16), batch_tokens=64, d_model=8, n_layers=1,
                        vocab_size=8, warmup=1, repeats=1, device="cpu")
    failing = measure_family("flops_raises", config, log=lambda line: None)
    assert [r["status"] for r in failing] == ["error"]
    fine = measure_family("mlp", config, log=lambda line: None)
    assert [r["status"] for r in fine] == ["ok", "ok"] and all(r["flops"] > 0 for r in fine)


def test_the_cli_exits_on_sys_exit_of_a_family_only_through_its_row(tmp_path):
    """sys.exit inside a model during training must not end the process (pytest would see SystemExit)."""
    payload = run_trial(trial(model="exits"))
    assert payload["runs"][0]["status"] == "error" and sys.exc_info() == (None, None, None)
