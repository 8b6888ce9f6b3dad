"""The runner: one trial's training, metrics and failure statuses, and tiny end-to-end sweeps on the CPU.

Test-only tasks and models are registered here and removed from the registries afterwards:
    echo    target at t is the input token at t - lag (every position from `lag` on is scored)
    oracle  a model that already answers echo with lag 1 perfectly (one-hot of the previous token)
    nan / oom / broken   models that produce a NaN loss, raise CUDA's out-of-memory error, or raise ValueError
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from membench.memtasks import IGNORE, NO_LAG, TASKS, Batch, Task, eval_seed, get_task, register_task
from membench.models import MODELS, MemoryModel, build_model, model_class, register_model
from membench.runners import metrics
from membench.runners.cli import main
from membench.runners.rows import describe_checkout
from membench.runners.schema import CURVES_COLUMNS, LAGS_COLUMNS, RUNS_COLUMNS
from membench.runners.spec import load_spec
from membench.runners.sweep import run_sweep
from membench.runners.train import lr_at, segment_schedule
from membench.runners.trial import EvalSlice, Segment, TrialConfig, run_trial
from tests.helpers import tiny_spec


@dataclass
class Echo(Task):
    """Repeat the token `lag` positions back: targets[t] = inputs[t - lag] for t >= lag."""

    vocab: int = 4
    lag: int = 1
    description = "test-only: echo the token lag positions back"

    def min_length(self) -> int:
        return self.lag + 1

    @property
    def vocab_size(self) -> int:
        return self.vocab

    def _generate(self, batch_size, seq_len, gen, device):
        x = torch.randint(0, self.vocab, (batch_size, seq_len), generator=gen, device=device)  # (B, T)
        y, lags = torch.full_like(x, IGNORE), torch.full_like(x, NO_LAG)
        y[:, self.lag:], lags[:, self.lag:] = x[:, : -self.lag], self.lag
        return Batch(x, y, lags)

    def solve(self, inputs):
        return torch.roll(inputs, self.lag, dims=1)


class Oracle(MemoryModel):
    """Answers echo with lag 1: features are 10 x one-hot(previous token), the head is the identity."""

    def __init__(self, vocab_size: int, d_model: int = 0, n_layers: int = 1) -> None:
        super().__init__(vocab_size, vocab_size, 1, make_mixer=lambda i: None, mlp_ratio=0)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(vocab_size))

    def features(self, tokens):  # (B, T) -> (B, T, V)
        previous = torch.roll(tokens, 1, dims=1)
        return 10 * F.one_hot(previous, self.vocab_size).float()


class NaNModel(MemoryModel):
    def __init__(self, vocab_size: int, d_model: int = 8, n_layers: int = 1) -> None:
        super().__init__(vocab_size, d_model, 1, make_mixer=lambda i: None, mlp_ratio=0)

    def features(self, tokens):
        return super().features(tokens) * float("nan")


class OOMModel(MemoryModel):
    """Raises CUDA's out-of-memory error for sequences longer than `max_len` (in training or evaluation)."""

    def __init__(self, vocab_size: int, d_model: int = 8, n_layers: int = 1, max_len: int = 0) -> None:
        super().__init__(vocab_size, d_model, 1, make_mixer=lambda i: None, mlp_ratio=0)
        self.max_len = max_len

    def features(self, tokens):
        if tokens.shape[1] > self.max_len:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return super().features(tokens)


class BrokenModel(MemoryModel):
    def __init__(self, vocab_size: int, d_model: int = 8, n_layers: int = 1) -> None:
        super().__init__(vocab_size, d_model, 1, make_mixer=lambda i: None, mlp_ratio=0)

    def features(self, tokens):
        raise ValueError("boom")


TEST_MODELS = {"oracle": Oracle, "nan": NaNModel, "oom": OOMModel, "broken": BrokenModel}


@pytest.fixture(autouse=True, scope="module")
def registered():
    """Register the test-only task and models for this module; remove them afterwards."""
    register_task("echo")(Echo)
    for name, cls in TEST_MODELS.items():
        register_model(name)(cls)
    yield
    for registry, names in ((TASKS, ["echo"]), (MODELS, list(TEST_MODELS))):
        for name in names:
            registry.unregister(name)


