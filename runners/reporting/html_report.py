"""`report.html`: a sweep's results as one self-contained page, rebuilt from its tables alone.

`write_report(DIR)` reads DIR's tables (runs.csv, lags.csv, curves.csv, slice_curves.csv, cost.csv) and writes
DIR/report.html, in this order, each section only where the tables have something for it:

    run             command and wall time (from the folder's README.md, where it records them), commit,
                    device, precision and torch (runs.csv), trials by status, the README itself
    leaderboard     runners/reporting/leaderboard.py's table, seed intervals as ±, sortable by any column;
                    a cell with a failed (*), missing (n/a), timed-out (+) or under-trained (~) trial is
                    marked and its title says why; each task cell links to its trials' training curves
    tasks           per task: accuracy against trained length and against lag (one SVG), and the family x
                    length grid whose cells link to the training curves
    frontier        recall against state size and the memory-efficiency table (runners/reporting/frontier.py)
    named slices    the slice table and curves (runners/reporting/slices.py); error rates (error_rates.py)
    cost            the cost curves (runners/reporting/cost_charts.py)
    other files     every other Markdown, CSV or SVG file at the top of the folder (a reproduction's
                    claims.md and claims.svg, say, shown right after the run), as it is

A reproduction's folder of verdicts on another folder's runs (claims.csv, no runs.csv) gets the run section
(its README) and its files alone.

Charts are inline SVG and the script and style are in the page, so it opens from disk without a server and
loads nothing from anywhere. Each section is one line of the page, but for the lines of a code block in a
README (runners/reporting/html_assets.py writes every piece on one line), so two reports never repeat each
other line by line. Nothing in it depends on the time it was written: the same tables give the same bytes.
Example, with the committed results:

    write_report("results/smoke-cpu")   # -> results/smoke-cpu/report.html, about 1.0 MB for 418 trials
"""

from __future__ import annotations

import base64
import io
import json
import re
import tempfile
from pathlib import Path
from typing import NamedTuple

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from membench.runners.reporting.charts import Sweep
from membench.runners.reporting.cost_charts import LOG_LOG_CHARTS, SAVE, attention_share_chart, log_log_chart
from membench.runners.reporting.error_rates import error_rate_table, error_rates_markdown
from membench.runners.reporting.figures import RC, line_style
from membench.runners.reporting.frontier import frontier_markdown, frontier_table, has_sizes, recall_vs_state
from membench.runners.reporting.html_assets import (
    csv_html,
    esc,
    html_table,
    inline_html,
    inline_svg,
    markdown_html,
    page,
    shade,
)
from membench.runners.reporting.leaderboard import (
    THRESHOLD,
    build_leaderboard,
    outdone_line,
    scaled_line,
    seeds_line,
    under_trained_line,
)
from membench.runners.reporting.results import REQUIRED, Results, failure_status, read_results
from membench.runners.reporting.slices import named_slice_rows, slice_curves_chart, slice_table, slices_markdown
from membench.runners.reporting.text import count, fixed
from membench.runners.tables import atomic_write_bytes

REPORT = "report.html"
MAX_SLICE_PANELS = 12  # trials with named slices whose curves the page draws; more are left to charts/
# the folder's own files that the report rebuilds from the tables (or is): not shown again as "other files"
REBUILT = {"runs.csv", "lags.csv", "curves.csv", "slice_curves.csv", "cost.csv", "leaderboard.md",
           "leaderboard.csv", "slices.md", "slices.csv", "error_rates.md", "error_rates.csv", "frontier.md",
           "frontier.csv", "README.md"}
# cell marks: (cells column, mark, class, what it means)
MARKS = (("failed", "*", "failed", "failed trial(s) (oom, diverged or error), counted 0"),
         ("missing", "n/a", "missing", "cell(s) the sweep did not run, counted 0"),
         ("timeouts", "+", "timeout", "trial(s) stopped by the time cap, counted at the accuracy reached"),
         ("under_trained", "~", "under", "under-trained: stopped at the budget while still improving, so the "
                                         "accuracy may understate the family"),
         ("outdone", "<", "under", "beaten at a longer length trained for more steps, so the budget likely held "
                                   "the cell back"))


class Section(NamedTuple):
    anchor: str
    title: str
    html: str


