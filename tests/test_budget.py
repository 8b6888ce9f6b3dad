"""Convergence-aware budgets: why a trial stopped (stop_reason) and whether it stopped still improving
(under_trained), and how the reports flag it."""

from __future__ import annotations

import pandas as pd
import pytest

from membench.runners.commands.compare import side_by_side
from membench.runners.reporting.leaderboard import build_leaderboard, leaderboard_markdown
from membench.runners.schema import RUNS_COLUMNS
from membench.runners.trial import EvalSlice, TrialConfig, run_trial
from tests.sweeps import trial


def config(**change) -> TrialConfig:
    fields = dict(task="associative_recall", task_params={"vocab_size": 16}, model="mlp", model_params={},
                  d_model=16, n_layers=1, train_len=16, seed=0, lr=1e-2, batch_size=16, steps=400, eval_every=5,
                  log_every=5, eval_slices=(EvalSlice("L16", 16, 32),))
    return TrialConfig(**{**fields, **change})


def outcome(**change) -> pd.Series:
    return pd.DataFrame(run_trial(config(**change))["runs"]).iloc[0]


def test_plateau_stops_a_trial_that_stopped_improving():
    row = outcome(budget="plateau", patience=2, min_delta=0.05)  # the mlp cannot recall: it plateaus at once
    assert row["stop_reason"] == "plateau" and not row["under_trained"]
    assert row["steps"] < 400


def test_no_plateau_stop_comes_before_min_steps():
    """The same hopeless trial as above, told to wait: it stops on the plateau at the first evaluation from
    step 60 on, not before (evaluations every 5 steps); the threshold is not held back."""
    early = outcome(budget="plateau", patience=2, min_delta=0.05)
    row = outcome(budget="plateau", patience=2, min_delta=0.05, min_steps=60)
    assert early["steps"] < 60 and row["stop_reason"] == "plateau" and row["steps"] == 60
    assert outcome(threshold=0.01, min_steps=60)["steps"] == 5


def test_the_threshold_is_a_reason_too():
    row = outcome(threshold=0.01)
    assert row["stop_reason"] == "threshold" and not row["under_trained"] and row["steps"] == 5


def test_a_trial_stopped_by_its_budget_while_improving_is_under_trained():
    row = outcome(model="lstm", task="copy", task_params={}, train_len=8, eval_slices=(EvalSlice("L8", 8, 32),),
                  steps=10, min_delta=0.0, patience=100)  # any evaluation that does not fall counts as progress
    assert row["stop_reason"] == "budget" and row["under_trained"] and row["accuracy"] < 0.99
    capped = outcome(time_cap=1e-6)
    assert capped["stop_reason"] == "time_cap" and capped["status"] == "timeout"


def test_budget_fields_leave_earlier_trial_ids_alone_and_are_validated():
    assert config().trial_id == config(budget="fixed", patience=5, min_delta=0.01, min_steps=0).trial_id
    assert config(min_steps=100).trial_id != config().trial_id
    assert config(budget="plateau").trial_id != config().trial_id
    with pytest.raises(ValueError, match="budget must be one of fixed, plateau"):
        config(budget="forever")


def test_reports_flag_under_trained_cells():
    rows = trial("copy", "lstm", 64, 0.7) + trial("copy", "gru", 64, 0.95)
    for row in rows:
        row.update(stop_reason="budget", under_trained=row["model"] == "lstm")
    runs = pd.DataFrame(rows, columns=RUNS_COLUMNS)
    board, tasks = build_leaderboard(runs)
    assert board.set_index("model")["under_trained_cells"].to_dict() == {"lstm": 1, "gru": 0}
    page = leaderboard_markdown(board, tasks, runs)
    assert "1 under-trained cell(s)" in page and "**1 cell(s) are under-trained**" in page
    table = side_by_side(runs, ["lstm", "gru"])
    assert "0.700*" in table and "0.950*" not in table and "* under-trained" in table


def test_reports_flag_a_cell_that_a_longer_length_trained_for_more_steps_beats():
    """A flat curve escapes the under-trained flag; a longer length of the family doing better with more steps
    does not: n_back's deltanet sat at 0.67 after 500 steps at 64 and reached 0.97 after 1,000 at 256."""
    def rows(model, accuracies, steps):
        out = [r for length, acc in zip((64, 128, 256), accuracies) for r in trial("n_back", model, length, acc)]
        for row in out:
            row.update(stop_reason="budget", steps=steps[row["train_len"]])
        return out

    longer_trained = {64: 500, 128: 500, 256: 1000}
    runs = pd.DataFrame(rows("lstm", (0.67, 0.68, 0.97), longer_trained)
                        + rows("gru", (0.67, 0.68, 0.97), dict.fromkeys(longer_trained, 1000))  # same budgets
                        + rows("mlp", (0.67, 0.75, 0.76), longer_trained), columns=RUNS_COLUMNS)  # gains < 0.1
    board, tasks = build_leaderboard(runs)
    assert board.set_index("model")["outdone_cells"].to_dict() == {"lstm": 2, "gru": 0, "mlp": 0}
    page = leaderboard_markdown(board, tasks, runs)
    assert "2 cell(s) beaten at a longer length" in page and "**2 cell(s) are beaten at a longer length**" in page
    assert "beaten at a longer length" not in leaderboard_markdown(*build_leaderboard(runs[runs["model"] != "lstm"]),
                                                                    runs)