def trial(**change) -> TrialConfig:
    fields = dict(task="echo", task_params={}, model="lstm", model_params={}, d_model=16, n_layers=1, train_len=8,
                  seed=0, lr=1e-2, batch_size=16, steps=30, eval_every=10, log_every=5,
                  eval_slices=(EvalSlice("L8", 8, 32), EvalSlice("L16", 16, 32)))
    return TrialConfig(**{**fields, **change})


def step_flops(model, batch_size: int, seq_len: int, scored_per_row: int) -> int:
    """Forward+backward FLOPs of one step: the output head runs on the gathered rows (B * scored + T)."""
    rows = min(batch_size * seq_len, batch_size * scored_per_row + seq_len)
    return 3 * (model.flops(batch_size, seq_len) - model.head_flops(batch_size * seq_len) + model.head_flops(rows))


def rows(payload) -> pd.DataFrame:
    return pd.DataFrame(payload["runs"]).set_index("slice")


# --- one trial ------------------------------------------------------------------------------
def test_trial_rows_follow_the_schema():
    payload = run_trial(trial())
    assert payload["trial_id"] == trial().trial_id
    assert [list(r) for r in payload["runs"]] == [RUNS_COLUMNS] * 2
    assert all(list(r) == LAGS_COLUMNS for r in payload["lags"]) and payload["lags"]
    assert all(list(r) == CURVES_COLUMNS for r in payload["curves"])
    runs = rows(payload)
    assert list(runs["eval_len"]) == [8, 16] and list(runs["is_train_len"]) == [True, False]
    assert (runs["status"] == "ok").all() and (runs["error"] == "").all()
    assert runs["steps"].iloc[0] == 30 and 0 <= runs["accuracy"].min() <= runs["accuracy"].max() <= 1
    model = trial().build_model()
    assert runs["params"].iloc[0] == model.num_params()
    assert runs["flops_per_step"].iloc[0] == step_flops(model, 16, 8, scored_per_row=7)
    assert runs["state_size"].tolist() == [model.state_size(8), model.state_size(16)]
    assert runs["tokens_per_second"].iloc[0] == pytest.approx(30 * 16 * 8 / runs["train_seconds"].iloc[0])
    curves = pd.DataFrame(payload["curves"])
    assert curves["step"].tolist() == [5, 10, 15, 20, 25, 30]
    assert curves["eval_accuracy"].notna().tolist() == [False, True, False, True, False, True]
    assert curves["tokens"].tolist() == [s * 16 * 8 for s in curves["step"]]
    lags = pd.DataFrame(payload["lags"])
    assert set(lags["lag_bucket"]) == {1} and lags["count"].tolist() == [32 * 7, 32 * 15]


def test_same_config_and_seed_give_identical_metrics_on_cpu():
    a, b = run_trial(trial()), run_trial(trial())
    keep = ["accuracy", "exact_match", "loss", "params", "steps"]
    pd.testing.assert_frame_equal(rows(a)[keep], rows(b)[keep])
    assert a["lags"] == b["lags"]
    assert [p["train_loss"] for p in a["curves"]] == [p["train_loss"] for p in b["curves"]]


def test_early_stop_and_time_to_accuracy_need_every_slice():
    reachable = run_trial(trial(model="oracle", lr=1e-9, steps=50))
    runs = rows(reachable)
    assert (runs["accuracy"] == 1.0).all() and (runs["exact_match"] == 1.0).all()
    assert (runs["steps"] == 10).all()  # stopped at the first evaluation
    assert (runs["time_to_accuracy_steps"] == 10).all()
    assert (runs["time_to_accuracy_tokens"] == 10 * 16 * 8).all()
    assert runs["time_to_accuracy_seconds"].iloc[0] == pytest.approx(runs["train_seconds"].iloc[0], abs=0.05)
    # a slice at another length with lag 3 is never right: training still stops (the train-length slice is
    # perfect) but time-to-accuracy is never reached
    slices = (EvalSlice("L8", 8, 32), EvalSlice("L16-lag3", 16, 32, {"lag": 3}))
    runs = rows(run_trial(trial(model="oracle", lr=1e-9, steps=50, eval_slices=slices)))
    assert runs.loc["L8", "accuracy"] == 1.0 and runs.loc["L16-lag3", "accuracy"] < 0.6
    assert (runs["steps"] == 10).all() and runs["time_to_accuracy_steps"].isna().all()


