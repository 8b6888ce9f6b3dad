"""Scaled accuracy, (acc - chance) / (1 - chance) as Grazzi et al. (2025) report it: in every runs row, and in
the leaderboard beside the raw accuracy wherever the task's chance level is not near 0."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from membench.memtasks import get_task
from membench.runners.metrics import scaled_accuracy
from membench.runners.reporting.leaderboard import build_leaderboard, leaderboard_markdown, task_chance
from membench.runners.schema import RUNS_COLUMNS, cell_problems
from membench.runners.trial import EvalSlice, TrialConfig, run_trial
from tests.sweeps import trial


def test_scaled_accuracy_puts_chance_at_zero_and_perfect_at_one():
    assert scaled_accuracy(0.5, 0.5) == 0.0 and scaled_accuracy(1.0, 0.5) == 1.0
    assert scaled_accuracy(0.25, 0.5) == -0.5  # below chance is negative, not clipped
    assert scaled_accuracy(0.3, 0.0) == 0.3  # an open answer set: the accuracy itself
    assert math.isnan(scaled_accuracy(1.0, 1.0))


def test_every_runs_row_carries_the_scaled_accuracy_of_its_slice_task():
    """delayed_match answers MATCH or NONMATCH: chance 0.5, so scaled = 2 acc - 1."""
    assert get_task("delayed_match").chance_level == 0.5
    config = TrialConfig(task="delayed_match", task_params={}, model="mlp", model_params={}, d_model=8, n_layers=1,
                         train_len=16, seed=0, lr=1e-2, batch_size=8, steps=5, eval_every=5, log_every=5,
                         eval_slices=(EvalSlice("L16", 16, 16), EvalSlice("L32", 32, 16)))
    rows = run_trial(config)["runs"]
    for row in rows:
        assert row["status"] == "ok" and row["scaled_accuracy"] == pytest.approx(2 * row["accuracy"] - 1)
    table = pd.DataFrame(rows, columns=RUNS_COLUMNS)
    assert (cell_problems("runs", table) == "").all()  # a negative scaled accuracy is a valid cell
    assert (cell_problems("runs", table.assign(scaled_accuracy="high")) != "").all()


def board_rows(chance_level: bool) -> pd.DataFrame:
    """parity (chance 0.5) and recall (chance 1/64) for lstm and gru; the chance in its own column, or only
    recoverable from the two accuracies."""
    rows = []
    for task, chance in (("parity", 0.5), ("recall", 1 / 64)):
        for model, accuracy in (("lstm", 0.9), ("gru", 0.6)):
            for row in trial(task, model, 64, accuracy):
                row["scaled_accuracy"] = scaled_accuracy(row["accuracy"], chance)
                if chance_level:
                    row["chance_level"] = chance
                rows.append(row)
    return pd.DataFrame(rows, columns=list(dict.fromkeys([*RUNS_COLUMNS, "chance_level"])))  # NaN: not given


@pytest.mark.parametrize("chance_level", [True, False], ids=["chance column", "recovered"])
def test_the_leaderboard_shows_scaled_accuracy_where_chance_is_not_near_zero(chance_level):
    runs = board_rows(chance_level)
    assert task_chance(runs) == pytest.approx({"parity": 0.5, "recall": 1 / 64})
    board, tasks = build_leaderboard(runs)
    board = board.set_index("model")
    assert board.loc["gru", "parity mean_scaled_accuracy"] == pytest.approx(0.2)  # (0.6 - 0.5) / 0.5
    assert board.loc["lstm", "parity mean_scaled_accuracy"] == pytest.approx(0.8)
    assert "recall mean_scaled_accuracy" not in board.columns  # chance 1/64: scaled would be ~acc
    page = leaderboard_markdown(board.reset_index(), tasks, runs)
    assert "- / 0.600 [0.20]" in page and "64 / 0.900 [0.80]" in page
    assert "[s] is the scaled accuracy" in page and "(parity)" in page


def test_a_table_without_chance_shows_no_scaled_accuracy():
    runs = pd.DataFrame(trial("parity", "lstm", 64, 0.9), columns=RUNS_COLUMNS).drop(columns="scaled_accuracy")
    board, tasks = build_leaderboard(runs)
    assert not [c for c in board.columns if "scaled" in c]
    assert "[s]" not in leaderboard_markdown(board, tasks, runs)
