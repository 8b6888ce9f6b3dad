"""What every reproduction shares: a claim's row of the side-by-side table, the verdicts, the seed summary
behind "ours", and the files (claims.csv, claims.md, claims.png/svg) written from the rows.

Definitions, before anything is computed:

    verdict        "holds": our number meets the paper's claim by the rule its module states;
                   "does not hold": it does not, by that same rule (never tuned after seeing our number);
                   "not comparable": the rule cannot be applied, with the reason (no such task here, the
                   trials missing or failed, a model that did not learn the task the claim is about)
    scaled         (accuracy - chance) / (1 - chance), Grazzi et al.'s "scaled accuracy": 0 at chance, 1 perfect
    near chance    scaled accuracy <= NEAR_CHANCE (0.1); a number near chance never counts as a model's limit
                   where the claim is about what it can learn with more state: a plateau near chance is not
                   convergence (attention can sit near chance on MQAR for long before its induction head forms)
    ours           the mean over seeds of a per-trial number, with a 95 % percentile-bootstrap interval over
                   those seeds (runners/reporting/intervals.py: the leaderboard's intervals, the same draws);
                   an error rate is pooled over seeds instead, with its exact Clopper-Pearson interval

Worked example: parity (chance 0.5), three seeds whose accuracies beyond the trained lengths are 0.99, 1.0
and 0.97: scaled 0.98, 1.0, 0.94; ours = 0.973 with an interval of about [0.94, 1.0]. Against a paper's
"solves parity" (1.000) under the rule "holds when our seed mean reaches 0.9", the verdict is "holds".

    >>> round(scaled(0.75, chance=0.5), 3)
    0.5
    >>> summary = seed_summary([0.98, 1.0, 0.94], key=("parity", "deltanet"))
    >>> round(summary.mean, 3), summary.low >= 0.94, summary.high <= 1.0, summary.seeds
    (0.973, True, True, 3)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from membench.runners.reporting.figures import RC, save_figure
from membench.runners.reporting.intervals import bootstrap_draws, interval
from membench.runners.reporting.text import fixed, markdown_table
from membench.runners.tables import atomic_write_bytes

HOLDS, DOES_NOT_HOLD, NOT_COMPARABLE = "holds", "does not hold", "not comparable"
VERDICTS = (HOLDS, DOES_NOT_HOLD, NOT_COMPARABLE)
NEAR_CHANCE = 0.1  # scaled accuracy at or below this is near chance
COLUMNS = ["claim", "model", "source", "metric", "paper", "ours", "ci_low", "ci_high", "accuracy", "seeds",
           "verdict", "why"]
_COLOURS = {HOLDS: "tab:green", DOES_NOT_HOLD: "tab:red", NOT_COMPARABLE: "tab:gray"}


@dataclass(frozen=True)
class Finding:
    """One claim of a paper beside ours: one row of claims.csv (COLUMNS)."""

    claim: str  # what the paper says, in one sentence
    model: str  # whose number it is (e.g. "deltanet [-1,1]")
    source: str  # where in the paper (table, figure, section)
    metric: str  # what "paper" and "ours" measure
    paper: str  # the paper's number as printed ("1.000", "0 errors")
    verdict: str  # one of VERDICTS
    why: str  # the rule applied, with the numbers it was applied to, or why it cannot be
    ours: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    accuracy: float = math.nan  # plain accuracy beside a scaled one (NaN where the metric is not scaled)
    seeds: int = 0  # trials behind "ours"

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclass(frozen=True)
class SeedSummary:
    """The mean of one number over seeds, its 95 % bootstrap interval, its best seed and the seed count."""

    mean: float
    low: float
    high: float
    best: float
    seeds: int


def scaled(accuracy: float, chance: float) -> float:
    """Grazzi et al.'s scaled accuracy: (accuracy - chance) / (1 - chance)."""
    return (accuracy - chance) / (1.0 - chance)


def seed_summary(values, key: tuple) -> SeedSummary:
    """Mean, bootstrap interval (NaN with one seed), best and count of `values` (one per seed); `key` seeds
    the bootstrap, as for the leaderboard's cells, so a table always gives the same interval."""
    values = np.asarray(list(values), dtype=float)
    if len(values) == 0:
        return SeedSummary(math.nan, math.nan, math.nan, math.nan, 0)
    low, high = interval(bootstrap_draws(values, key)) if len(values) >= 2 else (math.nan, math.nan)
    return SeedSummary(float(values.mean()), low, high, float(values.max()), len(values))


