"""The leaderboard from synthetic tables with hand-computed values: horizon, mean accuracy, score, rank,
failed and missing trials, deterministic files, and one-line errors for bad directories."""

from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest

from membench.runners.errors import UsageError
from membench.runners.reporting.leaderboard import build_leaderboard, horizon, write_leaderboard
from membench.runners.reporting.results import read_results, task_labels
from membench.runners.schema import RUNS_COLUMNS
from tests.sweeps import NAN, PARAMS, known_runs, trial, write_sweep


def test_horizon_is_the_longest_length_at_or_above_threshold():
    assert horizon([64, 128, 256], [1.0, 0.95, 0.5]) == 128
    assert horizon([64, 128, 256], [0.9, 0.89, 0.95]) == 256  # not required to be monotone
    assert horizon([64, 128], [0.5, 0.899]) == 0
    assert horizon([], []) == 0


def test_values_computed_by_hand(tmp_path):
    board, tasks = build_leaderboard(read_results(write_sweep(tmp_path)).runs)
    assert tasks == ["copy", "recall"]
    assert board["model"].tolist() == ["lstm", "gru", "mlp"] and board["rank"].tolist() == [1, 2, 3]
    row = board.set_index("model")
    # copy: lstm 1.0/0.95/0.5; gru 0.9/0.89/0.95; mlp 0.1 everywhere
    assert row.loc["lstm", "copy horizon"] == 128 and row.loc["lstm", "copy mean_accuracy"] == pytest.approx(2.45 / 3)
    assert row.loc["gru", "copy horizon"] == 256 and row.loc["gru", "copy mean_accuracy"] == pytest.approx(2.74 / 3)
    assert row.loc["mlp", "copy horizon"] == 0 and row.loc["mlp", "copy mean_accuracy"] == pytest.approx(0.1)
    # recall: lstm 64 -> seeds 1.0, 0.8 = 0.9 (>= 0.9); 128 -> 0.6 and an oom seed counted 0 = 0.3
    assert row.loc["lstm", "recall horizon"] == 64 and row.loc["lstm", "recall mean_accuracy"] == pytest.approx(0.6)
    # gru at 64: the lr=3e-3 config (0.95, 0.85 -> 0.9) beats lr=1e-3 (0.7); 128 missing counts 0
    assert row.loc["gru", "recall horizon"] == 64 and row.loc["gru", "recall mean_accuracy"] == pytest.approx(0.45)
    assert row.loc["mlp", "recall horizon"] == 0 and row.loc["mlp", "recall mean_accuracy"] == pytest.approx(0.2)
    assert row.loc["lstm", "score"] == pytest.approx((2.45 / 3 + 0.6) / 2)
    assert row.loc["gru", "score"] == pytest.approx((2.74 / 3 + 0.45) / 2)
    assert row.loc["mlp", "score"] == pytest.approx(0.15)
    # flags, params, and train time summed over trials (not over their several eval rows; failed = NaN seconds)
    assert (row.loc["lstm", "failed_trials"], row.loc["lstm", "missing_cells"]) == (1, 0)
    assert (row.loc["gru", "failed_trials"], row.loc["gru", "missing_cells"]) == (0, 1)
    assert row.loc["lstm", "trials"] == 7 and row.loc["lstm", "train_seconds"] == pytest.approx(12.0)
    assert row.loc["gru", "trials"] == 7 and row.loc["gru", "train_seconds"] == pytest.approx(14.0)
    assert row.loc["gru", "params"] == PARAMS["gru"]


def test_ties_break_on_horizon_then_params_then_name():
    rows = []
    rows += trial("copy", "lstm", 64, 1.0) + trial("copy", "lstm", 128, 0.5)  # mean 0.75, horizon 64
    rows += trial("copy", "gru", 64, 0.5) + trial("copy", "gru", 128, 1.0)  # mean 0.75, horizon 128
    rows += trial("copy", "mlp", 64, 0.5) + trial("copy", "mlp", 128, 1.0)  # same as gru, fewer params
    board, _ = build_leaderboard(pd.DataFrame(rows, columns=RUNS_COLUMNS))
    assert board["model"].tolist() == ["mlp", "gru", "lstm"]
    reversed_board, _ = build_leaderboard(pd.DataFrame(rows[::-1], columns=RUNS_COLUMNS))
    assert reversed_board.equals(board)


