"""Error rates with Clopper-Pearson intervals (runners/reporting/error_rates.py), the runs.csv `scored`
column they read, and an evaluation of 1e5 sequences."""

from __future__ import annotations

import math
from fractions import Fraction

import pandas as pd
import pytest
import torch

from membench.memtasks import eval_seed, get_task
from membench.models import build_model
from membench.runners import metrics
from membench.runners.errors import UsageError
from membench.runners.reporting.error_rates import (
    ERROR_COLUMNS,
    clopper_pearson,
    error_rate_table,
    log_binomial_cdf,
    write_error_rates,
)
from membench.runners.reporting.results import read_results
from membench.runners.spec import load_spec
from membench.runners.sweep import run_sweep
from tests.sweeps import write_sweep


# --- the interval -------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 7, 100, 1000, 100_000])
def test_no_errors_gives_the_rule_of_three_bound_exactly(n):
    low, high = clopper_pearson(0, n)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / n), rel=1e-9)
    low, high = clopper_pearson(n, n)  # every prediction wrong: the mirror image
    assert high == 1.0 and low == pytest.approx(0.025 ** (1 / n), rel=1e-9)


@pytest.mark.parametrize("errors, n, expected", [
    (5, 100, (0.01643197, 0.11283491)),  # R: binom.test(5, 100)$conf.int
    (1, 10, (0.002528579, 0.445016117)),
    (50, 100, (0.3983211, 0.6016789)),
])
def test_known_intervals(errors, n, expected):
    assert clopper_pearson(errors, n) == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("errors, n", [(1, 20), (3, 40), (17, 60)])
def test_the_bounds_solve_their_defining_equations_in_exact_arithmetic(errors, n):
    low, high = clopper_pearson(errors, n)

    def cdf(k: int, p: float) -> float:  # P(X <= k), summed exactly in rationals
        p = Fraction(p)
        return float(sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1)))

    assert cdf(errors, high) == pytest.approx(0.025, rel=1e-9)
    assert 1 - cdf(errors - 1, low) == pytest.approx(0.025, rel=1e-9)
    assert low < errors / n < high


def test_symmetry_and_the_log_tail_on_huge_counts():
    low, high = clopper_pearson(3, 50)
    mirror_low, mirror_high = clopper_pearson(47, 50)
    assert (low, high) == pytest.approx((1 - mirror_high, 1 - mirror_low), abs=1e-12)
    # a tail of 1e-300 still has a finite logarithm
    assert math.isfinite(log_binomial_cdf(0, 10**7, 0.01)) and log_binomial_cdf(0, 10**7, 0.01) < -1e5
    low, high = clopper_pearson(3000, 10**6)
    assert 0.0028 < low < 0.003 < high < 0.0032


def test_bad_counts_are_rejected():
    with pytest.raises(ValueError, match="errors"):
        clopper_pearson(5, 4)
    with pytest.raises(ValueError, match="n"):
        clopper_pearson(0, 0)


# --- the table ----------------------------------------------------------------------------------
def runs_rows() -> pd.DataFrame:
    base = {"trial_id": "t1", "task": "flip_flop", "model": "lstm", "d_model": 16, "train_len": 32, "seed": 0,
            "lr": 0.01, "status": "ok"}
    return pd.DataFrame([
        {**base, "slice": "L32", "eval_len": 32, "accuracy": 1.0, "scored": 1000},
        {**base, "slice": "sparse", "eval_len": 32, "accuracy": 0.95, "scored": 100},
        {**base, "slice": "L64", "eval_len": 64, "accuracy": math.nan, "scored": math.nan, "status": "oom"},
        {**base, "trial_id": "t2", "task": "copy", "slice": "L32", "eval_len": 32, "accuracy": 0.5, "scored": 64},
    ])


