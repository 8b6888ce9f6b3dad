"""The recall-versus-state frontier: how much memory each family needs to recall, from a sweep of sizes.

Based (Arora et al. 2024, Figure 2) plots recall accuracy against the state a model carries; Zoology
(Figure 2) plots it against model width. A sweep that trains a family at two or more sizes or state settings
(`d_models`, a list of `target_params`, or a family param grid such as `window = [8, 16, 64]`) gets both,
from runs.csv alone. Definitions, per task t, trained length L, eval slice s and family m:

    point           one config c of m (family params, d_model, n_layers, lr, batch size) at (t, L, s)
    accuracy        the mean over c's seeds of the slice accuracy (a failed seed counts 0), with the 95 %
                    bootstrap interval over seeds of runners/reporting/intervals.py (empty with one seed)
    state_size      floats of memory the model carries at the slice's length (runs.csv's state_size; a
                    point whose state is unknown is listed but never on a front)
    on_pareto_front no other point of m at (t, L, s) has a state as small or smaller and an accuracy as high
                    or higher, one of the two strictly
    memory efficiency   per (t, L, m): the smallest state of a point reaching 0.9, and 0.99, at the plain
                    slice of the trained length ("-" when none does)
    under_trained   the point's seeds that stopped at their budget still improving (runners/train.py): its
                    accuracy may be too few steps, not too little state; marked in the table and the charts

Worked example: windows 8, 16 and 64 of sliding_window at L = 64 carry 2 * w * D floats per layer, say
states 2048, 4096 and 16384 with accuracies 0.40, 0.95 and 0.93: the first two are on the front, the third
is not (the second is smaller and better), and the smallest state reaching 0.9 is 4096.

Outputs: frontier.csv (one row per point), frontier.md (memory efficiency), charts/recall_vs_state (accuracy
against state size, log2 x, a panel per task x length, each family's points joined along its front, seed
intervals as error bars) and charts/recall_vs_width (accuracy of the best config at each width against
d_model, Zoology Figure 2's axes).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from membench.runners.reporting.figures import RC, family_styles, panel_grid, save_figure
from membench.runners.reporting.intervals import bootstrap_draws, interval
from membench.runners.reporting.leaderboard import SCORED, model_order, task_order
from membench.runners.reporting.results import CONFIG_COLUMNS, is_plain_slice
from membench.runners.reporting.text import count, fixed, markdown_table
from membench.runners.schema import as_bool
from membench.runners.tables import atomic_write_bytes

LEVELS = (0.9, 0.99)
POINT_KEY = ["task", "train_len", "slice", "eval_len", "model", "config"]
COLUMNS = ["task", "train_len", "slice", "eval_len", "model", "config", "model_params", "d_model", "params",
           "state_size", "seeds", "accuracy", "ci_low", "ci_high", "on_pareto_front", "under_trained"]


def has_sizes(runs: pd.DataFrame) -> bool:
    """True when some family was trained at two or more sizes or state settings of one (task, length)."""
    configs = runs.groupby(["task", "train_len", "model"])[["model_params", "d_model"]].apply(
        lambda g: len(g.drop_duplicates()))
    return bool((configs >= 2).any())


def frontier_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per point (see the module docstring), COLUMNS in order, sorted by task, length, slice, model
    and state size."""
    runs = runs.assign(
        config=runs[CONFIG_COLUMNS].astype(str).agg("|".join, axis=1),
        scored=np.where(runs["status"].isin(SCORED), runs["accuracy"].fillna(0.0), 0.0),
        under=runs["under_trained"].map(as_bool) if "under_trained" in runs.columns else False,
    )
    rows = []
    for key, group in runs.groupby(POINT_KEY, sort=False):
        accuracies = group["scored"].to_numpy(dtype=float)
        low, high = interval(bootstrap_draws(accuracies, key)) if len(accuracies) >= 2 else (np.nan, np.nan)
        first = group.iloc[0]
        rows.append({**dict(zip(POINT_KEY, key)), "model_params": first["model_params"],
                     "d_model": int(first["d_model"]), "params": first["params"],
                     "state_size": group["state_size"].max(), "seeds": len(group),
                     "accuracy": float(accuracies.mean()), "ci_low": low, "ci_high": high,
                     "under_trained": int(group["under"].sum())})
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "on_pareto_front"])
    table["on_pareto_front"] = False
    for _, group in table.groupby(["task", "train_len", "slice", "model"], sort=False):
        table.loc[pareto_front(group), "on_pareto_front"] = True
    return table.sort_values(["task", "train_len", "eval_len", "slice", "model", "state_size", "accuracy"],
                             kind="stable").reset_index(drop=True)[COLUMNS]