def test_a_family_that_failed_everywhere_scores_zero_and_is_flagged():
    rows = trial("copy", "gru", 64, 0.95) + trial("copy", "lstm", 64, NAN, status="diverged")
    board, _ = build_leaderboard(pd.DataFrame(rows, columns=RUNS_COLUMNS))
    lstm = board.set_index("model").loc["lstm"]
    assert lstm["score"] == 0 and lstm["copy horizon"] == 0 and lstm["failed_trials"] == 1
    assert lstm["train_seconds"] == 0 and board["model"].tolist() == ["gru", "lstm"]


def test_a_timed_out_trial_counts_with_its_accuracy_and_is_flagged(tmp_path):
    # the docstring's example: seeds at 0.9 (ok), 0.6 (timeout, still evaluated) and an oom -> (0.9 + 0.6 + 0) / 3
    timed_out = trial("copy", "gru", 64, 0.6, seed=1)
    for row in timed_out:
        row.update(status="timeout", error="time cap 10s reached")
    rows = (trial("copy", "gru", 64, 0.9, seed=0) + timed_out + trial("copy", "gru", 64, NAN, seed=2, status="oom")
            + trial("copy", "lstm", 64, NAN, seed=0, status="timeout"))  # a timeout never evaluated counts 0
    runs = pd.DataFrame(rows, columns=RUNS_COLUMNS)
    board, _ = build_leaderboard(runs)
    row = board.set_index("model")
    assert row.loc["gru", "copy mean_accuracy"] == pytest.approx(0.5)
    assert (row.loc["gru", "failed_trials"], row.loc["gru", "timeout_trials"]) == (1, 1)
    assert row.loc["lstm", "score"] == 0 and row.loc["lstm", "timeout_trials"] == 1
    (md, _), _ = write_leaderboard(read_results(write_sweep(tmp_path, runs)))
    assert re.search(r"\| 0\.500 ±0\.\d{3} \| - / 0\.500 ±0\.\d{3} \| 4,000 \| 4\.0 \| 1 failed trial\(s\); "
                     r"1 timed-out trial\(s\) \|", md.read_text())


def test_a_slice_failing_alone_does_not_fail_its_trial():
    rows = trial("copy", "gru", 64, 0.95)
    rows[2].update(status="oom", accuracy=NAN, error="out of memory")  # the 4x slice ran out of memory
    board, _ = build_leaderboard(pd.DataFrame(rows, columns=RUNS_COLUMNS))
    assert board.loc[0, "failed_trials"] == 0 and board.loc[0, "copy horizon"] == 64


def test_task_variants_get_their_own_columns():
    runs = pd.DataFrame(
        trial("recall", "gru", 64, 1.0, task_params=json.dumps({"num_kv_pairs": 4, "vocab": 32}))
        + trial("recall", "gru", 64, 0.5, task_params=json.dumps({"num_kv_pairs": 16, "vocab": 32})),
        columns=RUNS_COLUMNS,
    )
    assert sorted(task_labels(runs).unique()) == ["recall[num_kv_pairs=16]", "recall[num_kv_pairs=4]"]
    runs["task"] = task_labels(runs)
    board, tasks = build_leaderboard(runs)
    assert tasks == ["recall[num_kv_pairs=16]", "recall[num_kv_pairs=4]"]
    assert board.loc[0, "recall[num_kv_pairs=4] horizon"] == 64 and board.loc[0, "score"] == pytest.approx(0.75)


def test_files_are_written_and_stable(tmp_path):
    results = read_results(write_sweep(tmp_path))
    (md, csv), _ = write_leaderboard(results)
    first = md.read_bytes(), csv.read_bytes()
    write_leaderboard(read_results(tmp_path))
    assert (md.read_bytes(), csv.read_bytes()) == first
    text = md.read_text()
    assert "| 1= | lstm | 0.708 ±0.100 | 128 / 0.817 | 64 / 0.600 ±0.200 | 5,000 | 12.0 | 1 failed trial(s) |" in text
    assert "| 1= | gru | 0.682 ±0.013 |" in text  # its interval overlaps lstm's: tied
    assert "| 3 | mlp | 0.150 | - / 0.100 | - / 0.200 |" in text
    table = pd.read_csv(csv)
    assert table.columns[:3].tolist() == ["rank", "model", "score"]
    assert table["score"].tolist() == [0.7083, 0.6817, 0.15]
    assert not list(tmp_path.glob(".tmp-*"))  # no temporary file left behind


