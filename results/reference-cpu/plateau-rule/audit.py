"""The audit of the plateau rule: every trial this run stopped on a plateau, beside the same trial (task, family,
length, seed: the same data, weights and schedule) trained to its full step budget by the recipe's run in
results/reference-cpu. Run from the repository root, once the new run holds the tasks to compare:

    python results/reference-cpu/plateau-rule/audit.py

It writes plateau_audit.csv beside this file (one row per stopped trial: accuracy and steps at the stop, then
at the full budget, and the gain) and prints the gain's summary per task. Only associative_recall and
delayed_match are compared: this run's copy cells were retrained at other budgets.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from membench.runners.spec import load_spec

HERE = Path(__file__).parent
FULL = HERE.parent
KEYS = ["task", "model", "train_len", "seed"]
COLUMNS = ["accuracy", "steps", "stop_reason"]
TASKS = ["associative_recall", "delayed_match"]


def at_train_length(*tables: Path) -> pd.DataFrame:
    """The rows of the trained length (the accuracy a trial is judged by) of the tables that exist."""
    runs = pd.concat([pd.read_csv(t) for t in tables if t.is_file()], ignore_index=True)
    return runs[runs["is_train_len"]]


def audit() -> pd.DataFrame:
    stopped = at_train_length(HERE / "runs.csv")
    stopped = stopped[stopped["stop_reason"].eq("plateau") & stopped["task"].isin(TASKS)].set_index(KEYS)[COLUMNS]
    recipe = {t.trial_id for t in load_spec("reference_cpu").trials}  # the first budgets, not the retrained
    full = at_train_length(FULL / "runs.csv", FULL / "superseded" / "runs.csv")
    full = full[full["trial_id"].isin(recipe)].set_index(KEYS)[COLUMNS]
    table = stopped.merge(full, left_index=True, right_index=True, suffixes=("", "_full"))
    table["gain"] = table["accuracy_full"] - table["accuracy"]
    return table.sort_index()


if __name__ == "__main__":
    table = audit()
    table.round(4).to_csv(HERE / "plateau_audit.csv")
    gain = table.groupby(level="task")["gain"]
    summary = pd.DataFrame({"stopped trials": gain.size(), "mean gain": gain.mean(), "largest gain": gain.max(),
                            "gained >= 0.05": gain.apply(lambda g: int((g >= 0.05).sum())),
                            "gained >= 0.5": gain.apply(lambda g: int((g >= 0.5).sum()))})
    print(summary.round(3).to_string())
