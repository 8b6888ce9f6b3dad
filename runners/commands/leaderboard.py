"""`membench leaderboard`: run (or resume) a sweep, then write its leaderboard, charts and report.html.

    membench leaderboard --out results/latest                 # default preset: standard on CUDA, else smoke
    membench leaderboard --preset smoke --out /tmp/smoke --models lstm,gru
    membench leaderboard --spec my_sweep.toml --out results/mine --device cuda

Finished trials already in --out are kept (the sweep resumes); `membench charts DIR` redraws everything
from the tables alone.
"""

from __future__ import annotations

import sys

from membench.runners.commands.run import add_sweep_flags, overrides
from membench.runners.parsing import out_dir
from membench.runners.reporting.html_report import write_report
from membench.runners.reporting.publish import publish
from membench.runners.spec import PRESETS, load_spec
from membench.runners.sweep import report_failures, run_sweep
from membench.runners.trackers import tracker_names

HELP = "run (or resume) a sweep, then write leaderboard.md, leaderboard.csv, charts/ and report.html into --out"


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", help=f"a shipped sweep: {', '.join(PRESETS)} "
                                         f"(default: standard with CUDA, smoke without)")
    source.add_argument("--spec", metavar="FILE", help="a TOML sweep spec (schema: runners/spec.py)")
    parser.add_argument("--out", required=True, metavar="DIR", type=out_dir,
                        help="results directory (resumed if it exists)")
    add_sweep_flags(parser)


def default_preset() -> str:
    """standard where CUDA is available, smoke otherwise (a CPU finishes smoke in minutes)."""
    import torch

    return "standard" if torch.cuda.is_available() else "smoke"


def run(args) -> int:
    preset = args.preset if args.preset or args.spec else default_preset()
    spec = load_spec(preset, args.spec, overrides(args))
    for note in spec.notes:
        print(f"note: {note}", file=sys.stderr)
    runs = run_sweep(spec, args.out, executor=spec.executor, address=args.address, progress=not args.quiet,
                     retry_failed=args.retry_failed, log=tracker_names(args.log),
                     retrain_under_trained=args.retrain_under_trained)
    print(publish(args.out).summary())
    print(f"wrote {write_report(args.out)}")
    return report_failures(runs, args.out)