def test_mixture_segments_and_slices():
    config = trial(model="mlp", steps=20, segments=(Segment(8, {}, 3.0), Segment(12, {"lag": 2}, 1.0)),
                   eval_slices=(EvalSlice("short", 8, 16), EvalSlice("lag2", 12, 16, {"lag": 2})))
    payload = run_trial(config)
    runs = rows(payload)
    assert list(runs.index) == ["short", "lag2"] and list(runs["eval_len"]) == [8, 12]
    model = config.build_model()
    tokens = payload["curves"][-1]["tokens"]
    n_long = (tokens - 20 * 16 * 8) // (16 * 4)  # steps drawn from the length-12 segment
    assert 0 < n_long < 20
    expected = ((20 - n_long) * step_flops(model, 16, 8, 7) + n_long * step_flops(model, 16, 12, 10)) / 20
    assert runs["flops_per_step"].iloc[0] == pytest.approx(expected)


def test_segment_schedule_follows_weights_and_seed():
    draws = segment_schedule([3.0, 1.0], 4000, seed=7)
    assert draws == segment_schedule([3.0, 1.0], 4000, seed=7) != segment_schedule([3.0, 1.0], 4000, seed=8)
    assert 0.72 < draws.count(0) / 4000 < 0.78
    assert segment_schedule([1.0], 5, seed=0) == [0] * 5


def test_learning_rate_schedule():
    assert lr_at(0, 100, 1e-3, 0.1) == pytest.approx(1e-4)
    assert lr_at(9, 100, 1e-3, 0.1) == pytest.approx(1e-3)
    assert lr_at(10, 100, 1e-3, 0.1) == pytest.approx(1e-3)
    assert lr_at(55, 100, 1e-3, 0.1) == pytest.approx(5.5e-4)
    assert lr_at(100, 100, 1e-3, 0.1) == pytest.approx(1e-4)
    values = [lr_at(s, 100, 1e-3, 0.1) for s in range(10, 100)]
    assert values == sorted(values, reverse=True)


@pytest.mark.parametrize("model, status, message", [
    ("nan", "diverged", "training loss is nan at step 5"),
    ("oom", "oom", "OutOfMemoryError: CUDA out of memory"),
    ("broken", "error", "ValueError: boom"),
])
def test_failures_are_recorded_results(model, status, message):
    runs = rows(run_trial(trial(model=model)))
    assert len(runs) == 2 and (runs["status"] == status).all()
    assert runs["error"].str.contains(message, regex=False).all()
    assert runs["accuracy"].isna().all() and runs["params"].notna().all()


