"""Reading a results directory: its tables, checked against the columns the reports need, and the few
rules every report shares about their rows.

    >>> runs = pd.DataFrame({"slice": ["L64", "L64-kv4", "L128"], "eval_len": [64, 64, 128]})
    >>> is_plain_slice(runs).tolist()                        # "L{eval_len}" rows, not named slices
    [True, False, True]

Rules in one place:
- a **plain slice** is a runs.csv row whose `slice` is "L{eval_len}" (a length of the sweep's own, not a
  named slice of a recipe such as "L1024-kv256");
- the **failure status** of a group of rows (a trial's rows, a cell's trials) is the first non-ok status in
  alphabetical order (diverged < error < oom < timeout), "ok" when every row is ok; the order of the rows
  never changes it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from membench.runners.errors import UsageError
from membench.runners.schema import STRING_COLUMNS
from membench.runners.tables import check_table

# a trial's config: its family params and size, learning rate and batch (not steps: those taken vary by seed)
CONFIG_COLUMNS = ["model_params", "d_model", "n_layers", "lr", "batch_size"]
# the columns of each table that the leaderboard and charts read (the full schema: runners.tables)
REQUIRED = {
    "runs": ["trial_id", "task", "task_version", "task_params", "model", "params", "train_len", "eval_len",
             "slice", "seed", *CONFIG_COLUMNS, "steps", "accuracy", "scored", "train_seconds", "peak_memory_mb",
             "flops_per_step", "state_size", "status", "stop_reason", "under_trained"],
    "lags": ["trial_id", "task", "model", "train_len", "eval_len", "lag_bucket", "accuracy", "count"],
    "curves": ["trial_id", "task", "model", "train_len", "step", "tokens", "eval_accuracy"],
    "slice_curves": ["trial_id", "task", "slice", "step", "tokens", "accuracy"],
}
_STRING_COLUMNS = STRING_COLUMNS  # the text columns of the tables (runners.tables)


def is_plain_slice(runs: pd.DataFrame) -> pd.Series:
    """Bool per row: the row evaluates the plain slice "L{eval_len}" (not a named slice)."""
    return runs["slice"].astype(str) == "L" + runs["eval_len"].astype("Int64").astype(str)


def failure_status(statuses) -> str:
    """The alphabetically first non-ok status among `statuses`, or "ok" (see the module docstring).

    >>> failure_status(["ok", "timeout", "oom"])
    'oom'
    """
    return min((s for s in statuses if s != "ok"), default="ok")


@dataclass
class Results:
    """The tables of one sweep directory. `runs` always has rows; the others are None when absent."""

    directory: Path
    runs: pd.DataFrame
    lags: pd.DataFrame | None = None
    curves: pd.DataFrame | None = None
    slice_curves: pd.DataFrame | None = None
    cost: pd.DataFrame | None = None
    cost_fit: pd.DataFrame | None = None


def _read_csv(path: Path) -> pd.DataFrame | None:
    """The table at `path`, or None when the file is absent or holds nothing."""
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, dtype=_STRING_COLUMNS)
    except pd.errors.EmptyDataError:
        return None
    except (UnicodeDecodeError, pd.errors.ParserError) as err:
        raise UsageError(f"{path} is not a readable CSV table ({' '.join(str(err).split())[:120]})") from None


def read_results(directory: str | os.PathLike) -> Results:
    """Read a sweep's tables; raise UsageError when the directory holds no usable runs.csv."""
    directory = Path(directory)
    if not directory.exists():
        raise UsageError(f"results directory {directory} does not exist; give the --out directory of a sweep")
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory; give the --out directory of a sweep")
    if not (directory / "runs.csv").is_file():
        raise UsageError(f"{directory} has no runs.csv; give the --out directory of `membench run` or "
                         f"`membench leaderboard`")
    runs = _read_csv(directory / "runs.csv")
    if runs is None or runs.empty:
        raise UsageError(f"runs.csv in {directory} has no rows; run the sweep first")
    tables = {name: _read_csv(directory / f"{name}.csv")
              for name in ("lags", "curves", "slice_curves", "cost", "cost_fit")}
    for name, table in (("runs", runs), *((n, tables[n]) for n in ("lags", "curves", "slice_curves"))):
        missing = [c for c in REQUIRED[name] if table is not None and c not in table.columns]
        if missing:
            raise UsageError(f"{name}.csv in {directory} lacks column(s) {', '.join(missing)}; "
                             f"it must follow the membench {name} schema")
        check_table(name, table, directory / f"{name}.csv") if table is not None else None  # types, ranges
    runs = runs.assign(task=task_labels(runs))
    label = runs.drop_duplicates("trial_id").set_index("trial_id")["task"]
    for name in ("lags", "curves", "slice_curves"):  # these carry the bare task name: take the label from runs
        if tables[name] is not None:
            tables[name]["task"] = tables[name]["trial_id"].map(label).fillna(tables[name]["task"])
    return Results(directory, runs, **tables)


def task_labels(runs: pd.DataFrame) -> pd.Series:
    """The task column, made unique per (version, params): a sweep may train one task with several params.

    A task with one (version, params) combination keeps its bare name; otherwise each variant becomes
    "name[k=v,...]" with the params that differ between variants ("name[v2,k=v,...]" when versions differ
    too), e.g. "associative_recall[num_kv_pairs=16]".
    """

    def parse(text: object) -> dict:
        try:
            params = json.loads(text) if isinstance(text, str) and text else {}
        except json.JSONDecodeError:
            return {"params": text}
        return params if isinstance(params, dict) else {"params": params}

    labels = runs["task"].astype(str).copy()
    variants = runs[["task", "task_version", "task_params"]].astype(str).drop_duplicates()
    for task, group in variants.groupby("task"):
        if len(group) < 2:
            continue
        parsed = {text: parse(text) for text in group["task_params"]}
        keys = sorted({k for p in parsed.values() for k in p})
        differing = [k for k in keys if len({repr(p.get(k)) for p in parsed.values()}) > 1]
        tags = {text: ",".join(f"{k}={p.get(k)}" for k in differing) for text, p in parsed.items()}
        rows = runs["task"].astype(str) == task
        tag = runs.loc[rows, "task_params"].astype(str).map(tags)
        if group["task_version"].nunique() > 1:
            tag = "v" + runs.loc[rows, "task_version"].astype(str) + tag.map(lambda t: f",{t}" if t else "")
        labels[rows] = f"{task}[" + tag + "]"
    return labels
