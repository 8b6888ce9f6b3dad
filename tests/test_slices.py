"""The slice table (runners/reporting/slices.py) and the leaderboard's flag for trials evaluated on named slices
only."""

from __future__ import annotations

import math

import pandas as pd

from membench.runners.reporting.leaderboard import build_leaderboard
from membench.runners.reporting.slices import named_slice_rows, slice_table, write_slices
from membench.runners.schema import RUNS_COLUMNS, SLICE_CURVES_COLUMNS
from tests.helpers import run_cli
from tests.sweeps import known_runs, trial, write_sweep


def sliced_only(trial_rows: list[dict], accuracies: dict[str, float], steps_to_threshold: float) -> list[dict]:
    """A recipe-style trial: its plain rows replaced by named slices with these accuracies."""
    base = trial_rows[0]
    return [{**base, "trial_id": base["trial_id"] + "-recipe", "slice": name, "eval_len": int(name[1:].split("-")[0]),
             "accuracy": acc, "time_to_accuracy_steps": steps_to_threshold, "time_to_accuracy_seconds": 12.5,
             "time_to_accuracy_tokens": 1e6} for name, acc in accuracies.items()]


def recipe_runs() -> pd.DataFrame:
    slices = {"L64-kv4": 1.0, "L64-kv16": 0.995, "L256-kv64": 0.97}
    rows = sliced_only(trial("recall", "lstm", 64, 1.0, seed=0), slices, 200)
    rows += sliced_only(trial("recall", "gru", 64, 1.0, seed=0), {**slices, "L256-kv64": 0.999}, math.nan)
    return pd.DataFrame(rows, columns=RUNS_COLUMNS)


def test_the_table_has_a_row_per_trial_and_a_column_per_slice_in_spec_order():
    table = slice_table(recipe_runs())
    assert table["model"].tolist() == ["gru", "lstm"]
    slice_columns = [c for c in table.columns if c.startswith("L")]
    assert slice_columns == ["L64-kv4", "L64-kv16", "L256-kv64"]
    assert table.set_index("model").loc["lstm", "min"] == 0.97
    assert table.set_index("model").loc["gru", "L256-kv64"] == 0.999


def test_plain_rows_are_not_slices():
    runs = known_runs()
    assert set(named_slice_rows(runs)["slice"]) == {"L64-kv4", "L128-kv4", "L256-kv4"}
    assert slice_table(runs.iloc[0:0]).empty


def test_markdown_shows_time_to_accuracy_only_when_reached(tmp_path):
    (md, csv), _ = write_slices(recipe_runs(), tmp_path)
    text = md.read_text()
    lstm = next(line for line in text.splitlines() if "| lstm |" in line)
    gru = next(line for line in text.splitlines() if "| gru |" in line)
    assert "| 1.0000 | 0.9950 | 0.9700 | 0.9700 | 12.5 / 200 / 1,000,000 |" in lstm
    assert "| 0.9990 | 0.9950 |  |" in gru  # min 0.995, never reached the threshold
    assert len(pd.read_csv(csv)) == 2
    assert write_slices(known_runs().query("slice == 'L64'"), tmp_path / "none") == ([], "")


def test_the_leaderboard_flags_trials_with_no_plain_evaluation(tmp_path, capsys):
    board, _ = build_leaderboard(recipe_runs())
    assert board["unevaluated_trials"].tolist() == [1, 1] and (board["score"] == 0).all()
    assert (build_leaderboard(known_runs())[0]["unevaluated_trials"] == 0).all()
    mixed = write_sweep(tmp_path / "mixed", pd.concat([known_runs(), recipe_runs()], ignore_index=True))
    code, out, _ = run_cli(capsys, "charts", str(mixed))
    assert code == 0 and "| rank | model |" in out and "| recall | lstm |" in out
    assert "1 trial(s) with no plain evaluation at the trained length: see slices.md" in out
    assert (mixed / "slices.csv").is_file() and (mixed / "leaderboard.md").is_file()


def test_a_sweep_of_named_slices_only_gets_the_slice_table_alone(tmp_path, capsys):
    directory = write_sweep(tmp_path / "recipe", recipe_runs())
    code, out, _ = run_cli(capsys, "charts", str(directory))
    assert code == 0 and "named slices only: no leaderboard or other charts" in out and "| recall | gru |" in out
    assert (directory / "slices.md").is_file() and not (directory / "leaderboard.md").exists()
    assert not (directory / "charts").exists()


def test_slice_curves_are_drawn_for_the_trials_with_named_slices(tmp_path, capsys):
    runs = recipe_runs()
    directory = write_sweep(tmp_path / "recipe", runs)
    points = [{"trial_id": t, "task": "recall", "model": m, "d_model": 32, "train_len": 64, "seed": 0,
               "slice": name, "eval_len": 64, "step": step, "seconds": step / 10, "tokens": step * 512,
               "accuracy": min(1.0, step / 300)}
              for t, m in runs[["trial_id", "model"]].drop_duplicates().itertuples(index=False)
              for name in ("L64-kv4", "L64-kv16", "L256-kv64") for step in (100, 200, 300)]
    pd.DataFrame(points, columns=SLICE_CURVES_COLUMNS).to_csv(directory / "slice_curves.csv", index=False)
    code, out, _ = run_cli(capsys, "charts", str(directory))
    svg = (directory / "charts" / "slice_curves.svg").read_text()
    assert code == 0 and "slice_curves.png" in out
    assert all(text in svg for text in ("L64-kv4", "L256-kv64", "recall: gru d32 seed 0", "recall: lstm d32 seed 0"))
    first = (directory / "charts" / "slice_curves.svg").read_bytes()
    run_cli(capsys, "charts", str(directory))
    assert (directory / "charts" / "slice_curves.svg").read_bytes() == first  # byte-stable
