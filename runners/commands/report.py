"""`membench report DIR [DIR ...]`: write DIR/report.html, the sweep's results as one self-contained page
(runners/reporting/html_report.py), from its tables alone (no training).

    membench report results/smoke-cpu
    membench report results/*/          # every committed results folder (the shell lists them)

Every folder is read before any report is written, so a folder that is not a results folder (no runs.csv,
and not a reproduction's folder of verdicts with its claims.csv) is one line (exit 2) and nothing is written.
"""

from __future__ import annotations

from membench.runners.errors import UsageError
from membench.runners.parsing import out_dir
from membench.runners.reporting.html_report import read_folder, save_report

HELP = "write DIR/report.html: the sweep's results as one self-contained HTML page, from its tables alone"


def add_arguments(parser) -> None:
    parser.add_argument("dirs", metavar="DIR", nargs="+", type=out_dir,
                        help="a sweep's output directory (holding runs.csv); several may be given")


def run(args) -> int:
    every = [read_folder(directory) for directory in args.dirs]  # all checked before anything is written
    for results in every:
        try:
            print(f"wrote {save_report(results)}")
        except OSError as err:  # a read-only or full directory
            raise UsageError(f"cannot write in {results.directory}: {err.strerror or err}") from None
    return 0
