"""`membench plan (--preset NAME | --spec FILE|NAME)`: what a sweep will cost before it runs: its trials per
family, the training time the cost model expects (runners/cost/estimate.py), the sum of the time caps, and the
cells its budget is likely to leave under-trained (runners/cost/under_training.py; with --against, also from
a finished sweep's trials, whose larger budgets for retrained cells it plans with)."""

from __future__ import annotations

import sys
from pathlib import Path

from membench.runners import retrain
from membench.runners.commands.run import add_selection_flags, add_source_flags, overrides
from membench.runners.cost.estimate import against, plan
from membench.runners.cost.under_training import cell_count, likely_under_trained
from membench.runners.errors import UsageError
from membench.runners.parsing import add_include_flag
from membench.runners.reporting.results import read_results
from membench.runners.reporting.text import text_table
from membench.runners.spec import load_spec

HELP = "estimate a sweep's time on one device from its trials' FLOPs (runs nothing)"


def add_arguments(parser) -> None:
    add_source_flags(parser)
    parser.add_argument("--against", metavar="DIR", help="also compare the estimated step times with those a "
                                                         "finished sweep of this spec measured (its runs.csv)")
    add_selection_flags(parser)
    add_include_flag(parser)


def run(args) -> int:
    spec = load_spec(args.preset, args.spec, overrides(args))
    for note in spec.notes:  # what the spec skipped, as `membench run` says it
        print(f"note: {note}", file=sys.stderr)
    # with --against, the larger budgets that --retrain-under-trained gave cells there (runners/retrain.py)
    replacements = retrain.read_replacements(Path(args.against)) if args.against else {}
    distinct: dict = {}  # trial_id -> (trial, rates): a trial the spec lists twice runs once (runners/sweep.py)
    for trial, rates in zip(spec.trials, spec.rates):
        trial = retrain.replacement(trial, replacements)
        distinct.setdefault(trial.trial_id, (trial, rates))
    trials, rates = [t for t, _ in distinct.values()], [r for _, r in distinct.values()]
    rows = plan(trials, rates, spec.gpu_workers)
    table = [(r["model"], str(r["trials"]), str(r["longest"]), f"{r['hours']:.2f}", f"{r['eval_hours']:.2f}",
              f"{r['cap_hours']:.2f}") for r in rows]
    total = [sum(r[key] for r in rows) for key in ("trials", "hours", "eval_hours", "cap_hours")]
    table.append(("total", str(total[0]), "", *(f"{t:.2f}" for t in total[1:])))
    workers = spec.gpu_workers
    print(f"{spec.name}: {total[0]} trials; hours summed over the trials" +
          (f" ({workers} per GPU side by side: on one GPU the wall time is about the sum / {workers})"
           if workers > 1 else " (one after another on one device: the wall time)"))
    print(text_table(("model", "trials", "longest", "hours at all steps", "of which evaluating",
                      "hours at most (caps)"), table, right=(1, 2, 3, 4, 5)))
    print("hours at all steps: every trial trains its full `steps` and evaluates every `eval_every` steps, at the "
          "rates the spec assumes (flops_rate, step_latency, token_latency; runners/cost/estimate.py); a plateau "
          "or threshold stop takes less.")
    earlier = read_results(args.against).runs if args.against else None
    print_under_trained(trials, rates, spec.gpu_workers, earlier, args.against or "")
    configs = {t.trial_id: t for t in trials}
    replacements = retrain.read_replacements(Path(args.against)) if args.against else {}
    configs = retrain.apply_replacements(configs, replacements)  # the budgets a run into --against resumes with
    grown = {c.trial_id for c in replacements.values()}
    if args.against and retrain.replacements_for(configs, earlier, 2, grown):  # what it would do
        source = f"--preset {args.preset}" if args.preset else f"--spec {args.spec}"
        outdone = len(retrain.outdone_cells(configs, earlier))
        faded = len(retrain.faded_cells(configs, earlier, grown))
        also = [f"{outdone} cell(s) that a longer length did 0.1 better with more steps"] if outdone else []
        also += [f"{faded} cell(s) near chance where a shorter length was learned"] if faded else []
        also = f" (and {'; '.join(also)})" if also else ""
        print(f"  to run the cells under-trained in {args.against}{also} again at twice their steps: membench run "
              f"{source} --out {args.against} --retrain-under-trained 2 (with --models to leave a family out)")
    if args.against:
        compared = against(trials, rates, earlier, spec.gpu_workers)
        if not compared:
            raise UsageError(f"{args.against} holds no trial of this spec; give the --out directory of a run of it")
        print(f"\nmeasured / estimated ms per step, over the trials of this spec in {args.against}:")
        print(text_table(("model", "trials", "median", "lowest", "highest"),
                         [(r["model"], str(r["trials"]), f"{r['median']:.2f}", f"{r['low']:.2f}", f"{r['high']:.2f}")
                          for r in compared], right=(1, 2, 3, 4)))
    return 0


SHOWN = 25  # cells listed by name; the rest are counted


def print_under_trained(trials, rates, workers: int, earlier, directory: str) -> None:
    """The cells likely to end under-trained (see runners/cost/under_training.py), counted and listed."""
    cells = likely_under_trained(trials, rates, workers, earlier, directory)
    total = cell_count(trials)
    source = f"the cost model and {directory}" if directory else "the cost model (give --against DIR for more)"
    print(f"\nlikely under-trained, from {source}: {len(cells)} of {total} cells ({100 * len(cells) / total:.0f} %)")
    for cell in cells[:SHOWN]:
        print(f"  {cell['task']} {cell['model']} L{cell['train_len']} ({cell['trials']} trial(s)): {cell['why']}")
    if len(cells) > SHOWN:
        print(f"  ... and {len(cells) - SHOWN} more")
