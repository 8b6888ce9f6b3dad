"""The leaderboard: one row per model family, computed from a sweep's `runs.csv` alone.

Definitions, for task t, family m and trained length L (a "cell"):

    trial accuracy  acc = token accuracy evaluated at the trained length (eval_len == train_len, plain
                    slice "L{L}"); a trial stopped by its time cap (status timeout) was still evaluated
                    and counts with that accuracy; 0 when the trial failed (oom, diverged, error) or
                    has no such row
    cell accuracy   a(m, t, L) = max over configs of the mean over seeds of acc, where a config is
                    (d_model, n_layers, lr, batch_size): the best learning rate or size of a sweep
                    wins, seeds are averaged; 0 when the sweep has no trial of the cell ("missing")
    horizon         H(m, t) = the longest L with a(m, t, L) >= 0.9 (RULER's "effective length"); 0 if none
    mean accuracy   A(m, t) = mean of a(m, t, L) over every length L trained on task t in the sweep
    score           S(m)    = mean over tasks of A(m, t)
    scaled          (A(m, t) - c_t) / (1 - c_t), c_t the task's chance level (runs.csv's chance_level, or
                    recovered from its accuracy and scaled_accuracy): beside A wherever c_t >= NEAR_ZERO_CHANCE,
                    since 0.55 means little on a task of two answers (chance 0.5) and much on one of 64
    rank            S descending; ties broken by the sum of horizons (descending), then fewer parameters,
                    then the family name

Worked example: one task trained at L = 64, 128, 256 with cell accuracies 1.0, 0.95, 0.5 gives
H = 128 and A = (1.0 + 0.95 + 0.5) / 3 = 0.8167; with a second task at A = 0.5 the score is 0.6583.
A failed trial counts as accuracy 0 in its seed mean, so failures never raise a family's score; the
family's `failed_trials` and `missing_cells` say how many cells were affected. A timed-out trial is not a
failure: it trained for less than its step budget and is scored on what it learnt (a time cap that a busy
machine hits must not erase a result), and `timeout_trials` flags it. Example: seeds at 0.9 (ok), 0.6
(timeout) and an oom give the cell (0.9 + 0.6 + 0) / 3 = 0.5, with 1 failed and 1 timed-out trial.

Every output is a pure function of the tables, formatted with fixed precision and written atomically, so
rebuilding it from the same tables gives identical bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from membench.models.pretrained import is_pretrained
from membench.runners.metrics import scaled_accuracy
from membench.runners.reporting.intervals import family_intervals, tie_groups
from membench.runners.reporting.results import (
    CONFIG_COLUMNS,
    Results,
    failure_status,
    is_plain_slice,
)
from membench.runners.reporting.text import fixed, markdown_table
from membench.runners.retrain import OUTDONE_BY
from membench.runners.tables import atomic_write_bytes

THRESHOLD = 0.9  # cell accuracy that counts as "remembered" for the horizon
NEAR_ZERO_CHANCE = 0.05  # a task whose chance level is below this shows no scaled accuracy: it would be ~acc
SCORED = ("ok", "timeout")  # trial statuses whose measured accuracy counts; any other counts 0
CELL_KEY = ["task", "model", "train_len"]


# --- trials, cells, leaderboard -------------------------------------------------------------------
def ordered(names, registered: list[str]) -> list[str]:
    """`names` in registry order first, then any unregistered names alphabetically."""
    names = set(names)
    return [n for n in registered if n in names] + sorted(names - set(registered))


def model_order(names) -> list[str]:
    from membench.models import list_models

    return ordered(names, list_models())


def task_order(names) -> list[str]:
    """Task labels in registry order of their base name, variants alphabetically within a task."""
    from membench.memtasks import list_tasks

    registered = list_tasks()
    rank = {name: i for i, name in enumerate(registered)}

    def key(label: str) -> tuple:
        base = label.split("[")[0].split(" ")[0]
        return (rank.get(base, len(registered)), base, label)

    return sorted(set(names), key=key)


def trial_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: its cell, config, params, costs, status and accuracy at the trained length.

    A trial's status is that of its plain row at the trained length (or the failure status of its rows,
    see runners/reporting/results.py, when it has no such row); a trial whose status is not in SCORED
    (ok, timeout) gets accuracy 0, and so does a trial without that row or without an accuracy in it
    (`evaluated` False).
    """
    plain = (runs["eval_len"] == runs["train_len"]) & is_plain_slice(runs)
    at_train = runs[plain].drop_duplicates("trial_id").set_index("trial_id")
    # the trial's status is its trained-length row's (a slice at 4x the length may fail on its own)
    status = runs.groupby("trial_id")["status"].agg(failure_status)
    status.update(at_train["status"])
    at_train = at_train.loc[at_train["status"].isin(SCORED), "accuracy"].dropna()
    first = runs.drop_duplicates("trial_id").set_index("trial_id")
    keep = ["task", "model", "train_len", "seed", *CONFIG_COLUMNS, "params", "train_seconds", "steps",
            "flops_per_step", "state_size", "peak_memory_mb"]
    trials = first[keep].copy()
    trials["status"] = status
    trials["under_trained"] = first["under_trained"].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))
    trials["evaluated"] = trials.index.isin(at_train.index) & trials["status"].isin(SCORED)
    trials["accuracy"] = np.where(trials["evaluated"], at_train.reindex(trials.index), 0.0)
    trials["config"] = trials[CONFIG_COLUMNS].astype(str).agg("|".join, axis=1)
    return trials.reset_index()


