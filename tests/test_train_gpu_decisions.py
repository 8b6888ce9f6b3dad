"""The decisions the training loop makes for a GPU, tested on the CPU (CUDA capabilities mocked where needed).

Each test checks a choice rather than a kernel: which precision the state readout keeps, which compile mode a
family gets and when it compiles, that dynamo is reset and memory released after every trial (an OOM
included), which device the evaluation sets are drawn on, what peak memory is measured from, what precision
is recorded, and which finished trials `--retry-failed` runs again.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref

import pandas as pd
import pytest
import torch

from membench.checks import ConfigError
from membench.memtasks import eval_seed, get_task
from membench.models import build_model, list_models, model_class
from membench.models.scan import scan_chunked, scan_reference
from membench.runners import metrics, precision
from membench.runners import train as train_module
from membench.runners import trial as trial_module
from membench.runners.precision import precision_name
from membench.runners.schema import RUNS_COLUMNS
from membench.runners.step_loss import resolve_compile
from membench.runners.trial import EvalSlice, Segment, TrialConfig, run_trial
from tests.helpers import run_cli, tiny_spec

CPU = torch.device("cpu")


# --- the scan's state readout under bf16 autocast --------------------------------------------
@pytest.mark.parametrize("scan", [scan_chunked, scan_reference], ids=["chunked", "reference"])
def test_scan_readout_keeps_float32_under_bf16_autocast(scan):
    """Linear attention's normaliser (the last value column, v = 1) sums every earlier token; read out in
    bf16 it is off by 0.5-0.8% at T = 4096, in float32 by under 0.03%."""
    torch.manual_seed(0)
    batch, seq_len, heads, n, p = 1, 4096, 1, 8, 4
    q, k = torch.rand(batch, seq_len, heads, n), torch.rand(batch, seq_len, heads, n)  # positive features
    v = torch.randn(batch, seq_len, heads, p)
    v[..., -1] = 1.0  # the normaliser column
    exact = scan_reference(q.double(), k.double(), v.double())  # (B, T, H, P) float64 ground truth
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = scan(q, k, v)  # (B, T, H, P)
    assert out.dtype == torch.float32
    late = slice(seq_len // 2, None)
    error = ((out.double() - exact).abs() / exact.abs())[:, late, :, -1].max()
    assert error < 2e-3, f"normaliser relative error {float(error):.2e} at T={seq_len}"


# --- helpers -------------------------------------------------------------------------------------
def copy_trial(**change) -> TrialConfig:
    fields = dict(task="copy", task_params={"content_vocab": 4}, model="mlp", model_params={}, d_model=16,
                  n_layers=1, train_len=8, seed=0, lr=1e-2, batch_size=8, steps=6, eval_every=3, log_every=3,
                  eval_slices=(EvalSlice("L8", 8, 16),))
    return TrialConfig(**{**fields, **change})


def recording_compile(monkeypatch, on_compile=None) -> list:
    """Replace torch.compile by one whose backend records every graph it is given (and runs it eagerly)."""
    graphs, real_compile = [], torch.compile

    def backend(gm, example_inputs):
        graphs.append(gm)
        if on_compile is not None:
            on_compile()
        return gm.forward

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: real_compile(fn, backend=backend, **kwargs))
    return graphs


# --- compile: which families are captured, and when --------------------------------------------
CAPTURE_GAINS_NOTHING = {"rnn", "lstm", "gru", "rnn_attention", "external_memory"}


def test_every_family_declares_whether_capture_helps():
    for name in list_models():
        assert isinstance(model_class(name).compile_friendly, bool), name
    assert {n for n in list_models() if not model_class(n).compile_friendly} >= CAPTURE_GAINS_NOTHING


@pytest.mark.parametrize("family", ["transformer", "lstm", "external_memory", "ssm"])
def test_auto_compile_captures_only_families_where_it_helps(family, monkeypatch):
    model = build_model(family, 8, d_model=16, n_layers=1)
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    monkeypatch.setattr(precision, "graphs_supported", lambda device: device.type == "cuda")  # an sm_80+ GPU
    expected = "none" if family in CAPTURE_GAINS_NOTHING else "cuda_graphs"
    assert resolve_compile(model, "auto", cuda) == expected
    assert resolve_compile(model, "auto", cpu) == "none"
    monkeypatch.setattr(precision, "graphs_supported", lambda device: False)  # a T4, say
    assert resolve_compile(model, "auto", cuda) == "none"
    for mode in ("none", "torch_compile", "cuda_graphs"):
        assert resolve_compile(model, mode, cuda) == mode  # an explicit choice is kept
    with pytest.raises(ConfigError, match="unknown compile mode 'fast'; valid: none, torch_compile"):
        resolve_compile(model, "fast", cpu)


def test_compile_happens_in_a_warm_up_before_the_clock(monkeypatch):
    """A mixture of two lengths: both shapes compile during the warm-up, none after the training clock
    starts; the compile time is its own column and the trial's numbers are those of the eager run."""
    events = []
    pause = 0.3
    graphs = recording_compile(monkeypatch, on_compile=lambda: (events.append("compile"), time.sleep(pause)))
    real_clock = train_module._Clock

    def clock(device):
        events.append("clock")
        return real_clock(device)

    monkeypatch.setattr(train_module, "_Clock", clock)
    config = copy_trial(segments=(Segment(8), Segment(16)), train_len=16, eval_slices=(EvalSlice("L16", 16, 16),))
    compiled = pd.DataFrame(run_trial(config, compile="torch_compile")["runs"])
    assert len(graphs) >= 2 and events.index("clock") == len(events) - 1  # every compile before the clock
    assert compiled["compile_seconds"].iloc[0] >= 2 * pause
    eager = pd.DataFrame(run_trial(config)["runs"])
    assert eager["compile_seconds"].iloc[0] == 0.0
    pd.testing.assert_series_equal(compiled["accuracy"], eager["accuracy"])
    pd.testing.assert_series_equal(compiled["loss"], eager["loss"], rtol=1e-5)
    assert compiled["steps"].iloc[0] == eager["steps"].iloc[0] == config.steps


