"""Charts of the cost tables (cost.csv, cost_fit.csv), drawn from the tables alone, PNG and SVG.

    cost_time.*              ms per sequence (ms_per_step / batch_size) against length, log-log
    cost_memory.*            peak MB per sequence (peak_memory_mb / batch_size) against length, log-log
    cost_flops.*             FLOPs per sequence (flops / batch_size) against length, log-log
    cost_attention_share.*   attention_flops / flops against length, for families with attention

One line per family through its "ok" points; the legend carries the fitted exponent of the same
per-sequence cost ("transformer (n^1.9)") and where the family stopped ("oom at 8192"). The length
where a family stopped is marked with an X: at the measured value when there is one (a timeout keeps
its one step), otherwise continued from the last ok point along the fitted slope. Per-sequence costs
make the slopes read as exponents: 1 for O(n), 2 for O(n^2) (see runners/cost/fit.py).

    draw_cost_charts(cost, fits, out_dir) -> [out_dir/cost_time.png, out_dir/cost_time.svg, ...]

Uses matplotlib's object API (Figure, no pyplot), so it changes no global backend and needs no display.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, LogFormatter, NullLocator

from membench.runners.reporting.figures import RC, family_styles, save_figure

SAVE = {"dpi": 150, "bbox_inches": "tight"}  # the footnote sits below the axes
# (file stem, cost column divided by batch_size, cost_fit column, y label, title)
LOG_LOG_CHARTS = (
    ("cost_time", "ms_per_step", "time_exponent", "ms per sequence (step time / batch size)",
     "Training-step time per sequence"),
    ("cost_memory", "peak_memory_mb", "memory_exponent", "peak MB per sequence (above the model)",
     "Peak activation memory per sequence"),
    ("cost_flops", "flops", "flops_exponent", "FLOPs per sequence (forward + backward, analytic)",
     "FLOPs per sequence"),
)


def compact_number(value: float) -> str:
    """Tick label: 0.5 -> '0.5', 200 -> '200', 1e9 -> '1e9', 2.5e-05 -> '2.5e-5'."""
    text = f"{value:g}"
    return text.replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


class CompactLogFormatter(LogFormatter):
    """Labels the ticks matplotlib's log formatter would (decades; some minor ticks on an axis spanning
    under a decade) as `compact_number` writes them: '4' and '60' rather than 4x10^0 and 6x10^1."""

    def __call__(self, x: float, pos=None) -> str:
        return compact_number(x) if super().__call__(x, pos) else ""


def _title_suffix(cost: pd.DataFrame) -> str:
    devices = sorted({str(d) for d in cost["device"].dropna()}) if "device" in cost else []
    return f" on {', '.join(devices)}" if devices else ""


def _length_axis(ax, lengths) -> None:
    """Log-2 x axis with a tick at every measured length."""
    ticks = sorted({int(n) for n in lengths})
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(t) for t in ticks], rotation=45 if len(ticks) > 8 else 0)
    ax.set_xlabel("sequence length n")


def _stop_point(ok: pd.DataFrame, stop: pd.Series, column: str, exponent: float) -> float:
    """y of the X where a family stopped: measured if known, else extrapolated along `exponent`."""
    measured = stop[column] / stop["batch_size"]
    if np.isfinite(measured) and measured > 0:
        return float(measured)
    if ok.empty:
        return math.nan
    last = ok.iloc[-1]
    slope = exponent if np.isfinite(exponent) else 1.0
    return float(last[column] / last["batch_size"] * (stop["seq_len"] / last["seq_len"]) ** slope)


def _slope_guides(ax, lengths) -> None:
    """Faint reference lines of slope 1 and 2 through the middle of the plotted range; limits kept."""
    x_lo, x_hi = float(min(lengths)), float(max(lengths))
    if x_hi <= x_lo:
        return
    y_lo, y_hi = ax.get_ylim()
    y_mid = math.sqrt(y_lo * y_hi)
    x_mid = math.sqrt(x_lo * x_hi)
    xs = np.array([x_lo, x_hi])
    for slope, text in ((1, "O(n)"), (2, "O(n^2)")):
        ys = y_mid * (xs / x_mid) ** slope
        ax.plot(xs, ys, color="grey", linestyle="--", linewidth=0.8, alpha=0.5, zorder=0)
        x_end = min(x_hi, x_mid * (y_hi / y_mid) ** (1 / slope))  # where the guide leaves the axes
        ax.annotate(text, (x_end, y_mid * (x_end / x_mid) ** slope), xytext=(-4, -12), textcoords="offset points",
                    color="grey", fontsize=7.5, ha="right")
    ax.set_ylim(y_lo, y_hi)


def _label(model: str, exponent: float, stop: pd.Series | None) -> str:
    parts = [f"n^{exponent:.2f}"] if np.isfinite(exponent) else []
    if stop is not None:
        parts.append(f"{stop['status']} at {int(stop['seq_len'])}")
    return f"{model} ({'; '.join(parts)})" if parts else str(model)


def log_log_chart(cost: pd.DataFrame, fits: pd.DataFrame, column: str, fit_column: str, ylabel: str,
                  title: str) -> Figure:
    """Per-sequence `column` against length, one line per family, stops marked with X."""
    fig = Figure(figsize=(9, 5.5))
    ax = fig.add_subplot()
    exponents = dict(zip(fits["model"], fits[fit_column])) if fit_column in fits else {}
    styles = family_styles(cost["model"].unique())
    for model, group in cost.groupby("model", sort=False):
        group = group.sort_values("seq_len")
        ok = group[(group["status"] == "ok") & (group[column] > 0)]
        stopped = group[group["status"] != "ok"]
        stop = stopped.iloc[0] if not stopped.empty else None
        exponent = float(exponents.get(model, math.nan))
        style = styles[model]
        ax.plot(ok["seq_len"], ok[column] / ok["batch_size"], color=style["color"], marker=style["marker"],
                markersize=5, linewidth=1.6, label=_label(model, exponent, stop))
        if stop is not None:
            y = _stop_point(ok, stop, column, exponent)
            if np.isfinite(y):
                if not ok.empty:
                    last = ok.iloc[-1]
                    ax.plot([last["seq_len"], stop["seq_len"]], [last[column] / last["batch_size"], y],
                            color=style["color"], linestyle=":", linewidth=1.2)
                ax.plot([stop["seq_len"]], [y], color=style["color"], marker="X", markersize=11,
                        markeredgecolor="black", linestyle="none")
    _length_axis(ax, cost["seq_len"])
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(CompactLogFormatter())
    ax.yaxis.set_minor_formatter(CompactLogFormatter(labelOnlyBase=False))
    _slope_guides(ax, cost["seq_len"])
    ax.set_ylabel(ylabel)
    ax.set_title(title + _title_suffix(cost))
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", axis="y", alpha=0.1)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="family (fitted exponent)",
              title_fontsize=8, frameon=False)
    fig.text(0.01, -0.02, "grey guides: slope 1 = O(n) per sequence, slope 2 = O(n^2).  X = where the family "
             "stopped (oom / timeout / error): measured, or where unmeasured extrapolated along the fit (dotted)",
             fontsize=7.5, color="dimgray")
    return fig


def attention_share_chart(cost: pd.DataFrame) -> Figure | None:
    """attention_flops / flops against length for each family with any attention FLOPs; None if none has."""
    with_attention = cost[cost["attention_flops"] > 0]["model"].unique()
    if len(with_attention) == 0:
        return None
    fig = Figure(figsize=(9, 5))
    ax = fig.add_subplot()
    styles = family_styles(cost["model"].unique())
    for model, group in cost.groupby("model", sort=False):
        if model not in with_attention:
            continue
        group = group.sort_values("seq_len")
        style = styles[model]
        ax.plot(group["seq_len"], 100 * group["attention_flops"] / group["flops"], color=style["color"],
                marker=style["marker"], markersize=5, linewidth=1.6, label=str(model))
    _length_axis(ax, cost["seq_len"])
    ax.set_ylim(0, 100)
    ax.set_ylabel("attention share of FLOPs (%)")
    ax.set_title("Share of FLOPs in token-to-token attention (scans and memory reads excluded)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def draw_cost_charts(cost: pd.DataFrame, fits: pd.DataFrame, out_dir: str | os.PathLike) -> list[Path]:
    """Draw every cost chart of `cost` (cost.csv) and `fits` (cost_fit.csv) into `out_dir`; returns the
    files written (PNG and SVG of each; no attention-share chart when no family has attention)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if cost.empty:
        return paths
    with matplotlib.rc_context(RC):  # the sweep charts' style, whichever command draws them
        for stem, column, fit_column, ylabel, title in LOG_LOG_CHARTS:
            paths += save_figure(log_log_chart(cost, fits, column, fit_column, ylabel, title), out_dir, stem,
                                 **SAVE)
        share = attention_share_chart(cost)
        if share is not None:
            paths += save_figure(share, out_dir, "cost_attention_share", **SAVE)
    return paths
