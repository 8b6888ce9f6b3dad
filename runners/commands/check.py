"""`membench check MODEL` / `membench check --task TASK`: run the model or task contract on anything you name.

    membench check lstm
    membench check my_mixer:MyMixer --param width=8
    membench check hf:mamba
    membench check --task my_tasks:EchoPrevious --include plugins/

One row per check (pass, FAIL with a one-line reason, or skipped and why; the checks: runners/contract.py).
Exit 0 when nothing fails, 1 otherwise; a name that cannot be resolved is exit 2, as everywhere.
"""

from __future__ import annotations

import time

import torch

from membench.runners.contract import check_model, check_task, format_results
from membench.runners.errors import UsageError
from membench.runners.parsing import add_include_flag, key_values, positive_int

HELP = "check a model (family, import path, hf:TYPE) or a task (--task) against membench's contract"


def add_arguments(parser) -> None:
    parser.add_argument("check_model", nargs="?", metavar="MODEL", help="a family, pkg.mod:Class or hf:TYPE")
    parser.add_argument("--task", help="check this task instead (a name or pkg.mod:Class)")
    parser.add_argument("--param", action="append", metavar="KEY=VALUE", help="a model or task param (repeatable)")
    parser.add_argument("--vocab-size", default="16", help="vocabulary of the model checks (default 16)")
    add_include_flag(parser)


def run(args) -> int:
    if (args.check_model is None) == (args.task is None):
        raise UsageError("name a model (membench check lstm) or a task (membench check --task copy), not both")
    params = key_values(args.param)
    torch.set_num_threads(1)  # tiny models: a second thread costs more than it gains (5 s vs 30 s for lstm)
    start = time.perf_counter()
    if args.task is not None:
        what, rows = f"task {args.task}", check_task(args.task, params)
    else:
        what = f"model {args.check_model}"
        rows = check_model(args.check_model, params, positive_int(args.vocab_size, "--vocab-size"))
    failed = sum(not r.ok for r in rows)
    print(format_results(rows))
    print(f"{what}: {len(rows) - failed} of {len(rows)} checks pass or skip, {failed} failed "
          f"({time.perf_counter() - start:.1f} s)")
    return 0 if failed == 0 else 1