def test_the_cuda_graphs_warm_up_drops_the_gradients_after_each_backward(monkeypatch):
    """Under cuda_graphs each segment's first batch runs forward and backward twice; the first backward's
    gradients live in the graphs' memory pool, which the second forward overwrites, so the second backward
    must not add to them: every forward of the warm-up starts with no gradients."""
    from types import SimpleNamespace

    model = torch.nn.Linear(2, 1)
    grads_seen = []

    def step_loss(*batch):
        grads_seen.append(model.weight.grad)
        return model(torch.ones(1, 2)).sum()

    run = SimpleNamespace(compile="cuda_graphs", schedule=[0, 0, 1], model=model, step_loss=step_loss, device=CPU,
                          draw=lambda step: (None, None, None, None))
    train_module.Training.warm_up(run)
    assert len(grads_seen) == 4 and all(g is None for g in grads_seen)  # 2 segments x (compile, record)
    assert model.weight.grad is None  # nothing left for the first real step to add to


@pytest.mark.slow
def test_ten_trials_in_one_process_are_each_compiled(monkeypatch):
    """Dynamo keys its cache by code object, shared by every trial's step: without the reset at the end of
    each trial, the ninth model class hits the recompile limit and silently runs eager."""
    graphs = recording_compile(monkeypatch)
    families = ["mlp", "transformer", "linear_attention", "ssm", "sliding_window", "memory_transformer", "lstm",
                "gru", "rnn", "external_memory"]
    compiled_per_trial, warnings = [], _Records()
    dynamo_log = logging.getLogger("torch._dynamo")  # torch's loggers do not propagate to the root logger
    dynamo_log.addHandler(warnings)
    try:
        for i, family in enumerate(families):
            before = len(graphs)
            runs = pd.DataFrame(run_trial(copy_trial(model=family, d_model=16 + 8 * (i % 2), steps=2, eval_every=2),
                                          compile="torch_compile")["runs"])
            assert (runs["status"] == "ok").all(), (family, runs["error"].iloc[0])
            compiled_per_trial.append(len(graphs) - before)
    finally:
        dynamo_log.removeHandler(warnings)
    assert not [m for m in warnings.messages if "recompile_limit" in m or "cache_size_limit" in m]
    assert all(n >= 1 for n in compiled_per_trial), dict(zip(families, compiled_per_trial))