def write_report(directory: str | Path) -> Path:
    """Write DIR/report.html from DIR's tables (see the module docstring); return its path.

    Raises UsageError, before writing anything, when DIR is not a results folder (no usable runs.csv)."""
    return save_report(read_folder(directory))


def read_folder(directory: str | Path) -> Results:
    """The tables of a results folder (runners/reporting/results.py: UsageError when it is not one), or, for a
    reproduction's folder of verdicts on another folder's runs (claims.csv and no runs.csv), no runs at all:
    its report is its README and files."""
    directory = Path(directory)
    if (directory / "claims.csv").is_file() and not (directory / "runs.csv").exists():
        return Results(directory, pd.DataFrame(columns=REQUIRED["runs"]))
    return read_results(directory)


def save_report(results: Results) -> Path:
    """Write the report of tables already read (runners/reporting/results.py) into their folder."""
    path = results.directory / REPORT
    atomic_write_bytes(path, report_html(results).encode())
    return path


def report_html(results: Results) -> str:
    """The page of `results`, as text."""
    runs = results.runs
    named = named_slice_rows(runs)
    figures = _Figures()
    sections = [run_section(results)]
    curves: dict = {"threshold": THRESHOLD, "groups": [], "trials": {}}
    if len(named) < len(runs):  # a recipe of named slices only has no leaderboard (it would be all zeros)
        sweep = Sweep.from_results(results)
        groups = curve_groups(sweep, results.curves, curves)
        sections += [leaderboard_section(sweep, groups), tasks_section(sweep, groups, figures)]
        if has_sizes(runs):
            sections.append(frontier_section(runs, figures))
    if not named.empty:
        sections.append(slices_section(results, named, figures))
    if len(runs) and not (rates := error_rate_table(runs)).empty:
        sections.append(Section("error-rates", "Error rates", markdown_html(error_rates_markdown(rates))))
    if results.cost is not None and not results.cost.empty:
        sections.append(cost_section(results, figures))
    if others := other_files(results.directory, figures):  # a reproduction's claims come first: its point
        at = 1 if (results.directory / "claims.csv").is_file() else len(sections)
        sections.insert(at, Section("files", "Other files", others))
    data = json.dumps(curves, sort_keys=True, separators=(",", ":")).replace("</", "<\\/")
    body = "\n".join(f'<section id="{s.anchor}"><h2>{esc(s.title)}</h2>{s.html}</section>' for s in sections)
    body += f'\n<script type="application/json" id="curve-data">{data}</script>'
    trials = runs["trial_id"].nunique()
    subtitle = (f"{trials} trials, {runs['task'].nunique()} tasks, {runs['model'].nunique()} families; "
                "rebuilt from the folder's tables by membench report") if trials else \
        "a reproduction's verdicts on another folder's runs (its README names them); rebuilt by membench report"
    return page(f"membench report: {results.directory.name}", subtitle, [(s.anchor, s.title) for s in sections],
                body)


# --- the run ----------------------------------------------------------------------------------------------
def run_section(results: Results) -> Section:
    """What made the run: the README's command and wall time, the tables' commit, device and versions."""
    runs = results.runs
    readme_path = results.directory / "README.md"
    readme = readme_path.read_text(errors="replace") if readme_path.is_file() else ""
    commands = [line.strip() for line in readme.splitlines() if re.match(r" {4}membench ", line)]
    wall = re.search(r"^- wall time: (.+?)(?=\n- |\n\n|\Z)", readme, re.M | re.S)
    first = runs.drop_duplicates("trial_id")
    statuses = runs.groupby("trial_id")["status"].agg(failure_status).value_counts().sort_index()
    seconds = float(np.nansum(first["train_seconds"].to_numpy(dtype=float)))
    command = ("<br>".join(f"<code>{esc(c)}</code>" for c in commands)
               or "not recorded (no README.md in the folder names it)")
    rows = [
        ("command", command),
        ("commit", _distinct(runs, "git_commit")), ("device", _distinct(runs, "device")),
        ("precision", _distinct(runs, "precision")), ("torch", _distinct(runs, "torch_version")),
        ("wall time", inline_html(" ".join(wall.group(1).split())) if wall else "not recorded in README.md"),
        ("training time", f"{seconds:,.0f} s summed over the trials (train_seconds)"),
        ("trials", f"{len(first):,}: " + ", ".join(f"{n:,} {status}" for status, n in statuses.items())),
    ] if len(runs) else [("command", command), ("runs", "none in this folder: its README names them")]
    meta = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in rows)
    fold = "<details>" if len(runs) else "<details open>"  # without runs, the README is most of the page
    about = f"{fold}<summary>The folder's README.md</summary>{markdown_html(readme)}</details>" if readme else ""
    return Section("run", "The run", f'<dl class="meta">{meta}</dl>{about}')


