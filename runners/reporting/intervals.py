"""Confidence intervals over seeds: how far a cell's accuracy, and a family's score, could move with other
seeds. Defined before computed, as the leaderboard is:

    seed accuracies a_1 .. a_k of a cell's chosen config (the trials its seed mean averages)
    bootstrap draw  b = mean of k accuracies drawn from a_1 .. a_k with replacement; DRAWS draws per cell,
                    from a generator seeded by the cell's key (task, model, train_len), so the same table
                    always gives the same interval whatever else the sweep holds
    cell interval   [2.5th, 97.5th] percentile of the cell's draws (a 95 % percentile bootstrap)
    score interval  the same percentiles of the family's score computed draw by draw: draw j of the score
                    is the mean over tasks of the mean over lengths of draw j of every cell (a missing cell
                    is 0 in every draw, a one-seed cell its one value)
    tied            two families whose score intervals overlap cannot be told apart by these seeds

Intervals need at least 2 seeds in a cell; with one seed per cell there is no interval (the columns are
empty) and the leaderboard says so. Worked example: seeds at 0.90, 0.94 and 0.98 give the seed mean 0.94
and, from 2000 draws, an interval of about [0.90, 0.98], printed "0.940 ±0.040" (the half-width).
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

DRAWS = 2000
LEVEL = 0.95


def _generator(key: tuple) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def bootstrap_draws(values, key: tuple, draws: int = DRAWS) -> np.ndarray:
    """`draws` bootstrap means of `values` (all equal to the one value when there is one)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return np.full(draws, values[0] if len(values) else 0.0)
    picks = _generator(key).integers(0, len(values), size=(draws, len(values)))
    return values[picks].mean(axis=1)


def interval(draws: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central `level` percentile interval of `draws`.

    >>> low, high = interval(bootstrap_draws([0.90, 0.94, 0.98], key=("copy", "lstm", 64)))
    >>> 0.89 <= low < 0.94 < high <= 0.99
    True
    """
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def cell_draws(chosen: pd.DataFrame, cells: pd.DataFrame) -> dict[tuple, np.ndarray]:
    """(task, model, train_len) -> the cell's bootstrap draws over its chosen config's seed accuracies."""
    seeds = chosen.groupby(["task", "model", "train_len"])["accuracy"].apply(list)
    out = {}
    for _, cell in cells.iterrows():
        key = (cell["task"], cell["model"], int(cell["train_len"]))
        out[key] = bootstrap_draws(seeds.get(key, [0.0]), key)
    return out


def with_cell_intervals(chosen: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """`cells` with `ci_low` / `ci_high` (NaN where the cell has fewer than 2 seeds)."""
    draws = cell_draws(chosen, cells)
    lows, highs = [], []
    for _, cell in cells.iterrows():
        low, high = interval(draws[(cell["task"], cell["model"], int(cell["train_len"]))])
        several = cell["seeds"] >= 2 and cell["status"] != "missing"
        lows.append(low if several else np.nan)
        highs.append(high if several else np.nan)
    return cells.assign(ci_low=lows, ci_high=highs)


def family_intervals(chosen: pd.DataFrame, cells: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """Per family: `score_ci_low`, `score_ci_high` and per task `<task> mean_accuracy_ci_low/high`, from the
    cells' draws (see the module docstring); NaN where none of the cells involved has 2 seeds."""
    draws = cell_draws(chosen, cells)
    rows = []
    for model, mine in cells.groupby("model", sort=False):
        row: dict = {"model": model}
        per_task = []
        for task in tasks:
            part = mine[mine["task"] == task]
            task_draws = np.mean([draws[(task, model, int(n))] for n in part["train_len"]], axis=0)
            per_task.append(task_draws)
            several = (part["seeds"] >= 2).any()  # a task whose cells have one seed each has no interval
            low, high = interval(task_draws) if several else (np.nan, np.nan)
            row[f"{task} mean_accuracy_ci_low"], row[f"{task} mean_accuracy_ci_high"] = low, high
        row["score_ci_low"], row["score_ci_high"] = interval(np.mean(per_task, axis=0))
        if not (mine["seeds"] >= 2).any():
            row = {k: (v if k == "model" else np.nan) for k, v in row.items()}
        rows.append(row)
    return pd.DataFrame(rows)


def tie_groups(board: pd.DataFrame) -> list[int]:
    """Rank groups of the ranked families: a family whose score interval overlaps the one above it shares
    its group (chained); families without intervals are never tied. Returns one group rank per row."""
    groups: list[int] = []
    for i, (_, row) in enumerate(board.iterrows()):
        if i and not np.isnan(row["score_ci_high"]) and row["score_ci_high"] >= board.iloc[i - 1]["score_ci_low"]:
            groups.append(groups[-1])
        else:
            groups.append(i + 1)
    return groups
