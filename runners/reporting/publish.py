"""Publishing a sweep: every report its tables allow, written into its directory.

`publish(DIR)` reads the tables once and writes leaderboard.md / leaderboard.csv, slices.md / slices.csv
(when the sweep evaluates named slices), error_rates.md / error_rates.csv (for tasks that report error
rates with intervals: flip_flop), frontier.md / frontier.csv (when it sweeps sizes or state settings
of a family: runners/reporting/frontier.py), length_generalisation.md / .csv (when it evaluates beyond the
trained lengths: runners/reporting/length_generalisation.py) and charts/. A sweep evaluated on named slices
only (a recipe such as zoology_mqar) gets its slice table and slice chart alone: a leaderboard of plain
evaluations would be all zeros. The result says what was written and carries the tables to show, so the
command line prints them without reading any file back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from membench.runners.reporting.charts import chart_jobs
from membench.runners.reporting.error_rates import write_error_rates
from membench.runners.reporting.figures import PARALLEL_FROM, draw_in_parallel
from membench.runners.reporting.frontier import write_frontier
from membench.runners.reporting.leaderboard import write_leaderboard
from membench.runners.reporting.length_generalisation import write_length_generalisation
from membench.runners.reporting.results import read_results
from membench.runners.reporting.slices import named_slice_rows, slice_curves_chart, write_slices


@dataclass
class Published:
    """What `publish` wrote: the report files (the slice chart with the slice table), the sweep's chart
    files, and the tables to show (Markdown)."""

    directory: Path
    reports: list[Path] = field(default_factory=list)
    charts: list[Path] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    slices_only: bool = False

    @property
    def files(self) -> list[Path]:
        return self.reports + self.charts

    def summary(self) -> str:
        """The tables, then one line naming what was written."""
        if self.slices_only:
            line = (f"wrote {', '.join(str(p) for p in self.files)} "
                    "(named slices only: no leaderboard or other charts)")
        else:
            line = (f"wrote {self.reports[0]}, {', '.join(p.name for p in self.reports[1:])} and "
                    f"{len(self.charts)} chart files in {self.directory / 'charts'}")
        return "".join(table + "\n" for table in self.tables) + line


def publish(directory: str | Path) -> Published:
    """Write every report of the sweep in `directory`; see the module docstring.

    Raises UsageError, before writing anything, when the directory holds no usable runs.csv.
    """
    results = read_results(directory)
    named = named_slice_rows(results.runs)
    out = Published(results.directory)
    charts = results.directory / "charts"
    slice_files, slice_table = write_slices(results.runs, results.directory)
    error_files = write_error_rates(results.directory)  # for tasks that report error rates (flip_flop)
    out.slices_only = len(named) == len(results.runs)
    jobs = [(slice_curves_chart, (results.slice_curves, named, charts))] if slice_files else []
    if not out.slices_only:
        board_files, board_table = write_leaderboard(results)
        frontier_files, frontier_charts = write_frontier(results.runs, results.directory)
        frontier_files += write_length_generalisation(results)  # when a sweep evaluates beyond its trained lengths
        jobs += chart_jobs(results, charts)
    drawn = draw_in_parallel(jobs, parallel=results.runs["trial_id"].nunique() >= PARALLEL_FROM)
    if slice_files:
        out.reports += slice_files + drawn.pop(0)
        out.tables.append(slice_table)
    out.reports += error_files
    if out.slices_only:
        return out
    out.reports = board_files + out.reports + frontier_files
    out.tables.append(board_table)
    out.charts = [path for paths in drawn for path in paths] + frontier_charts
    return out
