"""Every chart of a sweep, drawn from its tables alone (matplotlib's Agg renderer, PNG and SVG).

    accuracy_vs_length     accuracy at the trained length against that length, a panel per task
    heatmap                family x trained length grid per task, the accuracy written in each cell
    accuracy_vs_lag        accuracy by lag bucket [b, 2b) at each task's longest trained length (lags in symbols)
    length_generalisation  accuracy at 1x, 2x, 4x ... the trained length (the lengths evaluated at every
                           multiple, averaged)
    (a hollow triangle marks a point whose trials include an under-trained one, in every chart that has points)
    accuracy_vs_eval_length accuracy against the evaluated length, the trained length or range shaded, when
                           a sweep evaluates beyond it (runners/reporting/length_generalisation.py)
    accuracy_vs_cost       accuracy against training FLOPs (flops_per_step * steps; train seconds when FLOPs
                           are unknown), bubble area growing with the state size (or peak memory)
    training_curves        evaluation accuracy against training tokens at each task's longest length
    accuracy_vs_context_tokens  accuracy against the tokens read (context_tokens), when a `pretrained:` model
                           is in the sweep: its text's tokens beside the families' lengths
    cost_*                 the cost curves of `runners.reporting.cost_charts`, when the directory holds cost.csv

Accuracies are the leaderboard's (`runners.reporting.leaderboard`): the seed mean of the best config per cell, a
failed trial counting 0. Every family keeps one colour and marker in every chart, fixed by its place in
`list_models()`. SVGs are byte-stable (fixed hash salt, no date), so regenerating changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from membench.models.pretrained import is_pretrained
from membench.runners.reporting.cost_charts import draw_cost_charts
from membench.runners.reporting.figures import (
    RC,
    Job,
    count_label,
    draw_in_parallel,
    family_styles,
    line_style,
    panel_grid,
    save_figure,
)
from membench.runners.reporting.intervals import with_cell_intervals
from membench.runners.reporting.leaderboard import (
    THRESHOLD,
    cell_table,
    chosen_trials,
    model_order,
    task_order,
    trial_table,
)
from membench.runners.reporting.length_generalisation import accuracy_vs_eval_length
from membench.runners.reporting.results import Results, is_plain_slice
from membench.runners.schema import as_bool

CMAP = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")  # grey: a cell not in the sweep


# --- shared: styles, layout, saving -----------------------------------------------------------------
@dataclass
class Sweep:
    """What every chart reads: the tables and the leaderboard's per-trial and per-cell accuracies."""

    results: Results
    cells: pd.DataFrame  # one row per (task, model, train_len), missing cells included
    chosen: pd.DataFrame  # one row per trial of each cell's chosen config (leaderboard.trial_table rows)
    tasks: list[str]
    models: list[str]
    styles: dict[str, dict]

    @classmethod
    def from_results(cls, results: Results) -> "Sweep":
        trials = trial_table(results.runs)
        cells = cell_table(trials)
        chosen = chosen_trials(trials, cells)
        models = model_order(cells["model"])
        return cls(results, with_cell_intervals(chosen, cells), chosen, task_order(cells["task"]), models,
                   family_styles(models))


def _family_legend(fig: Figure, sweep: Sweep, models, extra: list[tuple] = ()) -> None:
    """One legend for the whole figure, outside the panels on the right, families in registry order."""
    handles = [Line2D([], [], **_line(sweep, m)) for m in models]
    labels = list(models)
    for handle, label in extra:
        handles.append(handle)
        labels.append(label)
    fig.legend(handles, labels, loc="outside right upper", title="family", frameon=False)


def _line(sweep: Sweep, model: str) -> dict:
    return line_style(sweep.styles[model], markersize=5, linewidth=1.5)


def _log2_axis(ax, values) -> None:
    """Log-2 x axis with a tick at each value, written as plain integers."""
    values = sorted({int(v) for v in values})
    ax.set_xscale("log", base=2)
    ax.set_xticks(values)
    ax.set_xticklabels([str(v) for v in values], rotation=45 if len(values) > 5 else 0)
    ax.minorticks_off()