def test_the_table_counts_errors_of_error_rate_tasks_only():
    table = error_rate_table(runs_rows())
    assert list(table.columns) == ERROR_COLUMNS
    assert list(table["slice"]) == ["L32", "sparse"]  # copy does not report them; the oom slice was not scored
    assert list(table["errors"]) == [0, 5] and list(table["reads"]) == [1000, 100]
    assert table["error_rate"].tolist() == [0.0, 0.05]
    assert table.loc[1, ["ci_low", "ci_high"]].tolist() == pytest.approx([0.01643197, 0.11283491], abs=1e-7)
    assert table.loc[0, "ci_high"] == pytest.approx(1 - 0.025 ** (1 / 1000))


def test_a_results_folder_without_the_scored_column_is_refused_in_one_line(tmp_path):
    """Every runs.csv membench writes has `scored`; a table without it is not a membench table."""
    write_sweep(tmp_path)
    runs = pd.read_csv(tmp_path / "runs.csv").drop(columns="scored")
    runs.to_csv(tmp_path / "runs.csv", index=False)
    with pytest.raises(UsageError, match=r"runs.csv in .* lacks column\(s\) scored; it must follow"):
        read_results(tmp_path)


def test_a_flip_flop_sweep_writes_error_rates_with_its_named_slices(tmp_path):
    """A tiny sweep end to end: runs.csv's `scored` is the number of reads in the eval set (recounted from
    the same seeds), and error_rates.csv/md hold every slice, sparse and dense included."""
    spec_file = tmp_path / "ff.toml"
    spec_file.write_text("""
device = "cpu"
steps = 5
eval_every = 5
batch_size = 16
d_model = 16
n_layers = 1
[tasks.flip_flop]
lengths = [16]
[[tasks.flip_flop.eval_slices]]
name = "L16"
seq_len = 16
[[tasks.flip_flop.eval_slices]]
name = "sparse"
seq_len = 16
params = { p_write = 0.01, p_read = 0.01 }
n_sequences = 40
[models.mlp]
""")
    out = tmp_path / "out"
    runs = run_sweep(load_spec(spec_file=str(spec_file)), out, progress=False)
    assert list(runs["slice"]) == ["L16", "sparse"] and (runs["status"] == "ok").all()
    sparse = get_task("flip_flop", p_write=0.01, p_read=0.01)
    reads = sum(int(sparse.sample(min(16, 40 - s), 16, eval_seed(0, i)).scored.sum())
                for i, s in enumerate(range(0, 40, 16)))
    assert int(runs.loc[runs["slice"] == "sparse", "scored"].iloc[0]) == reads
    written = write_error_rates(out)
    assert [p.name for p in written] == ["error_rates.csv", "error_rates.md"]
    table = pd.read_csv(out / "error_rates.csv")
    assert list(table["slice"]) == ["L16", "sparse"]
    assert (table["errors"] == (table["reads"] * (1 - runs["accuracy"])).round()).all()
    assert "| flip_flop | mlp |" in (out / "error_rates.md").read_text()


def test_no_error_rate_task_writes_nothing(tmp_path):
    runs_rows().query("task == 'copy'").to_csv(tmp_path / "runs.csv", index=False)
    assert write_error_rates(tmp_path) == [] and not (tmp_path / "error_rates.csv").exists()


# --- evaluation at scale --------------------------------------------------------------------------
def test_an_evaluation_of_1e5_sequences_finishes_and_counts_every_read():
    """1e5 flip-flop sequences through a tiny model, batched (as a spec's eval_sequences = 100000 asks)."""
    torch.manual_seed(0)
    task = get_task("flip_flop")
    model = build_model("mlp", task.vocab_size, d_model=8, n_layers=1)
    result = metrics.evaluate(model, task, 16, 100_000, 2048, seed=3, device=torch.device("cpu"))
    assert result.status == "ok"
    reads = sum(int(task.sample(min(2048, 100_000 - s), 16, eval_seed(3, i)).scored.sum())
                for i, s in enumerate(range(0, 100_000, 2048)))
    assert result.scored == reads > 100_000  # the forced last read, plus ~0.1 per instruction
    assert 0.0 <= result.accuracy <= 1.0