def _distinct(runs: pd.DataFrame, column: str) -> str:
    values = sorted(runs[column].dropna().astype(str).unique()) if column in runs.columns else []
    return esc(", ".join(values)) if values else "not recorded"


# --- the leaderboard, and where each of its cells leads ----------------------------------------------------
def curve_groups(sweep: Sweep, curves: pd.DataFrame | None, data: dict) -> dict[tuple[str, str], int]:
    """(task, model) -> the index of its group in `data["groups"]`, filled with the training curves (tokens,
    evaluation accuracy) of the trials the leaderboard averages for that family on that task."""
    evaluated = curves.dropna(subset=["eval_accuracy"]) if curves is not None else None
    by_trial = dict(tuple(evaluated.sort_values(["trial_id", "step"]).groupby("trial_id"))) \
        if evaluated is not None else {}
    groups = {}
    chosen = sweep.chosen.sort_values(["task", "model", "train_len", "seed", "trial_id"])
    for (task, model), trials in chosen.groupby(["task", "model"], sort=False):
        groups[(task, model)] = len(data["groups"])
        data["groups"].append({"title": f"{task} · {model}: training curves",
                               "trials": trials["trial_id"].tolist()})
        for row in trials.itertuples():
            points = by_trial.get(row.trial_id)
            data["trials"][row.trial_id] = {
                "label": f"length {row.train_len}, seed {row.seed}",
                "x": [] if points is None else [int(v) for v in points["tokens"]],
                "y": [] if points is None else [round(float(v), 4) for v in points["eval_accuracy"]]}
    return groups


def cell_marks(cells: pd.DataFrame) -> tuple[str, str, str]:
    """The marks of a group of cells (HTML), the class of the worst, and the title explaining them."""
    counts = {"failed": int(cells["failed"].sum()), "missing": int((cells["status"] == "missing").sum()),
              "timeouts": int(cells["timeouts"].sum()), "under_trained": int((cells["under_trained"] > 0).sum()),
              "outdone": int(cells["outdone"].sum())}
    found = [(counts[key], mark, kind, meaning) for key, mark, kind, meaning in MARKS if counts[key]]
    html = "".join(f'<span class="mark {kind}">{esc(mark)}</span>' for _, mark, kind, _ in found)
    return html, found[0][2] if found else "", "; ".join(f"{n} {meaning}" for n, _, _, meaning in found)


def _plus_minus(value: float, low: float, high: float) -> str:
    spread = "" if np.isnan(low) else f' <span class="ci">±{(high - low) / 2:.3f}</span>'
    return f"{value:.3f}{spread}"


