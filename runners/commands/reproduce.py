"""`membench reproduce NAME --out DIR`: run a published result's recipe (resumably), then write the side-by-side
table of its claims: claims.csv, claims.md (the paper's number, ours with its 95 % interval, the verdict and
why) and claims.png / claims.svg, beside the sweep's usual reports (`membench charts`).

`membench reproduce --list` lists the reproductions (runners/reproduce/, one module each);
`membench reproduce NAME --verdicts-only DIR` judges the runs already in DIR without training and prints the
table; with `--out OUT` it also writes the files there (deletang2023 judges grazzi2025's runs this way).
"""

from __future__ import annotations

import sys

from membench.runners.commands.run import add_sweep_flags, overrides
from membench.runners.errors import UsageError
from membench.runners.parsing import out_dir
from membench.runners.reporting.publish import publish
from membench.runners.reporting.results import read_results
from membench.runners.reporting.text import text_table
from membench.runners.reproduce import get_reproduction, reproductions
from membench.runners.reproduce.claims import findings_markdown, write_findings
from membench.runners.spec import load_spec
from membench.runners.sweep import format_summary, report_failures, run_sweep
from membench.runners.trackers import tracker_names

HELP = "reproduce a published result: run its recipe, then compare the paper's numbers with ours, claim by claim"


def add_arguments(parser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help="a reproduction (see --list)")
    parser.add_argument("--list", action="store_true", help="list the reproductions and the recipe each runs")
    parser.add_argument("--out", metavar="DIR", type=out_dir,
                        help="results directory (created; resumed if it exists); with --verdicts-only, where "
                             "to write the claims table (default: print it only)")
    parser.add_argument("--verdicts-only", metavar="DIR", type=out_dir,
                        help="judge the runs already in DIR (a sweep of the recipe): no training")
    add_sweep_flags(parser)


def run(args) -> int:
    if args.list:
        rows = [[r.name, r.spec, r.summary] for r in reproductions().values()]
        print(text_table(["name", "recipe", "claims"], rows))
        return 0
    if args.name is None:
        raise UsageError("give a reproduction, e.g. membench reproduce grazzi2025 --out results/mine "
                         "(membench reproduce --list lists them)")
    reproduction = get_reproduction(args.name)
    if args.verdicts_only is not None:
        given = [f"--{k}" for k, v in overrides(args).items() if v is not None] + ["--log"] * bool(args.log)
        if given:
            raise UsageError(f"{', '.join(given)} only act on a run that trains; "
                             f"--verdicts-only trains nothing: drop them")
        findings = reproduction.judge(read_results(args.verdicts_only).runs)
        print(findings_markdown(reproduction.title, findings), end="")
        if args.out is not None:
            _write(args.out, reproduction.title, findings)
        return 0
    if args.out is None:
        raise UsageError(f"give --out DIR for the runs, e.g. membench reproduce {args.name} --out results/mine; "
                         f"or --verdicts-only DIR to judge runs already made")
    spec = load_spec(None, reproduction.spec, overrides(args))
    for note in spec.notes:
        print(f"note: {note}", file=sys.stderr)
    runs = run_sweep(spec, args.out, executor=spec.executor, address=args.address, progress=not args.quiet,
                     retry_failed=args.retry_failed, log=tracker_names(args.log),
                     retrain_under_trained=args.retrain_under_trained)
    print(format_summary(runs))
    publish(args.out)
    findings = reproduction.judge(read_results(args.out).runs)
    print(findings_markdown(reproduction.title, findings), end="")
    _write(args.out, reproduction.title, findings)
    return report_failures(runs, args.out)


def _write(directory: str, title: str, findings) -> None:
    try:
        paths = write_findings(directory, title, findings)
    except OSError as err:  # a read-only or full directory
        raise UsageError(f"cannot write in {directory}: {err.strerror or err}") from None
    print(f"claims: {', '.join(str(p) for p in paths)}")