def cell_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, model, train_len) of the sweep's grid, including cells it is missing.

    The grid is every family crossed with every (task, trained length) that any family was trained at.
    Columns: task, model, train_len, accuracy (the best config's seed mean; 0 when missing), config (the
    chosen config), seeds (its trials), failed (its trials counted 0: status not in SCORED), timeouts (its
    timed-out trials, counted at their accuracy), under_trained (its trials stopped by the step budget or the
    time cap below the threshold while still improving: see runners/train.py), steps (the most steps a chosen
    trial trained), outdone (see `outdone`), status (the failure status of the chosen config's trials, or
    "missing").
    """
    by_config = trials.groupby([*CELL_KEY, "config"]).agg(
        accuracy=("accuracy", "mean"), seeds=("trial_id", "size"),
        failed=("status", lambda s: int((~s.isin(SCORED)).sum())),
        timeouts=("status", lambda s: int((s == "timeout").sum())),
        under_trained=("under_trained", lambda s: int(s.sum())),
        steps=("steps", "max"),
        status=("status", failure_status),
    ).reset_index()
    # the best config per cell; equal accuracies resolve to the first config, so the choice is stable
    by_config = by_config.sort_values([*CELL_KEY, "accuracy", "config"], ascending=[True, True, True, False, True])
    best = by_config.groupby(CELL_KEY).head(1).set_index(CELL_KEY)
    grid = [
        (task, model, length)
        for task, lengths in trials.groupby("task")["train_len"].unique().items()
        for model in trials["model"].unique()
        for length in lengths
    ]
    cells = best.reindex(pd.MultiIndex.from_tuples(grid, names=CELL_KEY))
    absent = cells["accuracy"].isna()
    cells.loc[absent, ["accuracy", "seeds", "failed", "timeouts", "under_trained"]] = 0
    cells.loc[absent, ["status", "config"]] = ["missing", ""]
    cells = cells.reset_index().astype({"seeds": int, "failed": int, "timeouts": int, "under_trained": int,
                                        "train_len": int})
    cells = cells.sort_values(CELL_KEY).reset_index(drop=True)
    cells["outdone"] = outdone(cells)
    return cells


def outdone(cells: pd.DataFrame) -> pd.Series:
    """Per cell of a cell table, whether a longer trained length of its task and family, trained for more steps,
    is more accurate by OUTDONE_BY or more. A longer sequence is no easier to remember, so the shorter cell's
    budget held it back, even where its curve had flattened too much for the under-trained flag (n_back's
    deltanet sat at 0.67 after 500 steps at length 64 and reached 0.97 after 1,000 at 256);
    `--retrain-under-trained` runs such cells again (runners/retrain.py, which compares step budgets).

        >>> cells = pd.DataFrame({"task": "n_back", "model": "deltanet", "train_len": [64, 128, 256],
        ...                       "accuracy": [0.67, 0.68, 0.97], "steps": [500, 500, 1000], "status": "ok"})
        >>> outdone(cells).tolist()
        [True, True, False]
    """
    run = cells[cells["status"] != "missing"]
    flags = pd.Series(False, index=cells.index)
    for _, family in run.groupby(["task", "model"]):
        for i, short in family.iterrows():
            longer = family[(family["train_len"] > short["train_len"]) & (family["steps"] > short["steps"])]
            flags[i] = bool((longer["accuracy"] >= short["accuracy"] + OUTDONE_BY).any())
    return flags


def chosen_trials(trials: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """The trials of each cell's chosen config: the ones whose accuracies the leaderboard averages."""
    keys = cells.loc[cells["status"] != "missing", [*CELL_KEY, "config"]]
    return trials.merge(keys, on=[*CELL_KEY, "config"])


