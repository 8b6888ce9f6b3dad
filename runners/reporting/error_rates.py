"""Error rates with exact intervals, for tasks whose failures are rare (flip-flop's "attention glitches").

An accuracy of 0.999 and one of 0.9999 look alike on a leaderboard; what tells them apart is how many
scored predictions were made and how many were wrong. For every task that sets `reports_error_rate = True`
(flip_flop), one row per (trial, eval slice) of runs.csv:

    reads       = the scored predictions of the slice (runs.csv `scored`; at flip-flop's reads)
    errors      = reads - correct = round(reads * (1 - accuracy))
    error_rate  = errors / reads
    ci_low, ci_high = the exact two-sided 95 % Clopper-Pearson interval of the error rate:
        ci_low  = the p at which P(X >= errors) = 0.025 for X ~ Binomial(reads, p)   (0 when errors = 0)
        ci_high = the p at which P(X <= errors) = 0.025                               (1 when errors = reads)

Each bound solves its equation by bisection on p, the binomial tail computed in log space (log-sum-exp of
the log probabilities, log C(n, i) from the ratios of consecutive binomial coefficients), so it is
exact for any n without scipy.

Worked example: 0 errors in 1,000 reads -> error_rate 0, interval [0, 1 - 0.025^(1/1000)] = [0, 3.68e-3]:
a model that never erred on 1,000 reads may still err on up to 0.37 % of them. 0 errors in 100,000 reads
narrows that to 3.69e-5; 5 errors in 100 reads gives 0.05 in [0.0164, 0.1128].

Files (`write_error_rates(results_dir)`, rebuilt from runs.csv alone): `error_rates.csv` (ERROR_COLUMNS)
and `error_rates.md` (one table, a row per trial and slice), written atomically; nothing when no row of
runs.csv is of such a task.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from membench.memtasks import TASKS
from membench.runners.reporting.text import count, markdown_table
from membench.runners.tables import atomic_write_bytes

CONFIDENCE = 0.95
ERROR_COLUMNS = ["trial_id", "task", "model", "d_model", "train_len", "seed", "lr", "slice", "eval_len", "status",
                 "accuracy", "reads", "errors", "error_rate", "ci_low", "ci_high"]
_BISECTIONS = 200  # halvings of the bracket for each bound: far below double precision at the end


def log_choose(n: int, k: int) -> np.ndarray:
    """(k+1,) float64: log C(n, i) for i = 0 .. k, from the ratios C(n, i+1) / C(n, i) = (n - i) / (i + 1).

    >>> [round(math.exp(v)) for v in log_choose(5, 5)]
    [1, 5, 10, 10, 5, 1]
    """
    j = np.arange(k, dtype=np.float64)  # (k,)
    return np.concatenate([[0.0], np.cumsum(np.log(n - j) - np.log(j + 1))])  # (k+1,)


def log_binomial_cdf(k: int, n: int, p: float, choose: np.ndarray | None = None) -> float:
    """log P(X <= k) for X ~ Binomial(n, p), summed in log space (stable for tiny tails and huge n).
    `choose`: log_choose(n, k), when the caller evaluates many p (bisection).

    >>> round(math.exp(log_binomial_cdf(0, 10, 0.5)), 6)  # 0.5^10
    0.000977
    """
    if k >= n or p <= 0.0:
        return 0.0
    if k < 0 or p >= 1.0:
        return -math.inf
    i = np.arange(k + 1, dtype=np.float64)  # (k+1,)
    choose = log_choose(n, k) if choose is None else choose
    terms = choose + i * math.log(p) + (n - i) * math.log1p(-p)  # (k+1,): log P(X = i)
    top = terms.max()
    return float(top + math.log(np.exp(terms - top).sum()))


def _bisect(decreasing, target: float) -> float:
    """The p in [0, 1] where the decreasing function `decreasing(p)` crosses `target`."""
    low, high = 0.0, 1.0
    for _ in range(_BISECTIONS):
        mid = 0.5 * (low + high)
        if mid in (low, high):
            break
        if decreasing(mid) > target:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def clopper_pearson(errors: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact two-sided interval (low, high) of a binomial proportion: `errors` in `n` trials.

    >>> low, high = clopper_pearson(0, 1000)
    >>> low, round(high, 6), round(1 - 0.025 ** (1 / 1000), 6)
    (0.0, 0.003682, 0.003682)
    """
    if n <= 0 or not 0 <= errors <= n:
        raise ValueError(f"need 0 <= errors <= n and n >= 1, got errors={errors}, n={n}")
    tail = math.log((1 - confidence) / 2)
    # P(X <= errors; p) falls with p: high is where it reaches the tail
    choose = log_choose(n, errors)
    high = 1.0 if errors == n else _bisect(lambda p: log_binomial_cdf(errors, n, p, choose), tail)
    # P(X >= errors; p) = 1 - P(X <= errors - 1; p) rises with p: low is where it reaches the tail
    low = 0.0 if errors == 0 else _bisect(lambda p: log_binomial_cdf(errors - 1, n, p, choose[:-1]),
                                          math.log1p(-math.exp(tail)))
    return low, high