def _log_subs(values) -> tuple[float, ...]:
    """Where to label a log-10 axis: decades only over a wide span, 1-2-5 steps over a narrow one."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    span = math.log10(values.max() / values.min()) if len(values) else 0.0
    return (1.0,) if span > 4 else (1.0, 3.0) if span > 1.5 else (1.0, 2.0, 5.0)


def _short_exponent(value: float, _position=None) -> str:
    """3e9 rather than 3x10^9: compact tick labels for a log axis."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _span(lengths) -> str:
    """'64, 128' for up to three lengths, '64-2048' for more; 'none' for none."""
    values = sorted({int(v) for v in lengths})
    if len(values) > 3:
        return f"{values[0]}-{values[-1]}"
    return ", ".join(str(v) for v in values) or "none"


UNDER_TRAINED = (Line2D([], [], marker="^", markerfacecolor="none", color="dimgrey", linestyle=""),
                 "under-trained: stopped still improving")  # the legend entry of the triangles


def _under_trained_marks(ax, x, y) -> bool:
    """A hollow triangle on each point whose trials include an under-trained one (stopped still improving);
    True when it drew any."""
    ax.scatter(x, y, marker="^", s=70, facecolors="none", edgecolors="dimgrey", zorder=5)
    return len(x) > 0


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="grey", wrap=True)


def _longest_length_panels(sweep: Sweep, rows: pd.DataFrame, title: str, empty: str):
    """The figure, and (panel, task, the task's rows at its longest trained length, that length) for each task
    with rows in `rows`; a task without any gets the note `empty`."""
    fig, axes = panel_grid(len(sweep.tasks), title)
    panels = []
    for ax, task in zip(axes, sweep.tasks):
        mine = rows[rows["task"] == task]
        if mine.empty:
            _note(ax, empty)
            ax.set_title(task)
            continue
        longest = int(mine["train_len"].max())
        panels.append((ax, task, mine[mine["train_len"] == longest], longest))
    return fig, panels


# --- the charts ----------------------------------------------------------------------------------------
def accuracy_vs_length(sweep: Sweep, out_dir: Path) -> list[Path]:
    """Accuracy at the trained length against that length (log x), one line per family, a panel per task."""
    fig, axes = panel_grid(len(sweep.tasks), "Accuracy at the trained length")
    any_failed = any_capped = any_spread = any_under = False
    for ax, task in zip(axes, sweep.tasks):
        cells = sweep.cells[(sweep.cells["task"] == task) & (sweep.cells["status"] != "missing")]
        for model in sweep.models:
            mine = cells[cells["model"] == model].sort_values("train_len")
            if mine.empty:
                continue
            ax.plot(mine["train_len"], mine["accuracy"], **_line(sweep, model))
            spread = mine.dropna(subset=["ci_low"])
            if not spread.empty:  # the 95 % bootstrap interval over seeds, where a cell has 2 or more
                ax.fill_between(spread["train_len"], spread["ci_low"], spread["ci_high"], alpha=0.15, linewidth=0,
                                color=sweep.styles[model]["color"])
                any_spread = True
            failed = mine[mine["failed"] > 0]
            ax.scatter(failed["train_len"], failed["accuracy"], marker="x", s=60, color="black", zorder=5)
            any_failed |= not failed.empty
            capped = mine[mine["timeouts"] > 0]
            ax.scatter(capped["train_len"], capped["accuracy"], marker="o", s=110, facecolors="none",
                       edgecolors="black", zorder=5)
            any_capped |= not capped.empty
            under = mine[mine["under_trained"] > 0]
            ax.scatter(under["train_len"], under["accuracy"], marker="^", s=70, facecolors="none",
                       edgecolors="dimgrey", zorder=5)
            any_under |= not under.empty
        ax.axhline(THRESHOLD, color="grey", linestyle="--", linewidth=1)
        _log2_axis(ax, sweep.cells.loc[sweep.cells["task"] == task, "train_len"])
        ax.set(title=task, xlabel="trained length (tokens)", ylabel="accuracy", ylim=(-0.03, 1.03))
    extra = [(Line2D([], [], color="grey", linestyle="--"), f"horizon threshold {THRESHOLD}")]
    if any_failed:
        extra.append((Line2D([], [], marker="x", color="black", linestyle=""), "a failed seed (counted 0)"))
    if any_capped:
        extra.append((Line2D([], [], marker="o", markerfacecolor="none", color="black", linestyle=""),
                      "a seed stopped by its time cap (counted at its accuracy)"))
    if any_spread:
        extra.append((Patch(color="grey", alpha=0.3, linewidth=0), "95 % bootstrap interval over seeds"))
    if any_under:
        extra.append((Line2D([], [], marker="^", markerfacecolor="none", color="dimgrey", linestyle=""),
                      "under-trained: stopped still improving"))
    _family_legend(fig, sweep, sweep.models, extra)
    return save_figure(fig, out_dir, "accuracy_vs_length")