def horizon(lengths: list[int], accuracies: list[float], threshold: float = THRESHOLD) -> int:
    """The longest length whose accuracy is >= threshold, 0 when none is.

    A tolerance of 1e-9 keeps seed means such as (0.95 + 0.85) / 2 = 0.8999999999999999 at the threshold.

    >>> horizon([64, 128, 256], [1.0, 0.95, 0.5])
    128
    """
    passing = [length for length, acc in zip(lengths, accuracies) if acc >= threshold - 1e-9]
    return int(max(passing)) if passing else 0


def task_chance(runs: pd.DataFrame) -> dict[str, float]:
    """Per task label: its chance level, from runs.csv's chance_level where the table has it, else recovered
    from rows with both accuracies (chance = (acc - scaled) / (1 - scaled)); tasks with neither are left out.

        >>> task_chance(pd.DataFrame({"task": ["parity", "parity", "copy"], "accuracy": [0.75, 1.0, 0.5],
        ...                           "scaled_accuracy": [0.5, 1.0, 0.5]}))
        {'copy': 0.0, 'parity': 0.5}
    """
    if "chance_level" in runs.columns and runs["chance_level"].notna().any():
        return runs.dropna(subset=["chance_level"]).groupby("task")["chance_level"].median().to_dict()
    if "scaled_accuracy" not in runs.columns:
        return {}
    rows = runs.dropna(subset=["accuracy", "scaled_accuracy"])
    rows = rows[(rows["scaled_accuracy"] - 1).abs() > 1e-9]
    chance = (rows["accuracy"] - rows["scaled_accuracy"]) / (1 - rows["scaled_accuracy"])
    return chance.groupby(rows["task"]).median().round(6).to_dict()


