"""`membench cost` end to end on a tiny run (2 families, 2 short lengths), and its bad-input errors."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import torch

from membench.runners.cost.fit import FIT_COLUMNS
from membench.runners.cost.measure import COST_COLUMNS
from tests.helpers import run_cli

TINY = ["--lengths", "16,32", "--batch-tokens", "64", "--d-model", "16", "--n-layers", "1", "--repeats", "1",
        "--threads", "1", "--device", "cpu"]


def test_tiny_run_writes_tables_and_charts(tmp_path, capsys):
    out_dir = tmp_path / "cost"
    code, out, err = run_cli(capsys, "cost", "--models", "mlp,transformer", *TINY, "--out", str(out_dir))
    assert code == 0, err
    cost = pd.read_csv(out_dir / "cost.csv")
    assert list(cost.columns) == COST_COLUMNS
    assert list(zip(cost["model"], cost["seq_len"], cost["batch_size"])) == [
        ("mlp", 16, 4), ("mlp", 32, 2), ("transformer", 16, 4), ("transformer", 32, 2)]
    assert (cost["status"] == "ok").all() and (cost["ms_per_step"] > 0).all()
    assert (cost.loc[cost["model"] == "transformer", "attention_flops"] > 0).all()
    fits = pd.read_csv(out_dir / "cost_fit.csv")
    assert list(fits.columns) == FIT_COLUMNS and list(fits["model"]) == ["mlp", "transformer"]
    assert (fits["n_points"] == 2).all()
    for stem in ("cost_time", "cost_memory", "cost_flops", "cost_attention_share"):
        for fmt in ("png", "svg"):
            assert (out_dir / f"{stem}.{fmt}").stat().st_size > 1000
    assert "transformer" in out and "exponents" in out
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return  # the Parquet copies are optional (the `parquet` extra); CI installs it
    assert pd.read_parquet(out_dir / "cost.parquet").equals(cost)
    assert len(pd.read_parquet(out_dir / "cost_fit.parquet")) == 2


def assert_refused(tmp_path, capsys, args: list[str], message: str) -> None:
    """`membench cost` with `args` (after a valid base) exits 2 with one error line holding `message`, and
    writes nothing."""
    out_dir = tmp_path / "never"
    base = ["--models", "mlp", "--lengths", "16"]
    code, out, err = run_cli(capsys, "cost", *base, *args, "--out", str(out_dir))
    assert code == 2
    assert err.startswith("membench: error: ") and err.count("\n") == 1 and message in err
    assert not out_dir.exists()


@pytest.mark.parametrize("flag, value", [("--lengths", "0,16"), ("--lengths", "-64"), ("--lengths", "64,abc"),
                                         ("--batch-tokens", "0"), ("--repeats", "none"), ("--threads", "0")])
def test_a_count_that_is_not_a_positive_integer_is_refused(tmp_path, capsys, flag, value):
    assert_refused(tmp_path, capsys, [flag, value], f"{flag} must be a positive integer")


@pytest.mark.parametrize("args, message", [
    (["--models", "lstn"], "did you mean 'lstm'"),
    (["--models", ","], "--models needs at least one family"),
    (["--lengths", "256", "--max-length", "128"], "above --max-length 128"),
    (["--time-cap", "-1"], "--time-cap must be a positive number"),
    (["--device", "tpu"], "--device must be cpu, cuda or cuda:N"),
    (["--d-model", "10", "--models", "transformer"], "model transformer cannot be built with --d-model 10"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    assert_refused(tmp_path, capsys, args, message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_unavailable_device_is_refused(tmp_path, capsys):
    code, _, err = run_cli(capsys, "cost", "--models", "mlp", "--device", "cuda", "--out", str(tmp_path / "x"))
    assert code == 2 and "no CUDA device" in err and not (tmp_path / "x").exists()


def test_out_must_be_a_directory(tmp_path, capsys):
    path = tmp_path / "file.txt"
    path.write_text("keep me")
    code, _, err = run_cli(capsys, "cost", "--models", "mlp", "--lengths", "16", "--out", str(path))
    assert code == 2 and "not a directory" in err and path.read_text() == "keep me"


def test_the_installed_command_exits_2():
    command = [sys.executable, "-m", "membench.runners", "cost", "--models", "transformr", "--out", "unused"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("membench: error: unknown model 'transformr'") and done.stderr.count("\n") == 1
    assert "did you mean 'transformer'" in done.stderr and not done.stdout
