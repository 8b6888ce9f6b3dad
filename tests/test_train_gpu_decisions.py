"""The decisions the training loop makes for a GPU, tested on the CPU (CUDA capabilities mocked where needed).

Each test checks a choice rather than a kernel: which precision the state readout keeps, which device the
evaluation sets are drawn on, which compile mode a family gets, what peak memory is measured from, and
that dynamo's cache is reset between trials.
"""

from __future__ import annotations

import logging
import time

import pandas as pd
import pytest
import torch

from membench.checks import ConfigError
from membench.models import build_model, list_models, model_class
from membench.models.scan import scan_chunked, scan_reference
from membench.runners import train as train_module
from membench.runners.train import resolve_compile
from membench.runners.trial import EvalSlice, Segment, TrialConfig, run_trial


# --- the scan's state readout under bf16 autocast --------------------------------------------
@pytest.mark.parametrize("scan", [scan_chunked, scan_reference], ids=["chunked", "reference"])
def test_scan_readout_keeps_float32_under_bf16_autocast(scan):
    """Linear attention's normaliser (the last value column, v = 1) sums every earlier token; read out in
    bf16 it is off by ~1% at T = 4096, in float32 by ~0.03%."""
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
def test_auto_compile_captures_only_families_where_it_helps(family):
    model = build_model(family, 8, d_model=16, n_layers=1)
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")  # resolve_compile reads only the device type
    expected = "none" if family in CAPTURE_GAINS_NOTHING else "cuda_graphs"
    assert resolve_compile(model, "auto", cuda) == expected
    assert resolve_compile(model, "auto", cpu) == "none"
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


@pytest.mark.slow
def test_ten_trials_in_one_process_are_each_compiled(monkeypatch, caplog):
    """Dynamo keys its cache by code object, shared by every trial's step: without the reset at the end of
    each trial, the ninth model class hits the recompile limit and silently runs eager."""
    graphs = recording_compile(monkeypatch)
    families = ["mlp", "transformer", "linear_attention", "ssm", "sliding_window", "memory_transformer", "lstm",
                "gru", "rnn", "external_memory"]
    compiled_per_trial = []
    with caplog.at_level(logging.WARNING):
        for i, family in enumerate(families):
            before = len(graphs)
            runs = pd.DataFrame(run_trial(copy_trial(model=family, d_model=16 + 8 * (i % 2), steps=2, eval_every=2),
                                          compile="torch_compile")["runs"])
            assert (runs["status"] == "ok").all(), (family, runs["error"].iloc[0])
            compiled_per_trial.append(len(graphs) - before)
    assert all(n >= 1 for n in compiled_per_trial), dict(zip(families, compiled_per_trial))
    assert not [r for r in caplog.records if "recompile_limit" in r.getMessage() or "cache_size_limit" in
                r.getMessage()]