def heatmap(sweep: Sweep, out_dir: Path) -> list[Path]:
    """Family x trained length grid per task; each cell shows its accuracy ("*": a seed failed, "+": a seed
    stopped by its time cap, "~": under-trained, "n/a": not run)."""
    n_models = len(sweep.models)
    width = max(3.0, 0.6 * sweep.cells.groupby("task")["train_len"].nunique().max() + 1.5)
    title = ("Accuracy at the trained length, per family and length\n"
             "(*: a seed failed and counts 0;  +: a seed hit its time cap;  ~: under-trained;  n/a: not run)")
    fig, axes = panel_grid(len(sweep.tasks), title, extra_width=1.0, panel=(width, 0.32 * n_models + 1.3))
    image = None
    for ax, task in zip(axes, sweep.tasks):
        cells = sweep.cells[sweep.cells["task"] == task]
        lengths = sorted(cells["train_len"].unique())
        grid = cells.pivot(index="model", columns="train_len", values="accuracy").reindex(sweep.models)
        status = cells.pivot(index="model", columns="train_len", values="status").reindex(sweep.models)
        failed = cells.pivot(index="model", columns="train_len", values="failed").reindex(sweep.models)
        capped = cells.pivot(index="model", columns="train_len", values="timeouts").reindex(sweep.models)
        under = cells.pivot(index="model", columns="train_len", values="under_trained").reindex(sweep.models)
        values = np.ma.masked_where(status.to_numpy() == "missing", grid.to_numpy(dtype=float))
        image = ax.imshow(values, cmap=CMAP, vmin=0.0, vmax=1.0, aspect="auto")
        for i, model in enumerate(sweep.models):
            for j, length in enumerate(lengths):
                if status.loc[model, length] == "missing":
                    text, colour = "n/a", "black"
                else:
                    value = grid.loc[model, length]
                    marks = ("*" if failed.loc[model, length] else "") + ("+" if capped.loc[model, length] else "")
                    marks += "~" if under.loc[model, length] else ""
                    text = f"{value:.2f}{marks}"
                    colour = "white" if value < 0.6 else "black"
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=8)
        ax.set_xticks(range(len(lengths)), [str(int(v)) for v in lengths])
        ax.set_yticks(range(n_models), sweep.models)
        ax.grid(False)
        ax.set(title=task, xlabel="trained length (tokens)")
    fig.colorbar(image, ax=axes, label="accuracy", shrink=0.8)
    return save_figure(fig, out_dir, "heatmap")