def leaderboard_section(sweep: Sweep, groups: dict[tuple[str, str], int]) -> Section:
    """The ranked families, sortable; every task cell links to its training curves and shows its marks."""
    board, tasks = build_leaderboard(sweep.results.runs)
    header = ["rank", "model", "score", *[esc(t) for t in tasks], "params", "train time (s)", "trials", "flags"]
    rows = []
    for _, row in board.iterrows():
        tied = (board["tied_rank"] == row["tied_rank"]).sum() > 1
        cells = [(f"{row['tied_rank']}=" if tied else str(row["rank"]), {"data-sort": str(row["rank"])}),
                 f"<strong>{esc(row['model'])}</strong>",
                 (_plus_minus(row["score"], row["score_ci_low"], row["score_ci_high"]),
                  {"data-sort": f"{row['score']:.6f}"})]
        for task in tasks:
            mine = sweep.cells[(sweep.cells["model"] == row["model"]) & (sweep.cells["task"] == task)]
            marks, kind, why = cell_marks(mine)
            accuracy = _plus_minus(row[f"{task} mean_accuracy"], row[f"{task} mean_accuracy_ci_low"],
                                   row[f"{task} mean_accuracy_ci_high"])
            if (task, row["model"]) in groups:
                accuracy = f'<a href="#curves-{groups[(task, row["model"])]}">{accuracy}</a>'
            length = int(row[f"{task} horizon"])
            if f"{task} mean_scaled_accuracy" in board:  # beside acc where the task's chance is not near 0
                accuracy += f' <span class="ci">[{row[f"{task} mean_scaled_accuracy"]:.2f}]</span>'
            cell = f'{accuracy}{marks}<span class="hz">horizon {length or "-"}</span>'
            attributes = {"data-sort": f"{row[f'{task} mean_accuracy']:.6f}", "class": kind,
                          "style": shade(row[f"{task} mean_accuracy"]),
                          "title": why or "click for the training curves"}
            cells.append((cell, {k: v for k, v in attributes.items() if v}))
        flags = [(int(row[key]), label, kind) for key, label, kind in (
            ("failed_trials", "failed", "failed"), ("timeout_trials", "timed out", "timeout"),
            ("under_trained_cells", "under-trained", "under"),
            ("outdone_cells", "beaten at a longer length", "under"), ("missing_cells", "missing", "missing"),
            ("unevaluated_trials", "not evaluated", "missing")) if row[key] == row[key]]  # NaN: not recorded
        cells += [(count(row["params"]), {"data-sort": str(int(row["params"]))}),
                  fixed(row["train_seconds"], 1), str(int(row["trials"])),
                  (", ".join(f'<span class="mark {kind}">{n} {label}</span>' for n, label, kind in flags if n),
                   {"data-sort": str(sum(n for n, _, _ in flags))})]
        rows.append(cells)
    numeric = {0, 2, *range(3, 3 + len(tasks)), 3 + len(tasks), 4 + len(tasks), 5 + len(tasks)}
    legend = "; ".join(f'<span class="mark {kind}">{esc(mark)}</span> {esc(meaning)}'
                       for _, mark, kind, meaning in MARKS)
    notes = [
        f"Per task: the accuracy at the trained length, averaged over the trained lengths, and the "
        f"<strong>horizon</strong>, the longest trained length reaching {THRESHOLD}. <strong>score</strong> is the "
        "mean over tasks. Each cell is the seed mean of the best config; definitions in "
        "<code>runners/reporting/leaderboard.py</code>. Click a header to sort; click an accuracy for its "
        "training curves.",
        f"Marks: {legend}.", inline_html(seeds_line(board)), inline_html(under_trained_line(board)),
        *([inline_html(outdone_line(board))] if outdone_line(board) else []),
    ]
    if any(f"{t} mean_scaled_accuracy" in board for t in tasks):
        notes.insert(1, inline_html(scaled_line(board, tasks)))
    html = f'<div class="scroll">{html_table(header, rows, numeric)}</div>'
    return Section("leaderboard", "Leaderboard",
                   html.replace("<table", '<table id="board"', 1)
                   + "".join(f'<p class="note">{n}</p>' for n in notes))


# --- per task -----------------------------------------------------------------------------------------------
def tasks_section(sweep: Sweep, groups: dict[tuple[str, str], int], figures: "_Figures") -> Section:
    """Per task: its figure, then the family x trained length grid (in a fold)."""
    parts = ['<p class="note">Left: accuracy at the trained length (× a failed seed, ○ one stopped by its time '
             'cap, △ under-trained; shaded: the 95 % interval over seeds). Right: accuracy by lag bucket [b, 2b) '
             'at the task\'s longest trained length: how far back the answer lies.</p>']
    for task in sweep.tasks:
        parts.append(f'<h3 id="task-{_slug(task)}">{esc(task)}</h3>')
        with matplotlib.rc_context(RC):
            parts.append(figures.add(task_figure(sweep, task)))
        parts.append(f"<details><summary>Accuracy per family and trained length (click a cell for its "
                     f"training curves)</summary>{length_grid(sweep, task, groups)}</details>")
    return Section("tasks", "Per task", "".join(parts))


