"""Cost measurement (runners/cost/measure.py): rows, batch rule, peak memory, stop on oom / timeout / error."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from membench.models import build_model
from membench.runners.cost import measure as cost
from membench.runners.cost.measure import (
    COST_COLUMNS,
    CostConfig,
    batch_size_for,
    cpu_peak_bytes,
    length_ladder,
    measure_family,
)

TINY = dict(models=("mlp",), lengths=(16, 32, 64), batch_tokens=128, d_model=16, n_layers=1, repeats=1)


def test_batch_size_holds_tokens_per_step():
    assert batch_size_for(128, 4096) == 32
    assert batch_size_for(1000, 4096) == 4
    assert batch_size_for(8192, 4096) == 1  # never below one sequence


def test_length_ladder():
    assert length_ladder(2048) == [128, 256, 512, 1024, 2048]
    assert length_ladder(1000) == [128, 256, 512]
    assert length_ladder(64) == [64]


@pytest.mark.parametrize(
    "change",
    [dict(models=()), dict(lengths=()), dict(lengths=(0, 16)), dict(lengths=(32, 16)), dict(lengths=(16, 16)),
     dict(batch_tokens=0), dict(repeats=0), dict(threads=0), dict(warmup=0), dict(time_cap=0.0), dict(device="tpu")],
)
def test_config_rejects_bad_values(change):
    with pytest.raises(ValueError):
        CostConfig(**{**TINY, **change})


def test_cpu_peak_bytes_replays_allocations():
    mib = 2**20

    def two_in_turn():  # 4 MiB, freed, then 8 MiB: the peak is 8, not 12
        a = torch.ones(mib, dtype=torch.float32)
        del a
        b = torch.ones(2 * mib, dtype=torch.float32)
        del b

    def two_together():
        a = torch.ones(mib, dtype=torch.float32)
        b = torch.ones(2 * mib, dtype=torch.float32)
        del a, b

    assert 8 * mib <= cpu_peak_bytes(two_in_turn) < 9 * mib
    assert 12 * mib <= cpu_peak_bytes(two_together) < 13 * mib
    kept = torch.ones(mib)
    assert cpu_peak_bytes(lambda: kept.mul_(2)) < mib // 2  # in place: nothing new is held


def test_measure_family_rows():
    config = CostConfig(**TINY)
    rows = measure_family("mlp", config, log=lambda line: None)
    frame = pd.DataFrame(rows, columns=COST_COLUMNS)
    assert list(frame["seq_len"]) == [16, 32, 64] and list(frame["batch_size"]) == [8, 4, 2]
    assert (frame["status"] == "ok").all()
    model = build_model("mlp", config.vocab_size, d_model=16, n_layers=1)
    for row in rows:
        assert row["flops"] == 3 * model.flops(row["batch_size"], row["seq_len"])
        assert row["attention_flops"] == 0 and row["state_size"] == 0
        assert row["ms_per_step"] > 0 and row["peak_memory_mb"] > 0
        seconds = row["ms_per_step"] / 1e3
        assert row["tokens_per_second"] == pytest.approx(row["batch_size"] * row["seq_len"] / seconds)
        assert row["tflops_per_s"] == pytest.approx(row["flops"] / seconds / 1e12)
        assert row["device"].startswith("cpu")


def test_peak_memory_grows_with_the_batch():
    model = build_model("lstm", 64, d_model=32, n_layers=1)
    device = torch.device("cpu")
    small = cost.peak_step_bytes(cost.make_step(model, 2, 64, device), device)
    large = cost.peak_step_bytes(cost.make_step(model, 8, 64, device), device)
    assert 2.5 * small < large < 5 * small


def _fail_at(seq_len, error):
    real = cost.make_step

    def make_step(model, batch_size, n, device):
        if n >= seq_len:
            raise error
        return real(model, batch_size, n, device)

    return make_step


@pytest.mark.parametrize(
    "error,status",
    [(torch.OutOfMemoryError("CUDA out of memory"), "oom"),
     (RuntimeError("DefaultCPUAllocator: can't allocate memory"), "oom"),
     (ValueError("a bug in the family"), "error")],
)
def test_a_family_stops_at_its_first_failure(monkeypatch, error, status):
    monkeypatch.setattr(cost, "make_step", _fail_at(32, error))
    lines = []
    rows = measure_family("mlp", CostConfig(**TINY), log=lines.append)
    assert [(r["seq_len"], r["status"]) for r in rows] == [(16, "ok"), (32, status)]  # 64 never runs
    failed = rows[-1]
    assert math.isnan(failed["ms_per_step"]) and math.isnan(failed["peak_memory_mb"])
    assert failed["flops"] > 0  # analytic columns are known even so
    assert status in lines[-1]


def test_timeout_needs_two_slow_steps_in_a_row(monkeypatch):
    times = iter([30.0, 0.5, 0.5, 30.0, 30.0])  # 16: one stall among fast steps; 32: two slow steps
    monkeypatch.setattr(cost, "timed", lambda step, device: next(times))
    rows = measure_family("mlp", CostConfig(**{**TINY, "repeats": 2, "time_cap": 20.0}), log=lambda line: None)
    assert [(r["seq_len"], r["status"]) for r in rows] == [(16, "ok"), (32, "timeout")]
    assert rows[0]["ms_per_step"] == pytest.approx(500.0)  # median of the timed steps, warm-up excluded
    assert rows[1]["ms_per_step"] == pytest.approx(30_000.0)


def test_a_real_timeout_stops_the_family():
    rows = measure_family("mlp", CostConfig(**{**TINY, "time_cap": 1e-9}), log=lambda line: None)
    assert len(rows) == 1 and rows[0]["status"] == "timeout" and rows[0]["ms_per_step"] > 0


def test_a_killed_run_keeps_the_finished_families(tmp_path, monkeypatch):
    real = cost.measure_family

    def measure(name, config, log):
        if name == "lstm":
            raise KeyboardInterrupt
        return real(name, config, log)

    monkeypatch.setattr(cost, "measure_family", measure)
    with pytest.raises(KeyboardInterrupt):
        cost.run_cost(CostConfig(**{**TINY, "models": ("mlp", "lstm", "gru")}), tmp_path, log=lambda line: None)
    table = pd.read_csv(tmp_path / "cost.csv")
    assert list(table.columns) == COST_COLUMNS and set(table["model"]) == {"mlp"} and len(table) == 3
    assert list(pd.read_csv(tmp_path / "cost_fit.csv")["model"]) == ["mlp"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_threads_are_set_for_the_sweep_and_restored(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(cost, "measure_family", lambda name, config, log: seen.append(torch.get_num_threads()) or [])
    before = torch.get_num_threads()
    cost.run_cost(CostConfig(**{**TINY, "threads": 1}), tmp_path, log=lambda line: None)
    assert seen == [1] and torch.get_num_threads() == before
