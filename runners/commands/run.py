"""`membench run (--preset NAME | --spec FILE|NAME) --out DIR`: run a sweep, resumably, and print a summary."""

from __future__ import annotations

import sys

from membench.runners.parsing import add_include_flag, growth_factor, int_list, name_list, out_dir, seed_list
from membench.runners.spec import PRESETS, RECIPES, load_spec
from membench.runners.sweep import format_summary, report_failures, run_sweep
from membench.runners.trackers import TRACKERS, tracker_names

HELP = "run a sweep of trials from a preset or a TOML spec (re-running resumes)"


def add_arguments(parser) -> None:
    add_source_flags(parser)
    parser.add_argument("--out", required=True, metavar="DIR", type=out_dir,
                        help="results directory (created; resumed if it exists)")
    add_sweep_flags(parser)


def add_source_flags(parser) -> None:
    """--preset and --spec: where a sweep comes from (`run`, `plan`)."""
    parser.add_argument("--preset", help=f"a shipped sweep: {', '.join(PRESETS)}")
    parser.add_argument("--spec", metavar="FILE|NAME", help="a TOML sweep spec (schema: runners/spec.py), or a "
                                                         f"shipped recipe: {', '.join(RECIPES)}")


def add_selection_flags(parser, tasks: bool = True) -> None:
    """The flags that narrow a spec's trials (`run`, `compare`, `leaderboard`, `plan`)."""
    if tasks:
        parser.add_argument("--tasks", metavar="A,B", help="only these tasks")
        parser.add_argument("--models", metavar="A,B", help="only these model families (or import paths "
                                                            "pkg.mod:Class, hf:TYPE)")
    parser.add_argument("--lengths", metavar="64,128", help="training lengths")
    parser.add_argument("--seeds", metavar="0,1", help="seeds")


def add_sweep_flags(parser, tasks: bool = True) -> None:
    """Flags shared by `run` and `compare` that override the spec."""
    parser.add_argument("--executor", help="local (default) or ray")
    parser.add_argument("--address", help="Ray cluster address (with --executor ray)")
    add_selection_flags(parser, tasks)
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--quiet", action="store_true",
                        help="print only the summary: no progress (a bar on a terminal, else a line per trial)")
    parser.add_argument("--log", action="append", metavar="TRACKER",
                        help=f"also log each trial's training curves to {', '.join(TRACKERS)} (repeatable, or a "
                             f"comma list; each an extra: pip install 'membench[NAME]'); off by default")
    parser.add_argument("--retry-failed", action="store_true",
                        help="also re-run finished trials whose status is error (a resumed sweep skips them)")
    parser.add_argument("--retrain-under-trained", metavar="FACTOR", type=growth_factor,
                        help="re-run every cell that has an under-trained trial in --out at FACTOR times its "
                             "steps, its first trials set aside in --out/superseded/ (runners/retrain.py)")
    add_include_flag(parser)


def overrides(args) -> dict:
    """The spec overrides given on the command line (None where a flag is absent)."""
    return {
        "tasks": name_list(args.tasks) if getattr(args, "tasks", None) else None,
        "models": name_list(args.models) if getattr(args, "models", None) else None,
        "lengths": int_list(args.lengths, "--lengths", "length") if args.lengths else None,
        "seeds": seed_list(args.seeds) if args.seeds else None,
        "device": getattr(args, "device", None),
        "executor": getattr(args, "executor", None),
    }


def run(args) -> int:
    spec = load_spec(args.preset, args.spec, overrides(args))
    for note in spec.notes:
        print(f"note: {note}", file=sys.stderr)
    runs = run_sweep(spec, args.out, executor=spec.executor, address=args.address, progress=not args.quiet,
                     retry_failed=args.retry_failed, log=tracker_names(args.log),
                     retrain_under_trained=args.retrain_under_trained)
    print(format_summary(runs))
    print(f"tables: {args.out}/runs.csv, lags.csv, curves.csv, slice_curves.csv")
    return report_failures(runs, args.out)