def accuracy_vs_lag(sweep: Sweep, out_dir: Path) -> list[Path]:
    """Accuracy by lag bucket at each task's longest trained length (trained and evaluated there)."""
    lags = sweep.results.lags
    if lags is None or lags.empty:
        return []
    if "lag_unit" in lags.columns:  # lags in symbols, every model's; a pretrained model's in tokens are its own
        lags = lags[lags["lag_unit"].fillna("symbols") == "symbols"]
    lags = lags[lags["trial_id"].isin(sweep.chosen["trial_id"]) & (lags["eval_len"] == lags["train_len"])]
    fig, panels = _longest_length_panels(sweep, lags, "Accuracy against lag (how far back the answer lies)",
                                         "no lag data")
    for ax, task, mine, longest in panels:
        mine = mine.assign(correct=lambda d: d["accuracy"] * d["count"])
        pooled = mine.groupby(["model", "lag_bucket"])[["correct", "count"]].sum()
        pooled["accuracy"] = pooled["correct"] / pooled["count"]
        for model in sweep.models:
            if model in pooled.index.get_level_values("model"):
                curve = pooled.loc[model].sort_index()
                ax.plot(curve.index, curve["accuracy"], **_line(sweep, model))
        _log2_axis(ax, mine["lag_bucket"])
        ax.set(title=f"{task} (length {longest})", xlabel="lag bucket [b, 2b) (tokens)", ylabel="accuracy",
               ylim=(-0.03, 1.03))
    _family_legend(fig, sweep, [m for m in sweep.models if m in set(lags["model"])])
    return save_figure(fig, out_dir, "accuracy_vs_lag")


def accuracy_vs_context_tokens(sweep: Sweep, out_dir: Path) -> list[Path]:
    """Accuracy at the trained length against the tokens read (runs.csv's context_tokens, log x), a panel per
    task, when the sweep has a `pretrained:` model: a family reads its length, a pretrained model the tokens
    of the rendered text (instruction, separators and shots included), so the two are placed by what each read.
    Seeds of the chosen config are averaged; skipped and failed trials are left out."""
    runs = sweep.results.runs
    if "context_tokens" not in runs.columns or not runs["model"].map(is_pretrained).any():
        return []
    rows = runs[runs["trial_id"].isin(sweep.chosen["trial_id"]) & is_plain_slice(runs)
                & (runs["eval_len"] == runs["train_len"]) & runs["status"].isin(("ok", "timeout"))]
    points = rows.groupby(["task", "model", "train_len"])[["context_tokens", "accuracy"]].mean().reset_index()
    if points.empty:
        return []
    fig, axes = panel_grid(len(sweep.tasks), "Accuracy against the context read (a family: its length; a "
                                             "pretrained model: the tokens of its text)")
    for ax, task in zip(axes, sweep.tasks):
        mine = points[points["task"] == task]
        for model in sweep.models:
            curve = mine[mine["model"] == model].sort_values("context_tokens")
            if not curve.empty:
                ax.plot(curve["context_tokens"], curve["accuracy"], **_line(sweep, model))
        ax.set_xscale("log", base=2)
        ax.set(title=task, xlabel="tokens read", ylabel="accuracy", ylim=(-0.03, 1.03))
    _family_legend(fig, sweep, [m for m in sweep.models if m in set(points["model"])])
    return save_figure(fig, out_dir, "accuracy_vs_context_tokens")


