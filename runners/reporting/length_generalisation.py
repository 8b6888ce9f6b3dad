"""Length generalisation from the tables alone: accuracy against the evaluated length, apart from the trained one.

A trial is trained on one length (train_len), a mixture of lengths or a range drawn from each step
(`train_length_range`); runs.csv records what it trained on as [train_len_min, train_len_max] and what each
row evaluated as eval_len. Definitions, for task t, family m, trained range R = [lo, hi] and evaluated length E:

    accuracy          the seed mean of the plain rows' accuracy at E, over the trials of the cell's chosen
                      config (the leaderboard's: runners/reporting/leaderboard.py); a failed row is left out
    scaled accuracy   the same mean of scaled_accuracy, (acc - chance) / (1 - chance) (Grazzi et al. 2025)
    inside            lo <= E <= hi: the length was trained on; beyond: E > hi, what generalisation measures
    under-trained     how many of those trials stopped at their budget still improving (marked "*"): a low
                      accuracy there may be too few steps, not a memory that fails at E

Worked example: parity trained on [8, 40], evaluated at 40, 80 and 160, seeds at 1.0 / 0.9 / 0.5 and 1.0 /
0.7 / 0.5 give accuracies 1.0, 0.8 and 0.5 at E = 40, 80, 160; with chance 0.5 the scaled accuracies are
1.0, 0.6 and 0.0: at 4x the longest trained length the family is at chance.

`length_table` computes it, `write_length_generalisation` writes length_generalisation.md / .csv, and
`accuracy_vs_eval_length` draws it (a panel per task and trained range, the range shaded). A sweep whose every
row is evaluated at its trained length has none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from membench.runners.reporting.figures import panel_grid, save_figure
from membench.runners.reporting.leaderboard import cell_table, chosen_trials, model_order, trial_table
from membench.runners.reporting.results import Results, is_plain_slice
from membench.runners.reporting.text import markdown_table
from membench.runners.schema import as_bool
from membench.runners.tables import atomic_write_bytes

if TYPE_CHECKING:  # annotations only: runners.reporting.charts imports this module
    from membench.runners.reporting.charts import Sweep

KEY = ["task", "model", "train_len_min", "train_len_max", "eval_len"]


def trained_range(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` with train_len_min / train_len_max filled from train_len where a table predates them."""
    runs = runs.copy()
    for column in ("train_len_min", "train_len_max"):
        if column not in runs.columns:
            runs[column] = runs["train_len"]
        runs[column] = runs[column].fillna(runs["train_len"]).astype(int)
    return runs


def generalises(runs: pd.DataFrame) -> bool:
    """Whether any plain row of `runs` is evaluated beyond its trained range (the table and chart then exist)."""
    runs = trained_range(runs)
    return bool((is_plain_slice(runs) & (runs["eval_len"] > runs["train_len_max"])).any())


def length_table(runs: pd.DataFrame, chosen_ids) -> pd.DataFrame:
    """One row per (task, model, train_len_min, train_len_max, eval_len) of the chosen trials' plain rows
    (status ok or timeout): accuracy, scaled_accuracy (seed means), seeds, under_trained (trials), inside.

        >>> runs = pd.DataFrame({"trial_id": ["a", "a", "b", "b"], "task": "parity", "model": "lstm",
        ...     "train_len": 40, "train_len_min": 8, "train_len_max": 40, "eval_len": [40, 160, 40, 160],
        ...     "slice": ["L40", "L160"] * 2, "status": "ok", "accuracy": [1.0, 0.5, 0.9, 0.6],
        ...     "scaled_accuracy": [1.0, 0.0, 0.8, 0.2], "under_trained": [False, False, True, True]})
        >>> length_table(runs, ["a", "b"])[["eval_len", "accuracy", "scaled_accuracy", "seeds", "under_trained",
        ...                                 "inside"]].to_dict("records")  # doctest: +NORMALIZE_WHITESPACE
        [{'eval_len': 40, 'accuracy': 0.95, 'scaled_accuracy': 0.9, 'seeds': 2, 'under_trained': 1, 'inside': True},
         {'eval_len': 160, 'accuracy': 0.55, 'scaled_accuracy': 0.1, 'seeds': 2, 'under_trained': 1,
          'inside': False}]
    """
    runs = trained_range(runs)
    rows = runs[runs["trial_id"].isin(list(chosen_ids)) & is_plain_slice(runs)
                & runs["status"].isin(("ok", "timeout"))]
    rows = rows.assign(under=rows["under_trained"].map(as_bool) if "under_trained" in rows else False)
    if "scaled_accuracy" not in rows.columns:
        rows = rows.assign(scaled_accuracy=float("nan"))
    table = rows.groupby(KEY).agg(accuracy=("accuracy", "mean"), scaled_accuracy=("scaled_accuracy", "mean"),
                                  seeds=("trial_id", "nunique"), under_trained=("under", "sum")).reset_index()
    table["under_trained"] = table["under_trained"].astype(int)
    table["inside"] = (table["train_len_min"] <= table["eval_len"]) & (table["eval_len"] <= table["train_len_max"])
    return table.sort_values(KEY).reset_index(drop=True)


