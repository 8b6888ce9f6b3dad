"""`membench charts DIR`: rebuild leaderboard.md, leaderboard.csv, every chart and report.html (the page of
runners/reporting/html_report.py) from a sweep's tables,
and slices.md / slices.csv when the sweep evaluates named slices (see runners/reporting/slices.py); a sweep with
named slices only gets the slice table and its chart alone.

No training happens: the files are a pure function of runs.csv, lags.csv, curves.csv, slice_curves.csv
(and cost.csv with cost_fit.csv when present), so running it twice gives identical leaderboard files and SVGs.
"""

from __future__ import annotations

from membench.runners.errors import UsageError
from membench.runners.parsing import out_dir
from membench.runners.reporting.html_report import write_report
from membench.runners.reporting.publish import publish

HELP = ("rebuild the leaderboard, every chart and report.html of a sweep directory from its tables alone "
        "(no training)")


def add_arguments(parser) -> None:
    parser.add_argument("dir", metavar="DIR", type=out_dir, help="a sweep's output directory (holding runs.csv)")


def run(args) -> int:
    try:
        print(publish(args.dir).summary())
        print(f"wrote {write_report(args.dir)}")
    except OSError as err:  # a read-only or full directory
        where = f" ({err.filename})" if err.filename else ""
        raise UsageError(f"cannot write in {args.dir}{where}: {err.strerror or err}") from None
    return 0