@pytest.mark.parametrize("case", ["missing", "file", "empty_dir", "empty_runs", "header_only", "bad_columns",
                                  "bad_lags"])
def test_bad_directories_raise_a_usage_error(tmp_path, case):
    target = tmp_path / "out"
    if case == "file":
        target.write_text("x")
    elif case != "missing":
        target.mkdir()
    if case == "empty_runs":
        (target / "runs.csv").write_text("")
    elif case == "header_only":
        (target / "runs.csv").write_text(",".join(RUNS_COLUMNS) + "\n")
    elif case == "bad_columns":
        (target / "runs.csv").write_text("trial_id,model\n1,lstm\n")
    elif case == "bad_lags":
        write_sweep(target)
        (target / "lags.csv").write_text("trial_id,bucket\n1,2\n")
    with pytest.raises(UsageError) as info:
        read_results(target)
    assert str(target) in str(info.value) and "\n" not in str(info.value)


def test_nan_safe_number_formatting_in_csv(tmp_path):
    rows = trial("copy", "gru", 64, 0.95) + trial("copy", "lstm", 64, NAN, status="timeout")
    directory = write_sweep(tmp_path, pd.DataFrame(rows, columns=RUNS_COLUMNS))
    (_, csv), _ = write_leaderboard(read_results(directory))
    assert "nan" not in csv.read_text().lower()
    assert math.isclose(pd.read_csv(csv).set_index("model").loc["gru", "score"], 0.95)


# --- seeds and intervals -------------------------------------------------------------------------------
def seeded(model: str, accuracies) -> list[dict]:
    return [row for seed, acc in enumerate(accuracies) for row in trial("copy", model, 64, acc, seed=seed)]


def test_intervals_over_seeds_are_reproducible_and_contain_the_mean():
    runs = pd.DataFrame(seeded("lstm", [0.90, 0.94, 0.98]) + seeded("gru", [0.2, 0.3, 0.25]), columns=RUNS_COLUMNS)
    board, _ = build_leaderboard(runs)
    again, _ = build_leaderboard(runs.sample(frac=1.0, random_state=1))  # row order changes nothing
    lstm = board.set_index("model").loc["lstm"]
    assert lstm["seeds"] == 3 and lstm["score_ci_low"] < lstm["score"] < lstm["score_ci_high"]
    assert 0.89 <= lstm["score_ci_low"] <= 0.92 and 0.96 <= lstm["score_ci_high"] <= 0.98
    pd.testing.assert_frame_equal(board, again)
    assert list(board["tied_rank"]) == [1, 2]  # far apart: ranked apart


def test_families_whose_score_intervals_overlap_are_tied(tmp_path):
    runs = pd.DataFrame(seeded("lstm", [0.5, 0.9, 0.7]) + seeded("gru", [0.6, 0.8, 0.65]) + seeded("mlp", [0.1, 0.1]),
                        columns=RUNS_COLUMNS)
    board, _ = build_leaderboard(runs)
    assert list(board["model"]) == ["lstm", "gru", "mlp"] and list(board["tied_rank"]) == [1, 1, 3]
    (md, _), table = write_leaderboard(read_results(write_sweep(tmp_path, runs)))
    assert "| 1= | lstm |" in table and "| 1= | gru |" in table and "| 3 | mlp |" in table
    assert "bootstrap interval over seeds" in md.read_text()


def test_one_seed_has_no_interval_and_says_so(tmp_path):
    board, _ = build_leaderboard(known_runs().query("seed == 0"))
    assert board["score_ci_low"].isna().all() and (board["tied_rank"] == board["rank"]).all()
    (md, _), _ = write_leaderboard(read_results(write_sweep(tmp_path, known_runs().query("seed == 0"))))
    assert "One seed per cell: no confidence intervals" in md.read_text() and "±" not in md.read_text()
