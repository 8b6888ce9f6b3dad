"""The slice table: one row per trial with its accuracy on every named evaluation slice, for sweeps whose
evaluations are named slices (a recipe such as `zoology_mqar`) rather than plain lengths.

A named slice is any runs.csv row whose `slice` is not the plain "L{eval_len}" (e.g. "L1024-kv256"). The
leaderboard ranks plain evaluations at the trained length only; these rows are what `slices.md` and
`slices.csv` show, beside the trial's time-to-accuracy and speed:

    | model | d_model | ... | L64-kv4 | ... | L1024-kv256 | min | to threshold: s / steps / tokens |
    | transformer | 64 | ... | 1.000 | ... | 0.993 | 0.993 | 1379.4 / 2,750 / 94,404,608 |

Slice columns keep the order of the sweep's spec (their first appearance in runs.csv); `min` is the
lowest of them. The chart `charts/slice_curves` draws slice_curves.csv: a panel per trial, a line per named
slice, accuracy against training tokens (where each slice learns, and which one lags). Files are a pure
function of the tables, written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from membench.runners.reporting.figures import RC, count_label, save_figure
from membench.runners.reporting.results import is_plain_slice
from membench.runners.reporting.text import count, fixed, markdown_table
from membench.runners.tables import atomic_write_bytes

TRIAL_COLUMNS = ["task", "model", "d_model", "n_layers", "lr", "batch_size", "seed", "params", "status", "steps",
                 "ms_per_step", "tokens_per_second", "train_seconds", "time_to_accuracy_seconds",
                 "time_to_accuracy_steps", "time_to_accuracy_tokens", "stop_reason", "under_trained"]


def named_slice_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The rows of runs.csv evaluated on a named slice (not the plain "L{eval_len}")."""
    return runs[~is_plain_slice(runs)]


def slice_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per trial that has named slices: TRIAL_COLUMNS, then one accuracy column per slice, then
    `min` (the lowest slice accuracy). Empty when no row is a named slice."""
    named = named_slice_rows(runs)
    if named.empty:
        return pd.DataFrame(columns=["trial_id", *TRIAL_COLUMNS, "min"])
    slices = list(dict.fromkeys(named["slice"].astype(str)))
    accuracy = named.pivot_table(index="trial_id", columns="slice", values="accuracy", aggfunc="first",
                                 dropna=False).reindex(columns=slices)
    trials = named.drop_duplicates("trial_id").set_index("trial_id")[TRIAL_COLUMNS]
    table = trials.join(accuracy)
    table["min"] = accuracy.reindex(table.index).min(axis=1)  # over the slices the trial was evaluated on
    table = table.reset_index().sort_values(["task", "model", "d_model", "n_layers", "lr", "seed", "trial_id"])
    return table.reset_index(drop=True)


def slices_markdown(table: pd.DataFrame) -> str:
    """The slice table as a Markdown page: what it shows, then the table."""
    lines = [
        "# membench slices",
        "",
        "Accuracy on every named evaluation slice, per trial (the leaderboard ranks plain evaluations at the "
        "trained length only). **to threshold**: training seconds (evaluation excluded), steps and tokens until "
        "every slice first reached the trial's `threshold` (0.99 in zoology_mqar); empty when it never did.",
        "",
    ]
    return "\n".join(lines) + "\n" + slices_table_markdown(table) + "\n"


def slices_table_markdown(table: pd.DataFrame) -> str:
    """A row per trial: the slice accuracies, time-to-accuracy and speed (what `membench charts` prints)."""
    slices = [c for c in table.columns if c not in ("trial_id", *TRIAL_COLUMNS, "min")]
    header = ["task", "model", "d_model", "layers", "lr", "seed", "params", "status", *slices, "min",
              "to threshold: s / steps / tokens", "steps", "stopped by", "ms/step", "tokens/s"]
    rows = []
    for _, row in table.iterrows():
        reached = " / ".join([fixed(row["time_to_accuracy_seconds"], 1), count(row["time_to_accuracy_steps"]),
                              count(row["time_to_accuracy_tokens"])])
        rows.append([row["task"], row["model"], count(row["d_model"]), count(row["n_layers"]), f"{row['lr']:g}",
                     count(row["seed"]), count(row["params"]), row["status"],
                     *[fixed(row[s], 4) for s in slices], fixed(row["min"], 4),
                     reached if row["time_to_accuracy_steps"] == row["time_to_accuracy_steps"] else "",
                     count(row["steps"]), stopped_by(row), fixed(row["ms_per_step"], 1),
                     count(row["tokens_per_second"])])
    return markdown_table(header, rows, left=["task", "model", "status", "stopped by"])


def stopped_by(row) -> str:
    """'threshold', 'plateau', 'budget', 'time_cap', with ' (under-trained)' when it stopped still improving."""
    reason = "" if pd.isna(row["stop_reason"]) else str(row["stop_reason"])
    under = str(row["under_trained"]).strip().lower() in ("true", "1", "1.0")
    return reason + (" (under-trained)" if under else "")


def write_slices(runs: pd.DataFrame, directory: Path) -> tuple[list[Path], str]:
    """Write slices.md and slices.csv into `directory` when runs.csv has named slices; return their paths
    and the table (Markdown) for the terminal; ([], "") when there are none."""
    table = slice_table(runs)
    if table.empty:
        return [], ""
    md, csv = Path(directory) / "slices.md", Path(directory) / "slices.csv"
    atomic_write_bytes(csv, table.to_csv(index=False, lineterminator="\n").encode())
    atomic_write_bytes(md, slices_markdown(table).encode())
    return [md, csv], slices_table_markdown(table)


def slice_curves_chart(slice_curves: pd.DataFrame | None, named: pd.DataFrame, out_dir: Path) -> list[Path]:
    """charts/slice_curves.{png,svg}: a panel per trial with named slices (`named`: their runs rows), a line
    per slice in the spec's order, accuracy at every evaluation against training tokens; [] without data."""
    if slice_curves is None or slice_curves.empty or named.empty:
        return []
    curves = slice_curves[slice_curves["trial_id"].isin(set(named["trial_id"]))]
    if curves.empty:
        return []
    with matplotlib.rc_context(RC):
        return _draw_slice_curves(curves, named, Path(out_dir))