def test_a_bug_inside_training_is_recorded_and_shown_with_its_traceback(tmp_path, capsys):
    """A ValueError from a model's forward is a bug, not bad input: the trial is recorded as `error` and the
    sweep prints the whole traceback to stderr (the trial file keeps it too)."""
    payload = run_trial(trial(model="broken"))
    assert "Traceback" in payload["traceback"] and 'raise ValueError("boom")' in payload["traceback"]
    spec = echo_spec(tmp_path, models=["broken"], lengths=[8], steps=5)
    code = main(["run", "--spec", spec, "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback (most recent call last)" in err and "ValueError: boom" in err
    assert "1 of 1 trials failed with an error" in err and "--retry-failed" in err  # the exit code and why
    assert (pd.read_csv(tmp_path / "out" / "runs.csv")["status"] == "error").all()


def test_oom_in_one_eval_slice_marks_only_that_slice():
    runs = rows(run_trial(trial(model="oom", model_params={"max_len": 8})))
    assert runs.loc["L8", "status"] == "ok" and runs.loc["L8", "accuracy"] >= 0
    assert runs.loc["L16", "status"] == "oom" and math.isnan(runs.loc["L16", "accuracy"])


def test_time_cap_is_a_timeout_with_metrics():
    runs = rows(run_trial(trial(time_cap=1e-6)))
    assert (runs["status"] == "timeout").all() and (runs["steps"] == 0).all()
    assert runs["accuracy"].notna().all()


def test_evaluate_matches_a_plain_loop():
    task = get_task("echo", vocab=6, lag=3)
    torch.manual_seed(0)
    model = build_model("mlp", 6, d_model=8, n_layers=1)
    result = metrics.evaluate(model, task, seq_len=20, n_sequences=10, batch_size=4, seed=1,
                              device=torch.device("cpu"))
    hits = total = exact = 0
    loss = 0.0
    by_bucket: dict[int, list[int]] = {}
    for i, start in enumerate(range(0, 10, 4)):
        batch = task.sample(min(4, 10 - start), 20, eval_seed(1, i))
        with torch.no_grad():
            logits = model(batch.inputs)  # (B, T, V)
        for b in range(batch.inputs.shape[0]):
            all_right = True
            for t in range(20):
                target = int(batch.targets[b, t])
                if target == IGNORE:
                    continue
                right = int(logits[b, t].argmax()) == target
                loss += float(F.cross_entropy(logits[b, t][None], batch.targets[b, t][None]))
                hits, total, all_right = hits + right, total + 1, all_right and right
                bucket = 1 << (int(batch.lags[b, t]).bit_length() - 1)
                cell = by_bucket.setdefault(bucket, [0, 0])
                cell[0], cell[1] = cell[0] + right, cell[1] + 1
            exact += all_right
    assert result.accuracy == pytest.approx(hits / total)
    assert result.exact_match == exact / 10
    assert result.loss == pytest.approx(loss / total, rel=1e-5)
    assert result.lags == {k: tuple(v) for k, v in by_bucket.items()}


def test_lag_buckets_are_powers_of_two():
    lags = torch.tensor([1, 2, 3, 4, 5, 7, 8, 1023, 1024, 2**40 + 1])
    assert (1 << metrics.lag_buckets(lags)).tolist() == [1, 2, 2, 4, 4, 4, 8, 512, 1024, 2**40]


def test_compile_option_uses_torch_compile(monkeypatch):
    """The captured step must give the same trial as eager; the eager backend keeps this quick on the CPU."""
    calls, real_compile = [], torch.compile

    def eager_compile(fn, **kwargs):
        calls.append(kwargs)
        return real_compile(fn, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", eager_compile)
    config = trial(model="mlp", steps=10)
    compiled, eager = rows(run_trial(config, compile="torch_compile")), rows(run_trial(config))
    assert calls == [{}]
    assert (compiled["status"] == "ok").all()
    pd.testing.assert_series_equal(compiled["accuracy"], eager["accuracy"])
    pd.testing.assert_series_equal(compiled["loss"], eager["loss"], rtol=1e-5)


def test_cpu_threads_apply_to_the_trial_only(monkeypatch):
    seen = []

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise ValueError("stop here")

    monkeypatch.setattr("membench.runners.trial.train", spy)
    torch.set_num_threads(2)
    runs = rows(run_trial(trial(), threads=1))
    assert seen == [1] and torch.get_num_threads() == 2
    assert (runs["error"] == "ValueError: stop here").all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="inductor on the CPU takes ~20 s to compile")
def test_torch_compile_on_cuda():
    runs = rows(run_trial(trial(model="mlp", steps=10), device="cuda", compile="torch_compile"))
    assert (runs["status"] == "ok").all()


# --- sweeps ------------------------------------------------------------------------------------
def echo_spec(tmp_path, **settings) -> str:
    return tiny_spec(tmp_path, {"echo": {"params": {"vocab": 4}}}, **{
        "lengths": [8, 12], "models": ["mlp", "lstm"], "steps": 12, "eval_every": 6, "log_every": 3,
        "learning_rates": [1e-2], **settings})


def test_sweep_end_to_end_and_rerun_adds_nothing(tmp_path, monkeypatch):
    spec = load_spec(None, echo_spec(tmp_path), {})
    out = tmp_path / "out"
    runs = run_sweep(spec, out, progress=False)
    assert len(spec.trials) == 4 and len(runs) == 8 and runs["trial_id"].nunique() == 4
    for name, columns in (("runs", RUNS_COLUMNS), ("lags", LAGS_COLUMNS), ("curves", CURVES_COLUMNS)):
        table = pd.read_csv(out / f"{name}.csv")
        assert list(table.columns) == columns and len(table) > 0
    written = {p.name: p.stat().st_mtime_ns for p in (out / "trials").iterdir()}
    assert len(written) == 4

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished trial ran again")

    monkeypatch.setattr("membench.runners.executors.run_trial", must_not_run)
    again = run_sweep(spec, out, progress=False)
    pd.testing.assert_frame_equal(again, runs)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "trials").iterdir()} == written
    assert len(pd.read_csv(out / "runs.csv")) == 8