def length_grid(sweep: Sweep, task: str, groups: dict[tuple[str, str], int]) -> str:
    cells = sweep.cells[sweep.cells["task"] == task]
    lengths = sorted(int(n) for n in cells["train_len"].unique())
    rows = []
    for model in sweep.models:
        row: list = [f"<strong>{esc(model)}</strong>"]
        for length in lengths:
            cell = cells[(cells["model"] == model) & (cells["train_len"] == length)]
            marks, kind, why = cell_marks(cell)
            if cell.empty or cell["status"].iloc[0] == "missing":
                row.append((f"n/a{marks}", {"class": "missing", "data-sort": "", "title": why}))
                continue
            accuracy = float(cell["accuracy"].iloc[0])
            text = f"{accuracy:.3f}"
            if (task, model) in groups:
                text = f'<a href="#curves-{groups[(task, model)]}">{text}</a>'
            row.append((text + marks, {"style": shade(accuracy), "data-sort": f"{accuracy:.6f}", "class": kind,
                                       "title": why or f"{int(cell['seeds'].iloc[0])} seed(s)"}))
        rows.append([(c[0], {k: v for k, v in c[1].items() if v}) if isinstance(c, tuple) else c for c in row])
    header = ["model", *[f"length {n}" for n in lengths]]
    return f'<div class="scroll">{html_table(header, rows, set(range(1, len(header))))}</div>'


def task_figure(sweep: Sweep, task: str) -> Figure:
    """Two panels: accuracy against trained length (log 2), and against lag at the longest trained length."""
    height = max(3.0, 0.17 * len(sweep.models) + 0.8)
    fig = Figure(figsize=(10.5, height), layout="constrained")
    by_length, by_lag = fig.subplots(1, 2)
    cells = sweep.cells[(sweep.cells["task"] == task) & (sweep.cells["status"] != "missing")]
    for model in sweep.models:
        mine = cells[cells["model"] == model].sort_values("train_len")
        if mine.empty:
            continue
        colour = sweep.styles[model]["color"]
        by_length.plot(mine["train_len"], mine["accuracy"], **_line(sweep, model))
        spread = mine.dropna(subset=["ci_low"])
        by_length.fill_between(spread["train_len"], spread["ci_low"], spread["ci_high"], alpha=0.15, linewidth=0,
                               color=colour)
        for column, marker, size in (("failed", "x", 60), ("timeouts", "o", 110), ("under_trained", "^", 70)):
            marked = mine[mine[column] > 0]
            by_length.scatter(marked["train_len"], marked["accuracy"], marker=marker, s=size, zorder=5,
                              **({"color": "black"} if marker == "x" else {"facecolors": "none",
                                                                           "edgecolors": "black"}))
    by_length.axhline(THRESHOLD, color="grey", linestyle="--", linewidth=1)
    _log2_axis(by_length, sweep.cells.loc[sweep.cells["task"] == task, "train_len"])
    by_length.set(title="accuracy at the trained length", xlabel="trained length (tokens)", ylabel="accuracy",
                  ylim=(-0.03, 1.03))
    lags = sweep.results.lags
    if lags is not None and "lag_unit" in lags.columns:  # a pretrained model's lags in tokens are not pooled in
        lags = lags[lags["lag_unit"].fillna("symbols") == "symbols"]
    lags = lags[(lags["task"] == task) & lags["trial_id"].isin(sweep.chosen["trial_id"])
                & (lags["eval_len"] == lags["train_len"])] if lags is not None else pd.DataFrame()
    if lags.empty:
        by_lag.text(0.5, 0.5, "no lag data", transform=by_lag.transAxes, ha="center", color="grey")
    else:
        longest = int(lags["train_len"].max())
        lags = lags[lags["train_len"] == longest].assign(correct=lambda d: d["accuracy"] * d["count"])
        pooled = lags.groupby(["model", "lag_bucket"])[["correct", "count"]].sum()
        for model in sweep.models:
            if model in pooled.index.get_level_values("model"):
                curve = pooled.loc[model].sort_index()
                by_lag.plot(curve.index, curve["correct"] / curve["count"], **_line(sweep, model))
        _log2_axis(by_lag, lags["lag_bucket"])
        by_lag.set(title=f"accuracy against lag at length {longest}", xlabel="lag bucket [b, 2b) (tokens)",
                   ylim=(-0.03, 1.03))
    handles = [Line2D([], [], **_line(sweep, m)) for m in sweep.models]
    fig.legend(handles, sweep.models, loc="outside right upper", frameon=False, title="family",
               ncols=2 if len(sweep.models) > 12 else 1, fontsize=8)
    return fig