def length_generalisation(sweep: Sweep, out_dir: Path) -> list[Path]:
    """Accuracy at k x the trained length (k = 1, 2, 4, ...). Each family's line averages, at every k, the
    same trained lengths: those at which it was evaluated (status ok) at every k of the task."""
    runs = sweep.results.runs
    runs = runs[runs["trial_id"].isin(sweep.chosen["trial_id"]) & (runs["status"] == "ok")]
    runs = runs[is_plain_slice(runs)]
    runs = runs.assign(ratio=runs["eval_len"] / runs["train_len"])
    runs = runs[(runs["ratio"] >= 1) & (runs["ratio"] == runs["ratio"].round())]
    fig, axes = panel_grid(len(sweep.tasks), "Length generalisation: accuracy beyond the trained length")
    any_under = False
    for ax, task in zip(axes, sweep.tasks):
        mine = runs[runs["task"] == task]
        ratios = sorted(mine["ratio"].unique())
        evaluated = mine.groupby(["model", "train_len"])["ratio"].transform("nunique")
        mine = mine[evaluated == len(ratios)]
        if len(ratios) < 2 or mine.empty:
            _note(ax, "no evaluation beyond the\ntrained length in this sweep")
        means = mine.groupby(["model", "ratio"])["accuracy"].mean()
        under = mine["under_trained"].map(as_bool).groupby([mine["model"], mine["ratio"]]).any()
        for model in sweep.models:
            if model in means.index.get_level_values("model"):
                ax.plot(means.loc[model].index, means.loc[model].to_numpy(), **_line(sweep, model))
                marked = means.loc[model][under.loc[model]]
                any_under |= _under_trained_marks(ax, marked.index, marked.to_numpy())
        if ratios:
            _log2_axis(ax, ratios)
            ax.set_xticklabels([f"{int(r)}x" for r in ratios])
        ax.set(title=f"{task}\n(mean over trained lengths {_span(mine['train_len'])})",
               xlabel="evaluation length / trained length", ylabel="accuracy", ylim=(-0.03, 1.03))
    _family_legend(fig, sweep, sweep.models, [UNDER_TRAINED] if any_under else [])
    return save_figure(fig, out_dir, "length_generalisation")


def accuracy_vs_cost(sweep: Sweep, out_dir: Path) -> list[Path]:
    """Accuracy against training compute, one point per (family, trained length), joined in length order;
    bubble area grows with the state size (floats carried per sequence), or peak memory when unknown."""
    chosen = sweep.chosen.copy()
    chosen["flops"] = chosen["flops_per_step"] * chosen["steps"]
    use_flops = (chosen["flops"] > 0).any()
    x_column, x_label = ("flops", "training FLOPs (flops_per_step x steps)") if use_flops else \
        ("train_seconds", "training time (s)")
    size_column = "state_size" if chosen["state_size"].notna().any() else "peak_memory_mb"
    size_unit = "state floats" if size_column == "state_size" else "MB peak memory"
    points = chosen.groupby(["task", "model", "train_len"])[[x_column, size_column]].mean()
    cells = sweep.cells.set_index(["task", "model", "train_len"])
    points["accuracy"] = cells["accuracy"].reindex(points.index)
    biggest = float(np.nanmax(points[size_column].to_numpy(dtype=float), initial=0.0)) or 1.0

    def area(value: float) -> float:  # marker area in points^2: 12 for none up to 250 for the largest
        return 12.0 + 238.0 * math.sqrt(max(0.0, value if not math.isnan(value) else 0.0) / biggest)

    fig, axes = panel_grid(len(sweep.tasks), "Accuracy against training cost", extra_width=2.0)
    any_under = False
    for ax, task in zip(axes, sweep.tasks):
        if task not in points.index.get_level_values("task"):
            _note(ax, "no trials")
            continue
        mine = points.loc[task].dropna(subset=[x_column])
        for model in sweep.models:
            if model not in mine.index.get_level_values("model"):
                continue
            curve = mine.loc[model].sort_index()
            style = sweep.styles[model]
            ax.plot(curve[x_column], curve["accuracy"], color=style["color"], linewidth=0.8, alpha=0.6)
            ax.scatter(curve[x_column], curve["accuracy"], s=[area(v) for v in curve[size_column]],
                       color=style["color"], marker=style["marker"], alpha=0.7, edgecolors="black",
                       linewidths=0.4, zorder=3)
            under = cells["under_trained"].reindex([(task, model, n) for n in curve.index]).to_numpy() > 0
            any_under |= _under_trained_marks(ax, curve[x_column][under], curve["accuracy"][under])
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=_log_subs(mine[x_column])))
        ax.xaxis.set_major_formatter(FuncFormatter(_short_exponent))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(title=task, xlabel=x_label, ylabel="accuracy at trained length", ylim=(-0.05, 1.08))
    sizes = sorted({biggest, biggest / 4, 0.0}, reverse=True)
    extra = [(Line2D([], [], marker="o", linestyle="", color="grey", alpha=0.6, markersize=math.sqrt(area(v))),
              f"{v:,.0f} {size_unit}") for v in sizes]
    unknown = [m for m in sweep.models if size_column == "state_size" and m in chosen["model"].values
               and chosen.loc[chosen["model"] == m, "state_size"].isna().all()]
    if unknown:  # a model that declares no state size is drawn at the smallest size, and said so
        extra.append((Line2D([], [], linestyle=""), f"state size unknown: {', '.join(unknown)}"))
    _family_legend(fig, sweep, sweep.models, extra + ([UNDER_TRAINED] if any_under else []))
    return save_figure(fig, out_dir, "accuracy_vs_cost")


