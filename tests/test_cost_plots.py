"""Cost charts (runners/reporting/cost_charts.py) drawn from synthetic tables: files, legends, stop markers."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from membench.runners.cost.fit import fit_costs
from membench.runners.cost.measure import COST_COLUMNS
from membench.runners.reporting.cost_charts import compact_number, draw_cost_charts, log_log_chart

LENGTHS = [128, 256, 512, 1024]


def synthetic_cost(stop_quadratic_at: int | None = 1024) -> pd.DataFrame:
    """'attn': O(n^2) per sequence, with attention FLOPs, stopped by oom at `stop_quadratic_at`;
    'rnn': O(n) per sequence, no attention."""
    rows = []
    for n in LENGTHS:
        batch = 4096 // n
        for model, per_seq_ms, attention_share in (("attn", 1e-4 * n * n, 0.5), ("rnn", 0.01 * n, 0.0)):
            stopped = model == "attn" and n == stop_quadratic_at
            flops = 1e6 * per_seq_ms * batch
            rows.append({
                "model": model, "seq_len": n, "batch_size": batch,
                "ms_per_step": math.nan if stopped else per_seq_ms * batch,
                "peak_memory_mb": math.nan if stopped else per_seq_ms * batch / 10,
                "flops": flops, "attention_flops": attention_share * flops, "tflops_per_s": 1.0,
                "tokens_per_second": 1.0, "state_size": n, "status": "oom" if stopped else "ok", "device": "cpu",
            })
    return pd.DataFrame(rows, columns=COST_COLUMNS)


def test_every_chart_is_written_in_both_formats(tmp_path):
    cost = synthetic_cost()
    paths = draw_cost_charts(cost, fit_costs(cost), tmp_path / "charts")
    names = sorted(p.name for p in paths)
    assert names == sorted(f"{stem}.{fmt}" for stem in ("cost_time", "cost_memory", "cost_flops",
                                                         "cost_attention_share") for fmt in ("png", "svg"))
    assert all(p.stat().st_size > 1000 for p in paths)


def test_no_attention_share_chart_without_attention(tmp_path):
    cost = synthetic_cost()
    cost = cost[cost["model"] == "rnn"]
    names = {p.name for p in draw_cost_charts(cost, fit_costs(cost), tmp_path)}
    assert "cost_attention_share.png" not in names and "cost_time.png" in names
    assert draw_cost_charts(cost.iloc[:0], fit_costs(cost.iloc[:0]), tmp_path / "empty") == []


def test_legend_carries_fitted_slopes_and_stops():
    cost = synthetic_cost()
    fig = log_log_chart(cost, fit_costs(cost), "ms_per_step", "time_exponent", "ms", "time")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["attn (n^2.00; oom at 1024)", "rnn (n^1.00)"]


def test_an_unmeasured_stop_is_marked_along_the_fit():
    cost = synthetic_cost()
    fig = log_log_chart(cost, fit_costs(cost), "ms_per_step", "time_exponent", "ms", "time")
    crosses = [line for line in fig.axes[0].get_lines() if line.get_marker() == "X"]
    assert len(crosses) == 1
    (x,), (y,) = crosses[0].get_data()
    assert x == 1024 and y == pytest.approx(1e-4 * 1024 * 1024)  # 512's value times (1024/512)^2


def test_compact_tick_labels():
    assert [compact_number(v) for v in (0.5, 200, 1e9, 2.5e-05)] == ["0.5", "200", "1e9", "2.5e-5"]


def test_a_narrow_log_axis_labels_its_minor_ticks_compactly():
    cost = synthetic_cost(stop_quadratic_at=None)
    cost = cost[cost["model"] == "rnn"].assign(ms_per_step=lambda d: d["batch_size"] * (3 + d["seq_len"] / 256))
    fig = log_log_chart(cost, fit_costs(cost), "ms_per_step", "time_exponent", "ms", "time")  # 3.5 to 7 ms
    fig.canvas.draw()  # FigureCanvasBase: the formatters run on draw
    axis = fig.axes[0].yaxis
    labels = [t.get_text() for t in axis.get_majorticklabels() + axis.get_minorticklabels() if t.get_text()]
    assert {"4", "5", "6"} <= set(labels), labels
    assert not [text for text in labels if "10^" in text or "times" in text], labels


def test_charts_without_a_fit_table(tmp_path):
    """A sweep directory may hold cost.csv without cost_fit.csv: lines are drawn, legends carry no slope."""
    cost = synthetic_cost(stop_quadratic_at=None)
    fig = log_log_chart(cost, pd.DataFrame(), "ms_per_step", "time_exponent", "ms", "time")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["attn", "rnn"]
    assert len(draw_cost_charts(cost, pd.DataFrame(), tmp_path)) == 8