def reports_error_rate(task: str) -> bool:
    """True for a registered task that asks for error rates (`reports_error_rate = True`)."""
    return task in TASKS.names() and bool(TASKS.get(task).reports_error_rate)


def error_rate_table(runs: pd.DataFrame) -> pd.DataFrame:
    """ERROR_COLUMNS, one row per runs.csv row of an error-rate task that was scored (reads known and > 0)."""
    mine = runs[runs["task"].astype(str).map(reports_error_rate)]
    mine = mine[mine["scored"].notna() & (mine["scored"] > 0) & mine["accuracy"].notna()]
    rows = []
    for row in mine.itertuples(index=False):
        reads = int(row.scored)
        errors = int(round(reads * (1.0 - float(row.accuracy))))
        low, high = clopper_pearson(errors, reads)
        rows.append({**{c: getattr(row, c) for c in ERROR_COLUMNS[:11]}, "reads": reads, "errors": errors,
                     "error_rate": errors / reads, "ci_low": low, "ci_high": high})
    table = pd.DataFrame(rows, columns=ERROR_COLUMNS)
    return table.sort_values(["task", "model", "d_model", "train_len", "seed", "lr", "trial_id"], kind="stable",
                             ignore_index=True)


def _rate(value: float) -> str:
    return "0" if value == 0 else f"{value:.2e}"


def error_rates_markdown(table: pd.DataFrame) -> str:
    """The table as Markdown: a row per trial and slice, reads, errors, rate and its 95 % interval."""
    header = ["task", "model", "d_model", "train_len", "seed", "lr", "slice", "eval_len", "status", "reads",
              "errors", "error rate", "95% interval"]
    rows = [[row.task, row.model, count(row.d_model), count(row.train_len), count(row.seed), f"{row.lr:g}", row.slice,
             count(row.eval_len), row.status, count(row.reads), count(row.errors), _rate(row.error_rate),
             f"[{_rate(row.ci_low)}, {_rate(row.ci_high)}]"] for row in table.itertuples(index=False)]
    intro = ("Per trial and evaluation slice of the tasks that report them: scored reads, errors, the error rate and "
             "its exact 95 % Clopper-Pearson interval (runners/reporting/error_rates.py). An interval that reaches "
             "far above 0 with 0 errors means too few reads were scored: raise the slice's `n_sequences`.")
    body = markdown_table(header, rows, left=("task", "model", "slice", "status"))
    return f"# membench error rates\n\n{intro}\n\n{body}\n"


def write_error_rates(results_dir: str | Path) -> list[Path]:
    """Write error_rates.csv and error_rates.md into `results_dir` from its runs.csv; return their paths
    ([] and nothing written when no run is of a task that reports error rates)."""
    directory = Path(results_dir)
    runs = pd.read_csv(directory / "runs.csv", dtype={"trial_id": str, "task": str, "slice": str, "status": str})
    table = error_rate_table(runs)
    if table.empty:
        return []
    csv, md = directory / "error_rates.csv", directory / "error_rates.md"
    atomic_write_bytes(csv, table.to_csv(index=False, lineterminator="\n").encode())
    atomic_write_bytes(md, error_rates_markdown(table).encode())
    return [csv, md]