def training_curves(sweep: Sweep, out_dir: Path) -> list[Path]:
    """Evaluation accuracy at the trained length against training tokens, at each task's longest length."""
    curves = sweep.results.curves
    if curves is None or curves.empty:
        return []
    curves = curves[curves["trial_id"].isin(sweep.chosen["trial_id"]) & curves["eval_accuracy"].notna()]
    fig, panels = _longest_length_panels(sweep, curves, "Learning curves at the longest trained length",
                                         "no evaluations recorded")
    for ax, task, mine, longest in panels:
        means = mine.groupby(["model", "step"])[["tokens", "eval_accuracy"]].mean()
        for model in sweep.models:
            if model in means.index.get_level_values("model"):
                curve = means.loc[model].sort_index()
                ax.plot(curve["tokens"], curve["eval_accuracy"], **_line(sweep, model))
        ax.axhline(THRESHOLD, color="grey", linestyle="--", linewidth=1)
        ax.set(title=f"{task} (length {longest})", xlabel="training tokens", ylabel="accuracy",
               ylim=(-0.03, 1.03))
        ax.xaxis.set_major_formatter(FuncFormatter(count_label))  # '50k', not 50000 (labels collide)
    threshold = (Line2D([], [], color="grey", linestyle="--"), f"horizon threshold {THRESHOLD}")
    _family_legend(fig, sweep, [m for m in sweep.models if m in set(curves["model"])], [threshold])
    return save_figure(fig, out_dir, "training_curves")


def cost_charts(results: Results, out_dir: Path) -> list[Path]:
    """The cost curves (runners/reporting/cost_charts.py) when the directory holds cost.csv."""
    if results.cost is None or results.cost.empty:
        return []
    fits = results.cost_fit if results.cost_fit is not None else pd.DataFrame()
    return [Path(p) for p in draw_cost_charts(results.cost, fits, out_dir)]


CHARTS = (accuracy_vs_length, heatmap, accuracy_vs_lag, length_generalisation, accuracy_vs_eval_length,
          accuracy_vs_cost, training_curves)
PRETRAINED_CHARTS = (accuracy_vs_context_tokens,)  # drawn when a pretrained: model is in the sweep


def draw_charts(results: Results, out_dir: str | Path, parallel: bool = False) -> list[Path]:
    """Draw every chart the tables allow into `out_dir` (created if needed); return the files written (with
    `parallel`, in two processes: figures.draw_in_parallel)."""
    return [path for paths in draw_in_parallel(chart_jobs(results, out_dir), parallel) for path in paths]


def chart_jobs(results: Results, out_dir: str | Path) -> list[Job]:
    """The drawing jobs of `draw_charts` (figures.draw_in_parallel runs them), `out_dir` created."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sweep = Sweep.from_results(results)
    return [(_in_style, (chart, sweep, out_dir)) for chart in CHARTS + PRETRAINED_CHARTS] + \
        [(_in_style, (cost_charts, results, out_dir))]


def _in_style(chart, *args) -> list[Path]:
    """chart(*args) in the sweep charts' style (RC)."""
    with matplotlib.rc_context(RC):
        return chart(*args)
