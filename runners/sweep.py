"""Run a sweep: every trial of a spec on an executor, resumable, into a results directory.

    >>> spec = load_spec("smoke", None, {"models": ["lstm"]})
    >>> runs = run_sweep(spec, "out/smoke")          # trials/<id>.json + runs, lags, curves, slice_curves .csv
    >>> runs = run_sweep(spec, "out/smoke")          # again: every trial is finished, nothing runs

Trials already in the directory (by trial_id) are skipped; after each finished trial its file is written
and the tables are rebuilt from every trial file in the directory (see runners.tables), so a
directory can collect several sweeps and a killed sweep resumes where it stopped.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

from membench.runners import tables
from membench.runners.errors import UsageError
from membench.runners.executors import make_executor
from membench.runners.reporting.results import failure_status
from membench.runners.reporting.text import count, text_table
from membench.runners.spec import SweepSpec
from membench.runners.trial import STATUSES


def run_sweep(spec: SweepSpec, out_dir, executor: str = "local", address: str | None = None,
              progress: bool = True) -> pd.DataFrame:
    """Run the unfinished trials of `spec` into `out_dir`; returns the runs rows of the spec's trials.

    Everything is validated (executor, device, Ray) before `out_dir` is created.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory")
    runner = make_executor(executor, spec.device, spec.compile, address, progress, spec.cpu_threads)
    try:
        (out / tables.TRIALS_DIR).mkdir(parents=True, exist_ok=True)
        tables.remove_temporaries(out)
        finished = tables.read_trials(out)
        configs = {t.trial_id: t for t in spec.trials}  # a spec may list the same trial twice
        pending = [t for i, t in configs.items() if i not in finished]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(configs), initial=len(configs) - len(pending), desc=spec.name, unit="trial",
                       position=0)
        try:
            for payload in runner.run(pending):
                if payload.get("traceback"):  # an exception inside the trial: recorded, and shown in full
                    print(f"membench: trial {payload['trial_id']} ({configs[payload['trial_id']].label()}) "
                          f"raised an exception, recorded as status error:\n{payload['traceback']}",
                          file=sys.stderr, end="")
                tables.write_trial(out, payload)
                finished[payload["trial_id"]] = payload
                tables.write_tables(out, tables.frames(finished))
                if bar is not None:
                    bar.set_postfix_str(f"{configs[payload['trial_id']].label()}: {_status(payload)}")
                    bar.update()
        finally:
            if bar is not None:
                bar.close()
        if not pending:  # nothing ran: make sure the tables exist and match the trial files
            tables.write_tables(out, tables.frames(finished))
    finally:
        runner.close()
    runs = tables.frames(finished)["runs"]
    return runs[runs["trial_id"].isin(configs)].reset_index(drop=True)


def _status(payload: dict) -> str:
    statuses = {row["status"] for row in payload["runs"]}
    return "ok" if statuses == {"ok"} else "/".join(sorted(statuses))


def format_summary(runs: pd.DataFrame) -> str:
    """A text table: one line per (task, model, train length, width), accuracy per eval slice (mean over
    seeds, best learning rate), then a count of trials by status.

        task  model  train_len  d_model  params  steps  L16    L32
        copy  lstm   16         24       9,712   60     0.981  0.655
    """
    if runs.empty:
        return "no trials"
    keys = ["task", "model", "train_len", "d_model"]
    slices = (runs[["slice", "eval_len"]].drop_duplicates("slice").sort_values("eval_len", kind="stable")["slice"]
              .tolist())
    by_lr = runs.groupby([*keys, "slice", "lr"], sort=False)["accuracy"].mean()
    best = by_lr.groupby(level=[0, 1, 2, 3, 4], sort=False).max()
    first = runs.groupby(keys, sort=False).agg(params=("params", "first"), steps=("steps", "mean"),
                                               status=("status", failure_status))
    header = [*keys, "params", "steps", *slices]
    lines = [header]
    for key, row in first.iterrows():
        cells = [str(k) for k in key]
        cells.append(count(row["params"], missing="-"))
        cells.append(count(row["steps"], missing="-"))
        for name in slices:
            value = best.get((*key, name), None)
            if value is None:
                cells.append("")
            else:
                cells.append(f"{value:.3f}" if not math.isnan(value) else row["status"])
        lines.append(cells)
    text = [text_table(header, lines[1:])]
    per_trial = runs.drop_duplicates("trial_id")["status"].value_counts()
    counts = ", ".join(f"{int(per_trial[s])} {s}" for s in STATUSES if s in per_trial)
    text.append(f"{runs['trial_id'].nunique()} trials: {counts}")
    return "\n".join(text)