def _plain(label: str) -> str:
    """A matplotlib label shown as written: `$` escaped (no mathtext), never hidden by a leading `_`."""
    label = label.replace("$", "\\$")
    return " " + label if label.startswith("_") else label


def _draw_slice_curves(curves: pd.DataFrame, named: pd.DataFrame, out_dir: Path) -> list[Path]:
    trials = named.drop_duplicates("trial_id").sort_values(["task", "model", "d_model", "seed", "trial_id"])
    slices = list(dict.fromkeys(named["slice"].astype(str)))
    colours = matplotlib.colormaps["viridis"]
    cols = min(3, len(trials))
    rows = math.ceil(len(trials) / cols)
    fig = Figure(figsize=(4.0 * cols + 1.6, 3.0 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[len(trials):]:
        ax.set_visible(False)
    for ax, (_, trial) in zip(axes, trials.iterrows()):
        mine = curves[curves["trial_id"] == trial["trial_id"]]
        for i, name in enumerate(slices):
            line = mine[mine["slice"] == name].sort_values("step")
            if not line.empty:
                ax.plot(line["tokens"], line["accuracy"], marker="o", markersize=3, linewidth=1.4,
                        color=colours(0.9 * i / max(1, len(slices) - 1)), label=_plain(name))
        ax.set(title=f"{trial['task']}: {trial['model']} d{int(trial['d_model'])} seed {int(trial['seed'])}",
               xlabel="training tokens", ylabel="accuracy", ylim=(-0.03, 1.03))
        ax.xaxis.set_major_formatter(FuncFormatter(count_label))
    handles = {}  # every slice any panel drew, in the spec's order
    for ax in axes[:len(trials)]:
        handles.update({label: h for h, label in zip(*ax.get_legend_handles_labels()) if label not in handles})
    ordered = [_plain(name) for name in slices if _plain(name) in handles]
    fig.legend([handles[n] for n in ordered], ordered, loc="outside right center", title="slice", fontsize=8)
    fig.suptitle("Accuracy on every named slice during training")
    out_dir.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, out_dir, "slice_curves")