def pareto_front(points: pd.DataFrame) -> list:
    """Index labels of the points with a known state that no other point dominates (smaller or equal state,
    higher or equal accuracy, one of them strictly).

    >>> pareto_front(pd.DataFrame({"state_size": [2048, 4096, 16384], "accuracy": [0.40, 0.95, 0.93]}))
    [0, 1]
    """
    known = points.dropna(subset=["state_size"]).sort_values(["state_size", "accuracy"], ascending=[True, False])
    front, best = [], -np.inf
    for label, row in known.iterrows():
        if row["accuracy"] > best:
            front.append(label)
            best = row["accuracy"]
    return front


def efficiency_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per (task, train_len, model): the smallest state reaching each of LEVELS at the plain trained-length
    slice (NaN when none does), and how many points were swept."""
    plain = table[(table["eval_len"] == table["train_len"]) & is_plain_slice(table)]
    rows = []
    for (task, length, model), group in plain.groupby(["task", "train_len", "model"], sort=False):
        row = {"task": task, "train_len": length, "model": model, "points": len(group),
               "best_accuracy": group["accuracy"].max(), "under_trained": int((group["under_trained"] > 0).sum())}
        for level in LEVELS:
            reached = group.loc[group["accuracy"] >= level - 1e-9, "state_size"].dropna()
            row[f"state_for_{level:g}"] = reached.min() if len(reached) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def frontier_markdown(table: pd.DataFrame) -> str:
    efficiency = efficiency_table(table)
    lines = [
        "# membench recall-versus-state frontier",
        "",
        "Memory efficiency: per task, trained length and family, the smallest state (floats carried per "
        "sequence) of a swept config whose seed-mean accuracy at the trained length reaches 0.9 and 0.99 "
        "(\"-\" when none does). Every point is in frontier.csv; definitions: runners/reporting/frontier.py. "
        "A state size that is unknown (a user's mixer that declares none) is left out of the front. "
        "**under-trained**: points with a seed stopped at its step budget still improving (a triangle in the "
        "charts): their accuracy may be too few steps, not too little state.",
        "",
    ]
    header = ["task", "length", "model", "points", "best accuracy", "state for 0.9", "state for 0.99",
              "under-trained"]
    rows = []
    for _, row in efficiency.iterrows():
        rows.append([row["task"], str(int(row["train_len"])), row["model"], str(row["points"]),
                     fixed(row["best_accuracy"], 3), count(row["state_for_0.9"], "-"),
                     count(row["state_for_0.99"], "-"), str(row["under_trained"] or "")])
    return "\n".join(lines) + "\n" + markdown_table(header, rows, left=["task", "model"]) + "\n"


def write_frontier(runs: pd.DataFrame, directory: Path) -> tuple[list[Path], list[Path]]:
    """([frontier.md, frontier.csv], the two charts' files) when the sweep has sizes (`has_sizes`), else
    ([], [])."""
    if not has_sizes(runs):
        return [], []
    table = frontier_table(runs)
    directory = Path(directory)
    csv, md = directory / "frontier.csv", directory / "frontier.md"
    out = table.copy()
    for column in ("accuracy", "ci_low", "ci_high"):
        out[column] = out[column].map(lambda v: fixed(v, 4))
    atomic_write_bytes(csv, out.to_csv(index=False, lineterminator="\n").encode())
    atomic_write_bytes(md, frontier_markdown(table).encode())
    charts = directory / "charts"
    charts.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(RC):
        return [md, csv], recall_vs_state(table, charts) + recall_vs_width(table, charts)


# --- charts -----------------------------------------------------------------------------------------------
def _frontier_panels(table: pd.DataFrame, title: str) -> tuple[Figure, list, list[str], dict, list]:
    """The figure, its panels, the families in order with their styles, and (panel, task, length, the rows
    trained and evaluated at that length, plain slice) for each task x trained length."""
    plain = table[(table["eval_len"] == table["train_len"]) & is_plain_slice(table)]
    keys = [(t, int(n)) for t in task_order(plain["task"]) for n in sorted(plain.loc[plain["task"] == t, "train_len"]
                                                                             .unique())]
    models = model_order(plain["model"])
    fig, axes = panel_grid(len(keys), title, extra_width=1.8, panel=(4.0, 3.2))
    panels = [(ax, task, length, plain[(plain["task"] == task) & (plain["train_len"] == length)])
              for ax, (task, length) in zip(axes, keys)]
    return fig, axes, models, family_styles(models), panels


def _error(points: pd.DataFrame) -> np.ndarray | None:
    if points["ci_low"].isna().all():
        return None
    low = (points["accuracy"] - points["ci_low"]).fillna(0).clip(lower=0)
    high = (points["ci_high"] - points["accuracy"]).fillna(0).clip(lower=0)
    return np.vstack([low.to_numpy(), high.to_numpy()])


def recall_vs_state(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Accuracy against state size (log2 x): every point of a family, joined along its Pareto front."""
    fig, axes, models, styles, panels = _frontier_panels(
        table, "Recall against state size (each family's Pareto front joined)")
    for ax, task, length, panel in panels:
        panel = panel.dropna(subset=["state_size"])
        for model in models:
            mine = panel[panel["model"] == model].sort_values("state_size")
            if mine.empty:
                continue
            style = styles[model]
            ax.errorbar(mine["state_size"], mine["accuracy"], yerr=_error(mine), fmt=style["marker"], markersize=5,
                        color=style["color"], alpha=0.55, elinewidth=0.8, capsize=2, linestyle="none")
            front = mine[mine["on_pareto_front"]]
            ax.plot(front["state_size"], front["accuracy"], color=style["color"], marker=style["marker"],
                    markersize=5, linewidth=1.5, label=model)
            _mark_under_trained(ax, mine, "state_size")
        ax.set_xscale("log", base=2)
        ax.set(title=f"{task} (length {length})", xlabel="state size (floats per sequence)", ylabel="accuracy",
               ylim=(-0.03, 1.03))
    _legend(fig, axes, models)
    return save_figure(fig, out_dir, "recall_vs_state")


def recall_vs_width(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Accuracy of the best config at each width against d_model (log2 x), a panel per task x length."""
    title = "Recall against model width (best config at each width)"
    fig, axes, models, styles, panels = _frontier_panels(table, title)
    for ax, task, length, panel in panels:
        for model in models:
            mine = panel[panel["model"] == model]
            if mine.empty:
                continue
            best = mine.sort_values("accuracy", ascending=False, kind="stable").drop_duplicates("d_model")
            best = best.sort_values("d_model")
            style = styles[model]
            ax.errorbar(best["d_model"], best["accuracy"], yerr=_error(best), color=style["color"],
                        marker=style["marker"], markersize=5, linewidth=1.5, capsize=2, label=model)
            _mark_under_trained(ax, best, "d_model")
        widths = sorted({int(w) for w in panel["d_model"]})
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths)
        ax.set_xticklabels([str(w) for w in widths])
        ax.minorticks_off()
        ax.set(title=f"{task} (length {length})", xlabel="model width (d_model)", ylabel="accuracy",
               ylim=(-0.03, 1.03))
    _legend(fig, axes, models)
    return save_figure(fig, out_dir, "recall_vs_width")


UNDER_LABEL = "under-trained: stopped still improving"


def _mark_under_trained(ax, points: pd.DataFrame, x: str) -> None:
    """A hollow triangle over each point with an under-trained seed."""
    under = points[points["under_trained"] > 0]
    if not under.empty:
        ax.scatter(under[x], under["accuracy"], marker="^", s=70, facecolors="none", edgecolors="dimgrey",
                   zorder=5, label=UNDER_LABEL)


def _legend(fig: Figure, axes: list, models: list[str]) -> None:
    handles = {}
    for ax in axes:
        handles.update({label: h for h, label in zip(*ax.get_legend_handles_labels()) if label not in handles})
    ordered = [m for m in models if m in handles] + [label for label in (UNDER_LABEL,) if label in handles]
    fig.legend([handles[m] for m in ordered], ordered, loc="outside right upper", title="family", frameon=False)