def _line(sweep: Sweep, model: str) -> dict:
    return line_style(sweep.styles[model], markersize=4, linewidth=1.4)  # smaller than the charts': an inline figure


def _log2_axis(ax, values) -> None:
    values = sorted({int(v) for v in values})
    ax.set_xscale("log", base=2)
    ax.set_xticks(values, [str(v) for v in values])
    ax.minorticks_off()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


# --- frontier, slices, cost, other files ---------------------------------------------------------------------
def frontier_section(runs: pd.DataFrame, figures: "_Figures") -> Section:
    table = frontier_table(runs)
    chart = figures.add_drawn(recall_vs_state, table)
    return Section("frontier", "Recall against state size", chart + markdown_html(frontier_markdown(table)))


def slices_section(results: Results, named: pd.DataFrame, figures: "_Figures") -> Section:
    """The slice table, and the slice curves of up to MAX_SLICE_PANELS trials (a panel each)."""
    trials = named["trial_id"].nunique()
    chart = figures.add_drawn(slice_curves_chart, results.slice_curves, named) if trials <= MAX_SLICE_PANELS \
        else (f'<p class="note">The slice curves of these {trials} trials, a panel each, are in '
              f'<code>charts/slice_curves.svg</code> (<code>membench charts</code> draws them).</p>')
    return Section("slices", "Named slices", markdown_html(slices_markdown(slice_table(results.runs))) + chart)


def cost_section(results: Results, figures: "_Figures") -> Section:
    fits = results.cost_fit if results.cost_fit is not None else pd.DataFrame()
    with matplotlib.rc_context(RC):
        drawn = [log_log_chart(results.cost, fits, *chart[1:]) for chart in LOG_LOG_CHARTS]
        drawn.append(attention_share_chart(results.cost))
    return Section("cost", "Cost against length", "".join(figures.add(fig, **SAVE) for fig in drawn if fig))


def other_files(directory: Path, figures: "_Figures") -> str:
    """Every Markdown, CSV or SVG file at the top of the folder that the report does not rebuild, shown as it
    is (a reproduction's claims.md and claims.svg, say); a CSV beside a Markdown file of its name is left to
    the Markdown. Neither raw HTML in a Markdown file nor a script in an SVG file can run in the page."""
    parts = []
    for path in sorted(directory.iterdir()):
        shown_as_markdown = path.suffix == ".csv" and path.with_suffix(".md").is_file()
        if path.name in REBUILT or path.suffix not in (".md", ".csv", ".svg") or shown_as_markdown \
                or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        body = {".md": lambda: markdown_html(text, shift=3), ".csv": lambda: csv_html(text, path.name),
                ".svg": lambda: svg_image(path)}[path.suffix]()
        parts.append(f'<h3 id="file-{_slug(path.name)}"><code>{esc(path.name)}</code></h3>{body}')
    return "".join(parts)


def svg_image(path: Path) -> str:
    """An SVG file of the folder as an image in a data URI: shown, never run (a script in it stays inert)."""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{esc(path.name)}" src="data:image/svg+xml;base64,{data}"></figure>'


class _Figures:
    """The page's figures as inline SVG, numbered in order so that their ids cannot meet."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, fig: Figure, **savefig) -> str:
        buffer = io.BytesIO()
        with matplotlib.rc_context({**RC, "svg.hashsalt": "membench"}):
            fig.savefig(buffer, format="svg", metadata={"Date": None}, **savefig)
        return self.add_svg(buffer.getvalue().decode())

    def add_drawn(self, draw, *args) -> str:
        """The SVG a drawing function of the charts writes (it saves PNG and SVG into a folder it is given)."""
        with tempfile.TemporaryDirectory() as folder:
            svgs = [Path(p) for p in draw(*args, Path(folder)) if str(p).endswith(".svg")]
            return self.add_svg(svgs[0].read_text()) if svgs else ""

    def add_svg(self, svg: str) -> str:
        """An SVG document as a figure of the page."""
        self.count += 1
        return f"<figure>{inline_svg(svg, f'f{self.count}-')}</figure>"