def test_failed_trials_do_not_stop_the_sweep(tmp_path):
    runs = run_sweep(load_spec(None, echo_spec(tmp_path, models=["nan", "mlp", "broken"]), {"lengths": [8]}),
                     tmp_path / "out",
                     progress=False)
    assert runs.groupby("model")["status"].first().to_dict() == {"broken": "error", "mlp": "ok", "nan": "diverged"}


def test_cli_run_and_compare(tmp_path, capsys):
    spec = echo_spec(tmp_path)
    assert main(["run", "--spec", spec, "--out", str(tmp_path / "a"), "--quiet",
                 "--models", "mlp", "--lengths", "8"]) == 0
    out = capsys.readouterr().out
    assert "echo  mlp    8" in out and "1 trials: 1 ok" in out
    assert main(["compare", "mlp", "lstm", "--task", "echo", "--spec", spec, "--out",
                 str(tmp_path / "b"), "--quiet", "--lengths", "8"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("mlp: d_model=16") and "lstm: d_model=16" in out[0]
    assert out[1].split() == ["train_len", "eval_len", "slice", "mlp", "lstm"]
    table = [line for line in out[2:] if not line.startswith("* under-trained")]  # the footnote, when any
    assert [line.split()[:3] for line in table] == [["8", "8", "L8"], ["8", "16", "L16"]]


def test_cli_compare_needs_two_models(tmp_path, capsys):
    assert main(["compare", "mlp", "--task", "echo", "--out", str(tmp_path / "x")]) == 2
    assert "at least two different models" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_local_worker_pool_gives_the_same_rows(tmp_path):
    """The one-process-per-GPU pool, exercised with two CPU workers (spawned, so a registered task)."""
    from membench.runners.executors import LocalExecutor

    configs = [trial(task="copy", task_params={"content_vocab": 4}, model="mlp", seed=s, steps=6,
                     eval_slices=(EvalSlice("L8", 8, 16),)) for s in (0, 1)]
    pooled = {p["trial_id"]: p for p in LocalExecutor(["cpu", "cpu"]).run(configs)}
    for config in configs:
        alone = run_trial(config)
        assert pooled[config.trial_id]["runs"][0]["accuracy"] == alone["runs"][0]["accuracy"]
        assert pooled[config.trial_id]["runs"][0]["loss"] == pytest.approx(alone["runs"][0]["loss"], rel=1e-5)


def test_parquet_beside_csv_when_pyarrow_is_importable(tmp_path):
    pytest.importorskip("pyarrow")
    run_sweep(load_spec(None, echo_spec(tmp_path), {"models": ["mlp"], "lengths": [8]}), tmp_path,
              progress=False)
    for name in ("runs", "lags", "curves"):
        csv, parquet = pd.read_csv(tmp_path / f"{name}.csv"), pd.read_parquet(tmp_path / f"{name}.parquet")
        assert list(parquet.columns) == list(csv.columns) and len(parquet) == len(csv)


def test_model_version_enters_the_trial_id_only_when_bumped(monkeypatch):
    config = trial()
    assert config.model_version == 1
    assert rows(run_trial(trial(steps=5)))["model_version"].tolist() == [1, 1]
    monkeypatch.setattr(model_class(config.model), "version", 2)
    bumped = trial()
    assert bumped.model_version == 2 and bumped.trial_id != config.trial_id


def test_the_commit_is_marked_dirty_only_for_uncommitted_code(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    assert describe_checkout(tmp_path) == ""  # not a checkout
    git("init", "-q")
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "train.py").write_text("x = 1\n")
    (tmp_path / "notes.md").write_text("a\n")
    git("add", ".")
    git("commit", "-qm", "first")
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=tmp_path, capture_output=True,
                          text=True).stdout.strip()
    assert describe_checkout(tmp_path) == head
    (tmp_path / "notes.md").write_text("b\n")  # not code
    (tmp_path / "runners" / "new.py").write_text("y = 2\n")  # untracked
    assert describe_checkout(tmp_path) == head
    (tmp_path / "runners" / "train.py").write_text("x = 2\n")
    assert describe_checkout(tmp_path) == head + "+dirty"