def range_label(low: int, high: int) -> str:
    """'8-40' for a range, '64' for one length."""
    return f"{low}-{high}" if low != high else str(high)


def length_markdown(table: pd.DataFrame, models: list[str]) -> str:
    """The page: per task and trained range, a row per family and a column per evaluated length, each cell
    "accuracy (scaled)", "*" when a seed there was under-trained, the trained lengths' columns marked "(trained)"."""
    lines = ["# Length generalisation", "",
             "Accuracy at each evaluated length (seed mean of the chosen config; scaled accuracy "
             "(acc - chance) / (1 - chance) in brackets where the task's chance is not 0). Columns marked "
             "\"trained\" lie inside the trained range; the others measure generalisation beyond it. "
             "* a seed of that cell stopped at its step budget still improving (under-trained): a low accuracy "
             "there may be too few steps.", ""]
    for (task, low, high), part in table.groupby(["task", "train_len_min", "train_len_max"], sort=False):
        lengths = sorted(part["eval_len"].unique())
        header = ["family", *[f"{n}" + (" (trained)" if low <= n <= high else "") for n in lengths]]
        rows = []
        for model in [m for m in models if m in set(part["model"])]:
            mine = part[part["model"] == model].set_index("eval_len")
            rows.append([model, *[_cell(mine.loc[n]) if n in mine.index else "" for n in lengths]])
        lines += [f"## {task}, trained on {range_label(low, high)}", "", markdown_table(header, rows, ["family"]), ""]
    return "\n".join(lines)


def _cell(row: pd.Series) -> str:
    scaled = "" if pd.isna(row["scaled_accuracy"]) or row["scaled_accuracy"] == row["accuracy"] else \
        f" ({row['scaled_accuracy']:.2f})"
    return f"{row['accuracy']:.3f}{scaled}" + ("*" if row["under_trained"] else "")


def write_length_generalisation(results: Results) -> list[Path]:
    """length_generalisation.md and .csv in the results directory (atomically), over the trials of each cell's
    chosen config, or nothing when no row is evaluated beyond its trained range."""
    runs = results.runs
    if not generalises(runs):
        return []
    trials = trial_table(runs)
    table = length_table(runs, chosen_trials(trials, cell_table(trials))["trial_id"])
    csv, md = results.directory / "length_generalisation.csv", results.directory / "length_generalisation.md"
    atomic_write_bytes(csv, table.to_csv(index=False, float_format="%.4f", lineterminator="\n").encode())
    atomic_write_bytes(md, length_markdown(table, model_order(table["model"])).encode())
    return [md, csv]


def accuracy_vs_eval_length(sweep: Sweep, out_dir: Path) -> list[Path]:
    """Accuracy against the evaluated length, a panel per task and trained range with that range shaded; a
    hollow triangle marks a point where a seed was under-trained. Nothing when no row is evaluated beyond its
    trained range."""
    runs = sweep.results.runs
    if not generalises(runs):
        return []
    table = length_table(runs, sweep.chosen["trial_id"])
    panels = list(table.groupby(["task", "train_len_min", "train_len_max"], sort=False))
    fig, axes = panel_grid(len(panels), "Accuracy against the evaluated length", extra_width=2.8)
    any_under = False
    for ax, ((task, low, high), part) in zip(axes, panels):
        if low != high:
            ax.axvspan(low, high, color="grey", alpha=0.2, linewidth=0)
        else:  # one trained length: a band too thin to see is a thick line
            ax.axvline(high, color="grey", alpha=0.3, linewidth=6)
        for model in [m for m in sweep.models if m in set(part["model"])]:
            mine = part[part["model"] == model].sort_values("eval_len")
            style = sweep.styles[model]
            ax.plot(mine["eval_len"], mine["accuracy"], color=style["color"], marker=style["marker"],
                    markersize=5, linewidth=1.5)
            under = mine[mine["under_trained"] > 0]
            ax.scatter(under["eval_len"], under["accuracy"], marker="^", s=70, facecolors="none",
                       edgecolors="dimgrey", zorder=5)
            any_under |= not under.empty
        lengths = sorted(set(part["eval_len"]) | {low, high})
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths)
        ax.set_xticklabels([str(n) for n in lengths], rotation=45 if len(lengths) > 5 else 0)
        ax.minorticks_off()
        ax.set(title=f"{task}, trained on {range_label(low, high)}", xlabel="evaluated length (tokens)",
               ylabel="accuracy", ylim=(-0.03, 1.03))
    shown = [m for m in sweep.models if m in set(table["model"])]
    handles = [Line2D([], [], color=sweep.styles[m]["color"], marker=sweep.styles[m]["marker"], markersize=5)
               for m in shown]
    handles.append(Patch(color="grey", alpha=0.3, linewidth=0))
    labels = [*shown, "trained lengths"]
    if any_under:
        handles.append(Line2D([], [], marker="^", markerfacecolor="none", color="dimgrey", linestyle=""))
        labels.append("under-trained: stopped still improving")
    fig.legend(handles, labels, loc="outside right center", frameon=False)
    return save_figure(fig, out_dir, "accuracy_vs_eval_length")