def build_leaderboard(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The leaderboard table (one row per family, sorted by rank) and the task labels in column order.

    Columns: rank, model, score, params, train_seconds, trials, failed_trials (counted 0), timeout_trials
    (counted at their accuracy), missing_cells, unevaluated_trials (no plain evaluation at the trained
    length, counted 0: see runners/reporting/slices.py), under_trained_cells, outdone_cells (see `outdone`),
    then per task "<task> horizon" and "<task> mean_accuracy" (and "<task> mean_scaled_accuracy" where its
    chance is not near 0), then seeds (the most seeds of any of its cells), score_ci_low / score_ci_high and
    per task "<task> mean_accuracy_ci_low" / "_ci_high" (95 % bootstrap intervals over seeds, empty with one seed: see
    runners/reporting/intervals.py), tied_rank (the rank of the first family it cannot be told apart from) and
    kind: "pretrained" for a `pretrained:` model (evaluated as it is, steps = 0), "trained" for a family.
    """
    trials = trial_table(runs)
    cells = cell_table(trials)
    tasks = task_order(cells["task"])
    chance = task_chance(runs)
    rows = []
    for model in model_order(cells["model"]):
        mine = cells[cells["model"] == model]
        mine_trials = trials[trials["model"] == model]
        row = {"model": model}
        per_task = {}
        for task in tasks:
            part = mine[mine["task"] == task].sort_values("train_len")
            per_task[f"{task} horizon"] = horizon(part["train_len"].tolist(), part["accuracy"].tolist())
            per_task[f"{task} mean_accuracy"] = float(part["accuracy"].mean())
            if chance.get(task, 0.0) >= NEAR_ZERO_CHANCE:
                per_task[f"{task} mean_scaled_accuracy"] = scaled_accuracy(per_task[f"{task} mean_accuracy"],
                                                                          chance[task])
        row["score"] = float(np.mean([per_task[f"{t} mean_accuracy"] for t in tasks]))
        row["params"] = int(mine_trials["params"].max()) if mine_trials["params"].notna().any() else 0
        row["train_seconds"] = float(np.nansum(mine_trials["train_seconds"].to_numpy(dtype=float)))
        row["trials"] = int(len(mine_trials))
        row["failed_trials"] = int((~mine_trials["status"].isin(SCORED)).sum())
        row["timeout_trials"] = int((mine_trials["status"] == "timeout").sum())
        row["missing_cells"] = int((mine["status"] == "missing").sum())
        row["under_trained_cells"] = int((mine["under_trained"] > 0).sum())
        row["outdone_cells"] = int(mine["outdone"].sum())
        # scored, but without a plain row at the trained length (e.g. only named slices): counted 0
        row["unevaluated_trials"] = int((mine_trials["status"].isin(SCORED) & ~mine_trials["evaluated"]).sum())
        row["_horizons"] = sum(per_task[f"{t} horizon"] for t in tasks)
        rows.append({**row, **per_task})
    board = pd.DataFrame(rows)
    board = board.sort_values(["score", "_horizons", "params", "model"], ascending=[False, False, True, True])
    board.insert(0, "rank", range(1, len(board) + 1))
    board = board.drop(columns="_horizons").reset_index(drop=True)
    seeds = cells[cells["status"] != "missing"].groupby("model")["seeds"].max()
    board["seeds"] = board["model"].map(seeds).fillna(0).astype(int)
    board = board.merge(family_intervals(chosen_trials(trials, cells), cells, tasks), on="model", how="left")
    board["tied_rank"] = tie_groups(board)
    board["kind"] = board["model"].map(lambda m: "pretrained" if is_pretrained(m) else "trained")
    return board, tasks


# --- writing ---------------------------------------------------------------------------------------
def leaderboard_csv(board: pd.DataFrame) -> str:
    """CSV text with fixed float precision (4 digits for accuracies, 2 for seconds)."""
    out = board.copy()
    for column in out.columns:
        if column.startswith("score") or column.endswith(("mean_accuracy", "_ci_low", "_ci_high")):
            out[column] = out[column].map(lambda v: fixed(v, 4))
        elif column == "train_seconds":
            out[column] = out[column].map(lambda v: fixed(v, 2))
    return out.to_csv(index=False, lineterminator="\n")


def _distinct(runs: pd.DataFrame, column: str) -> str:
    values = runs[column].dropna().astype(str).unique() if column in runs.columns else []
    return ", ".join(sorted(values)) or "unknown"


def _lengths_line(lengths: pd.Series, tasks: list[str]) -> str:
    """'64, 128 (every task)' when the tasks share their lengths, else 'copy: 64, 128; recall: 64'."""
    text = {t: ", ".join(str(int(x)) for x in sorted(lengths[t])) for t in tasks}
    if len(set(text.values())) == 1:
        return f"{text[tasks[0]]} (every task)"
    return "; ".join(f"{t}: {v}" for t, v in text.items())


def leaderboard_markdown(board: pd.DataFrame, tasks: list[str], runs: pd.DataFrame) -> str:
    """The leaderboard as a Markdown page: the definitions, the sweep's lengths and provenance, the table."""
    lengths = runs.groupby("task")["train_len"].unique()
    lines = [
        "# membench leaderboard",
        "",
        f"Per task, **horizon** is the longest trained length at which accuracy at that length is >= {THRESHOLD} "
        "(\"-\" when there is none) and **acc** is the accuracy at the trained length, averaged over the trained "
        "lengths. **score** is the mean of acc over tasks. Accuracy is the seed mean of the best config per cell; "
        "failed or missing trials count as 0 and are flagged; a trial stopped by its time cap counts with the "
        "accuracy it reached and is flagged as timed out.",
        "",
        "Trained lengths: " + _lengths_line(lengths, tasks) + ". **params** is the family's largest model "
        "(vocabularies differ by task); **train time** sums train_seconds over its trials.",
        "",
        seeds_line(board),
        "",
        under_trained_line(board),
        "",
        *([outdone_line(board), ""] if outdone_line(board) else []),
        *([scaled_line(board, tasks), ""] if any(f"{t} mean_scaled_accuracy" in board for t in tasks) else []),
        *([PRETRAINED_LINE, ""] if (board["kind"] == "pretrained").any() else []),
        f"Device: {_distinct(runs, 'device')}; commit: {_distinct(runs, 'git_commit')}; "
        f"torch: {_distinct(runs, 'torch_version')}.",
        "",
    ]
    return "\n".join(lines) + "\n" + leaderboard_table(board, tasks) + "\n"


PRETRAINED_LINE = (
    "Models flagged **pretrained** (`pretrained:` names) were evaluated as they are, reading each task as text "
    "(steps = 0, no training: their train time is 0); the others were trained on each task. A pretrained model's "
    "lengths are the task's symbols; the tokens it read are runs.csv's context_tokens, and a trial skipped beyond "
    "its positions counts as failed.")


def with_interval(value: float, low: float, high: float) -> str:
    """'0.940 ±0.040' (the interval's half-width), or '0.940' without an interval."""
    return f"{value:.3f}" if np.isnan(low) else f"{value:.3f} ±{(high - low) / 2:.3f}"


def under_trained_line(board: pd.DataFrame) -> str:
    """The footnote on under-trained cells: how many, and what it means."""
    n = int(board["under_trained_cells"].sum())
    if not n:
        return "No cell is under-trained: every trial stopped at the threshold, on a plateau, or no longer improving."
    return (f"**{n} cell(s) are under-trained**: their trials stopped at the step budget or the time cap below "
            f"the threshold while their accuracy was still improving, so it may understate what the family can "
            f"remember (flagged per family; more steps or `budget = \"plateau\"` with a larger cap would tell).")


def outdone_line(board: pd.DataFrame) -> str:
    """The footnote on cells a longer length beat (see `outdone`), or "" when there is none."""
    n = int(board["outdone_cells"].sum())
    if not n:
        return ""
    return (f"**{n} cell(s) are beaten at a longer length**: the same task and family, trained longer on longer "
            f"sequences, is more accurate by {OUTDONE_BY} or more, so their budgets likely held them back, although "
            f"their curves had flattened (`--retrain-under-trained` runs them again with more steps).")


def scaled_line(board: pd.DataFrame, tasks: list[str]) -> str:
    """What the bracketed numbers are, and on which tasks."""
    scaled = [t for t in tasks if f"{t} mean_scaled_accuracy" in board]
    return (f"[s] is the scaled accuracy (acc - chance) / (1 - chance) (Grazzi et al. 2025), given where the "
            f"task's chance level is {NEAR_ZERO_CHANCE} or more ({', '.join(scaled)}): 0 is a guess, 1 perfect.")


def seeds_line(board: pd.DataFrame) -> str:
    """What the intervals mean, or that there are none."""
    if board["score_ci_low"].isna().all():
        return ("One seed per cell: no confidence intervals, so a small gap between two families may be noise "
                "(run several seeds to see the spread).")
    return ("± is the half-width of the 95 % bootstrap interval over seeds (runners/reporting/intervals.py); "
            "families whose score intervals overlap share a rank marked \"=\": these seeds cannot tell them apart.")


def leaderboard_table(board: pd.DataFrame, tasks: list[str]) -> str:
    """The ranked table alone, in Markdown (what `membench leaderboard` prints)."""
    header = ["rank", "model", "score", *[f"{t} (horizon / acc)" for t in tasks], "params", "train time (s)",
              "flags"]
    rows = []
    for _, row in board.iterrows():
        flags = ["pretrained: evaluated as it is"] if row.get("kind") == "pretrained" else []
        flags += [f"{int(row[key])} {label}" for key, label in
                 (("failed_trials", "failed trial(s)"), ("timeout_trials", "timed-out trial(s)"),
                  ("under_trained_cells", "under-trained cell(s)"),
                  ("outdone_cells", "cell(s) beaten at a longer length"),
                  ("missing_cells", "missing cell(s)"),
                  ("unevaluated_trials", "trial(s) with no plain evaluation at the trained length: see slices.md"))
                 if row[key] and row[key] == row[key]]  # NaN: not recorded
        per_task = [f"{int(row[f'{t} horizon']) or '-'} / " + with_interval(
            row[f"{t} mean_accuracy"], row[f"{t} mean_accuracy_ci_low"], row[f"{t} mean_accuracy_ci_high"])
            + (f" [{row[f'{t} mean_scaled_accuracy']:.2f}]" if f"{t} mean_scaled_accuracy" in row else "")
            for t in tasks]
        tied = (board["tied_rank"] == row["tied_rank"]).sum() > 1
        rank = f"{row['tied_rank']}=" if tied else str(row["rank"])
        score = with_interval(row["score"], row["score_ci_low"], row["score_ci_high"])
        rows.append([rank, str(row["model"]), score, *per_task,
                     f"{int(row['params']):,}", f"{row['train_seconds']:.1f}", "; ".join(flags)])
    return markdown_table(header, rows, left=["model", "flags"])


def write_leaderboard(results: Results) -> tuple[list[Path], str]:
    """Write leaderboard.md and leaderboard.csv into the results directory; return their paths and the
    ranked table (Markdown) for the terminal."""
    board, tasks = build_leaderboard(results.runs)
    md = results.directory / "leaderboard.md"
    csv = results.directory / "leaderboard.csv"
    atomic_write_bytes(csv, leaderboard_csv(board).encode())
    atomic_write_bytes(md, leaderboard_markdown(board, tasks, results.runs).encode())
    return [md, csv], leaderboard_table(board, tasks)