def findings_table(findings: list[Finding]) -> pd.DataFrame:
    """The rows as a table in COLUMNS order."""
    return pd.DataFrame([asdict(f) for f in findings], columns=COLUMNS)


def near_chance(accuracy: float, chance: float) -> bool:
    """True when `accuracy` is near chance (see the module docstring).

    >>> near_chance(0.52, chance=0.5), near_chance(0.9, chance=0.5)
    (True, False)
    """
    return scaled(accuracy, chance) <= NEAR_CHANCE


def _number(value: float, metric: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return ""
    if "floats" in metric:
        return f"{int(value):,}"
    return f"{value:.2e}" if "error rate" in metric and value != 0 else fixed(value, 3)


def findings_markdown(title: str, findings: list[Finding]) -> str:
    """claims.md: the side-by-side table, one row per claim."""
    header = ["claim", "model", "source", "metric", "paper", "ours", "95% interval", "plain accuracy", "seeds",
              "verdict", "why"]
    rows = []
    for f in findings:
        span = (f"[{_number(f.ci_low, f.metric)}, {_number(f.ci_high, f.metric)}]"
                if not math.isnan(f.ci_low) else "")
        rows.append([f.claim, f.model, f.source, f.metric, f.paper, _number(f.ours, f.metric), span,
                     fixed(f.accuracy, 3), str(f.seeds), f"**{f.verdict}**", f.why])
    tally = ", ".join(f"{sum(f.verdict == v for f in findings)} {v}" for v in VERDICTS)
    body = markdown_table(header, rows, left=("claim", "model", "source", "metric", "verdict", "why"))
    return (f"# {title}\n\n{len(findings)} claims: {tally}. Verdicts and their rules: runners/reproduce/ "
            f"(one module per paper); ours is the mean over seeds (an error rate: pooled over seeds) with its 95 % "
            f"interval.\n\n{body}\n")


def draw_findings(findings: list[Finding], title: str, out_dir: Path) -> list[Path]:
    """claims.png / claims.svg: per metric, the paper's number (a black cross, where it is a number) beside
    ours (a dot with its interval), coloured by verdict; claims without a number of ours are left out."""
    shown = [f for f in findings if not math.isnan(f.ours)]
    metrics = list(dict.fromkeys(f.metric for f in shown))
    if not metrics:
        return []
    import matplotlib

    with matplotlib.rc_context(RC):
        heights = [max(1.2, 0.32 * sum(f.metric == m for f in shown) + 0.8) for m in metrics]
        fig = Figure(figsize=(8.0, sum(heights) + 0.6), layout="constrained")
        axes = fig.subplots(len(metrics), 1, squeeze=False, height_ratios=heights).ravel()
        for ax, metric in zip(axes, metrics):
            mine = [f for f in shown if f.metric == metric]
            for y, f in enumerate(mine):
                colour = _COLOURS[f.verdict]
                if not math.isnan(f.ci_low):
                    ax.plot([f.ci_low, f.ci_high], [y, y], color=colour, lw=2, alpha=0.6)
                ax.plot([f.ours], [y], "o", color=colour)
                paper = _paper_value(f.paper)
                if paper is not None:
                    ax.plot([paper], [y], "x", color="black", ms=7)
            ax.set_yticks(range(len(mine)), [f"{f.model}: {f.verdict}" for f in mine])
            ax.set_ylim(len(mine) - 0.5, -0.5)
            ax.set_xlabel(metric)
        fig.suptitle(f"{title}\n(x: the paper, where it gives a number; dot and bar: ours and its 95 % interval)")
        return save_figure(fig, out_dir, "claims")


def _paper_value(text: str) -> float | None:
    """The paper's number when it is one ("1.000" -> 1.0, "0 errors" -> 0.0), else None."""
    head = text.split()[0] if text.split() else ""
    try:
        return float(head)
    except ValueError:
        return None


def write_findings(out_dir: str | Path, title: str, findings: list[Finding]) -> list[Path]:
    """Write claims.csv, claims.md and the chart into `out_dir` (atomically); return their paths."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    csv, md = directory / "claims.csv", directory / "claims.md"
    atomic_write_bytes(csv, findings_table(findings).to_csv(index=False, lineterminator="\n").encode())
    atomic_write_bytes(md, findings_markdown(title, findings).encode())
    return [csv, md, *draw_findings(findings, title, directory)]
