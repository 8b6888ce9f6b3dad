"""`membench compare A B [...] --task TASK --out DIR`: a small parameter-matched sweep of a few families on one
task, printed side by side (accuracy at every eval length, mean over seeds)."""

from __future__ import annotations

import sys

import pandas as pd

from membench.runners.commands.run import add_sweep_flags, overrides
from membench.runners.errors import UsageError
from membench.runners.parsing import out_dir, positive_int
from membench.runners.reporting.results import failure_status
from membench.runners.reporting.text import text_table
from membench.runners.spec import load_spec
from membench.runners.sweep import report_failures, run_sweep
from membench.runners.trackers import tracker_names
from membench.runners.trial import BUDGETS

HELP = "train a few families on one task (parameter-matched) and print their accuracy by length side by side"


def add_arguments(parser) -> None:
    parser.add_argument("compare_models", nargs="+", metavar="MODEL", help="two or more model families")
    parser.add_argument("--task", required=True, help="the task (see `membench tasks`)")
    parser.add_argument("--out", required=True, metavar="DIR", type=out_dir,
                        help="results directory (created; resumed if it exists)")
    parser.add_argument("--spec", metavar="FILE", help="a TOML spec for the settings (default: preset compare)")
    parser.add_argument("--steps", help="the step budget of every trial (default: the preset's)")
    parser.add_argument("--budget", choices=BUDGETS,
                        help="fixed: train to --steps; plateau: also stop once accuracy stops improving (the "
                             "compare preset's default)")
    add_sweep_flags(parser, tasks=False)


def run(args) -> int:
    if len(set(args.compare_models)) < 2:
        raise UsageError(
            "compare needs at least two different models, e.g. membench compare lstm transformer --task copy"
        )
    flags = {**overrides(args), "tasks": [args.task], "models": list(dict.fromkeys(args.compare_models)),
             "steps": positive_int(args.steps, "--steps") if args.steps else None, "budget": args.budget}
    spec = load_spec(None if args.spec else "compare", args.spec, flags)
    for note in spec.notes:
        print(f"note: {note}", file=sys.stderr)
    runs = run_sweep(spec, args.out, executor=spec.executor, address=args.address, progress=not args.quiet,
                     retry_failed=args.retry_failed, log=tracker_names(args.log),
                     retrain_under_trained=args.retrain_under_trained)
    print(side_by_side(runs, list(dict.fromkeys(args.compare_models))))
    return report_failures(runs, args.out)


def side_by_side(runs: pd.DataFrame, models: list[str]) -> str:
    """Rows: (train length, eval slice); columns: each model's accuracy (mean over seeds, best lr), or its
    failure status, marked * when under-trained. A header line gives each model's width and parameter count."""
    acc = runs.groupby(["train_len", "eval_len", "slice", "model", "lr"])["accuracy"].mean()
    best = acc.groupby(level=[0, 1, 2, 3]).max()
    status = runs.groupby(["train_len", "slice", "model"])["status"].agg(failure_status)
    under = (runs.assign(u=runs["under_trained"].astype(str).str.lower().isin(["true", "1", "1.0"]))
             .groupby(["train_len", "model"])["u"].any())
    sizes = runs.drop_duplicates("model").set_index("model")
    lines = ["  ".join(f"{m}: d_model={sizes.loc[m, 'd_model']}, {int(sizes.loc[m, 'params']):,} params"
                       if m in sizes.index and sizes.loc[m, "params"] == sizes.loc[m, "params"] else f"{m}: -"
                       for m in models)]
    header = ["train_len", "eval_len", "slice", *models]
    table = []
    for (train_len, eval_len, name), group in best.groupby(level=[0, 1, 2]):
        cells = [str(train_len), str(eval_len), name]
        for m in models:
            value = group.get((train_len, eval_len, name, m))
            if value is None:
                cells.append("")
            elif value != value:  # NaN: the trial failed
                cells.append(status.get((train_len, name, m), "nan"))
            else:
                cells.append(f"{value:.3f}" + ("*" if under.get((train_len, m), False) else ""))
        table.append(cells)
    lines.append(text_table(header, table, right=range(3, len(header))))
    if under.any():
        lines.append("* under-trained: stopped at the step budget or the time cap below the threshold while still "
                     "improving, so this accuracy may understate the family's memory (give more --steps)")
    return "\n".join(lines)