class _Records(logging.Handler):
    """The messages of the warnings logged to the logger it is added to."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


# --- the end of a trial: reset and release, success or failure ---------------------------------
def test_every_trial_ends_with_a_dynamo_reset_and_a_release(monkeypatch):
    resets, collects = [], []
    monkeypatch.setattr(torch.compiler, "reset", lambda: resets.append(1))
    monkeypatch.setattr(metrics.gc, "collect", lambda: collects.append(1))
    ok = pd.DataFrame(run_trial(copy_trial(steps=2, eval_every=2))["runs"])
    assert (ok["status"] == "ok").all() and len(resets) == 1 and len(collects) >= 1

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("membench.runners.trial.train", out_of_memory)
    oom = pd.DataFrame(run_trial(copy_trial())["runs"])
    assert (oom["status"] == "oom").all() and len(resets) == 2


def test_end_trial_empties_the_cuda_cache_on_a_gpu(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.compiler, "reset", lambda: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    metrics.end_trial(torch.device("cpu"))
    assert calls == ["reset"]
    metrics.end_trial(torch.device("cuda", 0))
    assert calls == ["reset", "reset", "empty_cache"]


class _OOMOnSecondBatch(torch.nn.Module):
    """Features of the first batch, then CUDA's out-of-memory error in the head of the second."""

    def __init__(self) -> None:
        super().__init__()
        self.batches, self.features_seen = 0, []

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        h = torch.randn(*tokens.shape, 4)  # (B, T, 4)
        self.features_seen += [weakref.ref(tokens), weakref.ref(h)]
        return h

    def head(self, rows: torch.Tensor) -> torch.Tensor:
        self.batches += 1
        if self.batches == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return rows @ torch.ones(4, 8)  # (N, 8)


def test_an_oom_in_evaluation_frees_the_batch_before_releasing_memory(monkeypatch):
    """The eval loop body is a function: when memory is released, no tensor of the failed batch is alive."""
    model, alive_at_release = _OOMOnSecondBatch(), []
    monkeypatch.setattr(metrics, "release_memory",
                        lambda device: alive_at_release.extend(ref() is not None for ref in model.features_seen))
    result = metrics.evaluate(model, get_task("copy", content_vocab=4), 8, 16, 8, 0, torch.device("cpu"))
    assert result.status == "oom" and "OutOfMemoryError" in result.error
    assert alive_at_release == [False] * 4  # inputs and features of both batches


# --- evaluation sets: the same bytes on every device -----------------------------------------
def test_evaluation_sets_are_drawn_on_the_cpu_whatever_the_device(monkeypatch):
    task = get_task("associative_recall", num_kv_pairs=4)
    drawn_on, real_sample = [], type(task).sample

    def spy(self, batch_size, seq_len, seed, device="cpu"):
        drawn_on.append(torch.device(device))
        return real_sample(self, batch_size, seq_len, seed, device)

    monkeypatch.setattr(type(task), "sample", spy)
    on_meta = list(metrics.eval_batches(task, 32, 20, 8, 3, torch.device("meta")))  # a device with no data
    assert drawn_on == [torch.device("cpu")] * 3
    assert [b.inputs.device.type for b in on_meta] == ["meta"] * 3
    assert [tuple(b.inputs.shape) for b in on_meta] == [(8, 32), (8, 32), (4, 32)]
    on_cpu = list(metrics.eval_batches(task, 32, 20, 8, 3, torch.device("cpu")))
    for i, batch in enumerate(on_cpu):  # batch i is eval seed i of the run, drawn on the CPU
        expected = real_sample(task, len(batch.inputs), 32, eval_seed(3, i), "cpu")
        assert torch.equal(batch.inputs, expected.inputs) and torch.equal(batch.targets, expected.targets)
    drawn_on.clear()
    model = build_model("mlp", task.vocab_size, d_model=8, n_layers=1)
    metrics.evaluate(model, task, 32, 20, 8, 3, torch.device("cpu"))  # evaluation draws through eval_batches
    assert drawn_on == [torch.device("cpu")] * 3


# --- peak memory on CUDA (mocked allocator counters) ---------------------------------------------
def test_cuda_peak_memory_is_relative_to_entry_and_reset_per_trial(monkeypatch):
    mib = 2**20
    allocated, peak, resets = [100 * mib], [0], []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: resets.append(device))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: allocated[0])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: peak[0])
    device = torch.device("cuda", 0)
    with metrics.PeakMemory(device) as first:  # the weights (100 MiB) are already there
        peak[0] = 350 * mib
    assert first.peak_mb == 250 and resets == [device]
    allocated[0] = 300 * mib  # an earlier trial left 200 MiB behind
    with metrics.PeakMemory(device) as second:
        peak[0] = 550 * mib
    assert second.peak_mb == 250 and resets == [device, device]


