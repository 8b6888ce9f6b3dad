"""Cost exponents: how fast time, memory and FLOPs grow with sequence length, per family.

The cost sweep holds the tokens per step fixed (batch = batch_tokens // seq_len), so the cost of one
STEP is flat for an O(n) family and linear for an O(n^2) one. To read the familiar exponent we fit the
cost PER SEQUENCE instead, dividing each step's cost by its batch size:

    time per sequence   = ms_per_step    / batch_size
    memory per sequence = peak_memory_mb / batch_size
    FLOPs per sequence  = flops          / batch_size

and take the least-squares slope k of  log(cost) = k * log(seq_len) + c.  O(n) reads k ~ 1, O(n^2)
reads k ~ 2; a fixed per-step overhead (kernel launches, the output head) pulls k down at short lengths.

Which points: a family's rows with status "ok" and a finite, positive cost, sorted by length; the fit
uses the upper half of them, rounded up, and never fewer than 2 (3 points -> the top 2, 5 -> the top 3),
because the asymptotic exponent shows at long lengths. Fewer than 2 usable points (or a single
distinct length) gives NaN.

Worked example: costs 1, 4, 16, 64 at lengths 128, 256, 512, 1024 use the top 2 points
(16 at 512, 64 at 1024): slope = log(64/16) / log(1024/512) = 2.0.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

FIT_COLUMNS = ["model", "time_exponent", "memory_exponent", "flops_exponent", "n_points", "min_len", "max_len"]
MIN_POINTS = 2

# fitted quantity -> the cost.csv column divided by batch_size to get it per sequence
_PER_SEQUENCE = {"time_exponent": "ms_per_step", "memory_exponent": "peak_memory_mb", "flops_exponent": "flops"}


def upper_points(lengths, values) -> tuple[np.ndarray, np.ndarray]:
    """The points the fit uses: finite, positive (length, value) pairs sorted by length, upper half
    (rounded up, at least MIN_POINTS; all of them when there are fewer)."""
    x = np.asarray(lengths, dtype=float)
    y = np.asarray(values, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = x[keep], y[keep]
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    n_use = max(MIN_POINTS, math.ceil(len(x) / 2))
    return x[-n_use:], y[-n_use:]


def fit_exponent(lengths, values) -> float:
    """Least-squares slope of log(value) against log(length) over the upper points (see module doc).

    >>> fit_exponent([128, 256, 512, 1024], [1.0, 4.0, 16.0, 64.0])
    2.0
    >>> import math; math.isnan(fit_exponent([128], [1.0]))
    True
    """
    x, y = upper_points(lengths, values)
    if len(x) < MIN_POINTS or np.unique(x).size < 2:
        return float("nan")
    slope, _ = np.polyfit(np.log(x), np.log(y), 1)
    return round(float(slope), 6)


def fit_costs(cost: pd.DataFrame) -> pd.DataFrame:
    """One row per model of `cost` (the cost.csv table) with FIT_COLUMNS: the per-sequence exponents
    of time, memory and FLOPs, and the number and length range of the points of the time fit."""
    rows = []
    for model, group in cost.groupby("model", sort=False):
        ok = group[group["status"] == "ok"]
        lengths = ok["seq_len"].to_numpy(dtype=float)
        batch = ok["batch_size"].to_numpy(dtype=float)
        row: dict[str, object] = {"model": model}
        for name, column in _PER_SEQUENCE.items():
            row[name] = fit_exponent(lengths, ok[column].to_numpy(dtype=float) / batch)
        used, _ = upper_points(lengths, ok["ms_per_step"].to_numpy(dtype=float) / batch)
        row["n_points"] = int(len(used))
        row["min_len"] = int(used.min()) if len(used) else 0
        row["max_len"] = int(used.max()) if len(used) else 0
        rows.append(row)
    return pd.DataFrame(rows, columns=FIT_COLUMNS)
