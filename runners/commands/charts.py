"""`membench charts DIR`: rebuild leaderboard.md, leaderboard.csv and every chart from a sweep's tables,
and slices.md / slices.csv when the sweep evaluates named slices (see runners/reporting/slices.py); a sweep with
named slices only gets the slice table and its chart alone.

No training happens: the files are a pure function of runs.csv, lags.csv, curves.csv, slice_curves.csv
(and cost.csv with cost_fit.csv when present), so running it twice gives identical leaderboard files and SVGs.
"""

from __future__ import annotations

from pathlib import Path

from membench.runners.errors import UsageError
from membench.runners.parsing import out_dir

HELP = "rebuild the leaderboard and every chart of a sweep directory from its tables alone (no training)"


def add_arguments(parser) -> None:
    parser.add_argument("dir", metavar="DIR", type=out_dir, help="a sweep's output directory (holding runs.csv)")


def publish(directory: str | Path) -> list[Path]:
    """Write leaderboard.md, leaderboard.csv and charts/ into `directory` (and slices.md / slices.csv when
    the sweep has named slices); print the tables; return the files. A sweep evaluated on named slices
    only (a recipe) gets its slice table alone: a leaderboard of plain evaluations would be all zeros.

    Raises UsageError, before writing anything, when the directory holds no usable runs.csv.
    """
    from membench.runners.reporting.charts import draw_charts
    from membench.runners.reporting.leaderboard import read_results, write_leaderboard
    from membench.runners.reporting.slices import named_slice_rows, slice_curves_chart, write_slices

    results = read_results(directory)
    named = named_slice_rows(results.runs)
    sliced = write_slices(results.runs, results.directory)
    if sliced:
        text = sliced[0].read_text()
        print(text[text.index("| task"):], end="")
        sliced += slice_curves_chart(results.slice_curves, named, results.directory / "charts")
    if len(named) == len(results.runs):
        print(f"wrote {', '.join(str(p) for p in sliced)} (named slices only: no leaderboard or other charts)")
        return sliced
    written = write_leaderboard(results)
    charts = draw_charts(results, results.directory / "charts")
    text = written[0].read_text()
    print(text[text.index("| rank"):], end="")
    names = ", ".join(p.name for p in written[1:] + sliced)
    print(f"wrote {written[0]}, {names} and {len(charts)} chart files in {results.directory / 'charts'}")
    return written + sliced + charts


def run(args) -> int:
    try:
        publish(args.dir)
    except OSError as err:  # a read-only or full directory
        where = f" ({err.filename})" if err.filename else ""
        raise UsageError(f"cannot write in {args.dir}{where}: {err.strerror or err}") from None
    return 0