def test_a_nested_meters_reset_does_not_hide_the_earlier_peak_from_the_enclosing_one(monkeypatch):
    mib = 2**20
    allocated, peak = [100 * mib], [100 * mib]

    def reset(device=None):
        peak[0] = allocated[0]

    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", reset)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: allocated[0])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: peak[0])
    device = torch.device("cuda", 0)
    with metrics.PeakMemory(device) as trial:  # a trial: training peaks at 500 MiB, then two slices read
        peak[0] = 500 * mib
        for slice_peak in (300, 200):
            with metrics.PeakMemory(device) as one_slice:
                peak[0] = slice_peak * mib
            assert one_slice.peak_mb == slice_peak - 100
    assert trial.peak_mb == 400 and metrics.PeakMemory._open == []


# --- recorded with every row: precision and compile time -----------------------------------------
def test_rows_record_precision_and_compile_seconds():
    runs = pd.DataFrame(run_trial(copy_trial(steps=2, eval_every=2))["runs"])
    assert list(runs.columns) == RUNS_COLUMNS
    assert (runs["precision"] == "fp32").all() and (runs["compile_seconds"] == 0.0).all()


@pytest.mark.parametrize("hardware_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_cuda_precision_follows_hardware_bf16(monkeypatch, hardware_bf16, expected):
    asked = []

    def is_bf16_supported(including_emulation=True):
        asked.append(including_emulation)
        return hardware_bf16 or including_emulation  # emulated bf16 exists everywhere; it must not count

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert precision_name(torch.device("cuda", 0)) == expected
    assert asked and not any(asked)


# --- resume: --retry-failed ------------------------------------------------------------------------
def test_retry_failed_reruns_only_the_trials_that_errored(tmp_path, monkeypatch, capsys):
    spec_file = tiny_spec(tmp_path, {"copy": {"params": {"content_vocab": 4}}}, models=["mlp"], seeds=[0, 1],
                          steps=4, eval_every=4, eval_multipliers=[])
    out = tmp_path / "out"
    real_train, ran = trial_module.train, []

    def train(model, config, *args, **kwargs):
        ran.append(config.seed)
        if config.seed == 1 and broken:
            raise NotImplementedError("nonzero_static has no CUDA kernel here")
        return real_train(model, config, *args, **kwargs)

    monkeypatch.setattr(trial_module, "train", train)
    broken = True
    argv = ["run", "--spec", str(spec_file), "--out", str(out), "--quiet"]
    assert run_cli(capsys, *argv)[0] == 1  # a trial failed with an error: the exit code says so
    assert ran == [0, 1]
    broken = False  # e.g. torch upgraded
    assert run_cli(capsys, *argv)[0] == 1  # its error row is still there
    assert ran == [0, 1], "a plain resume skips every finished trial, failed or not"
    code, text, _ = run_cli(capsys, *argv, "--retry-failed")
    assert code == 0 and ran == [0, 1, 1]
    table = pd.read_csv(out / "runs.csv")
    assert len(table) == 2 and (table["status"] == "ok").all() and "2 trials: 2 ok" in text


def test_an_oom_in_training_leaves_nothing_of_the_trial_alive_at_release(monkeypatch):
    """Model, gradients, optimizer state and batches are unreachable when the trial releases memory."""
    seen, alive_at_release, real_build = [], [], TrialConfig.build_model

    def build_model(self):
        model = real_build(self)
        features, calls = model.features, []

        def failing_features(tokens):
            calls.append(1)
            if len(calls) == 3:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
            h = features(tokens)
            seen.append(weakref.ref(h))
            return h

        model.features = failing_features
        seen.extend(weakref.ref(p) for p in model.parameters())
        return model

    real_release = metrics.release_memory

    def release(device):
        real_release(device)  # collects garbage first
        alive_at_release.append(sum(ref() is not None for ref in seen))

    monkeypatch.setattr(TrialConfig, "build_model", build_model)
    monkeypatch.setattr(metrics, "release_memory", release)
    runs = pd.DataFrame(run_trial(copy_trial(steps=6, eval_every=6))["runs"])
    assert (runs["status"] == "oom").all()
    assert len(seen) > 2 and alive_at_release == [0]
