"""Run a sweep: every trial of a spec on an executor, resumable, into a results directory.

    spec = load_spec("smoke", None, {"models": ["lstm"]})
    runs = run_sweep(spec, "out/smoke")          # trials/<id>.json + runs, lags, curves, slice_curves .csv
    runs = run_sweep(spec, "out/smoke")          # again: every trial is finished, nothing runs

Trials already in the directory (by trial_id, with every row their config implies: a trial file, or else a
runs row per eval slice in runs.csv, so that a directory committed without its unversioned trials/ resumes
too) are skipped; each finished trial's file is written at once, and the tables are rebuilt from every trial
file in the directory, keeping the rows of trials that have no file (see runners.tables), so a directory can
collect several sweeps, a killed sweep resumes where it stopped, and no row is ever dropped. One process writes a
directory at a time (runners.lock).

The tables are rebuilt after the first trial, then after a trial once TABLES_EVERY seconds have passed since
the last rebuild (and 1 / TABLES_COST_SHARE times the last rebuild's own time, so that rebuilding the tables
of a large directory never takes more than that share of a sweep), at the end of the sweep, and when
anything else ends it (Ctrl-C, SIGTERM, an exception). A `kill -9` leaves them behind the trial files by at
most those seconds; the next run into the directory catches them up (every trial file is read then), even
when nothing is left to run.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import pandas as pd

from membench.runners import retrain, tables
from membench.runners.errors import UsageError
from membench.runners.executors import make_executor
from membench.runners.lock import DirectoryLock
from membench.runners.progress import SweepProgress, redrawn
from membench.runners.reporting.results import failure_status
from membench.runners.reporting.text import count, text_table
from membench.runners.schema import STATUSES
from membench.runners.spec import SweepSpec
from membench.runners.trackers import TrackerSettings, check_installed
from membench.runners.trial import SAVED_MODELS_DIR, SAVED_MODELS_ENV, TrialConfig

TABLES_EVERY = 15.0  # seconds between two rebuilds of the tables during a sweep, at least
TABLES_COST_SHARE = 0.05  # ... and at most this share of the sweep's time spent rebuilding them


def run_sweep(spec: SweepSpec, out_dir, executor: str = "local", address: str | None = None,
              progress: bool = True, retry_failed: bool = False, log: tuple[str, ...] = (),
              retrain_under_trained: float | None = None) -> pd.DataFrame:
    """Run the unfinished trials of `spec` into `out_dir`; returns the runs rows of the spec's trials.

    `retry_failed`: also re-run the finished trials whose status is "error" (e.g. after an upgrade that fixes
    what raised); their new result replaces the old one. `progress`: a bar on a terminal, a line per trial
    elsewhere (runners.progress); False: none. `log`: the trackers each trial's curves also go to
    (runners.trackers; each one's package is checked installed first). `retrain_under_trained` F: every cell
    with an under-trained trial in `out_dir` is run again at F times its steps, its first trials set aside
    (runners.retrain); a directory's earlier replacements apply to every run into it.

    Everything is validated (executor, device, Ray, trackers) before `out_dir` is created; then the directory is
    locked for this process (runners.lock: one writer per directory) and checked writable, before any
    trial trains. Notes (trial files that will re-run) go to stderr.
    """
    if not str(out_dir).strip():
        raise UsageError("--out is empty; give a directory")
    out = Path(out_dir)
    check_out_dir(out)
    os.environ[SAVED_MODELS_ENV] = str((out / SAVED_MODELS_DIR).resolve())  # save_model's folder (workers inherit it)
    check_installed(log)
    trackers = TrackerSettings(log, str(out.resolve()), spec.name) if log else None
    runner = make_executor(executor, spec.device, spec.compile, address, redrawn(progress), spec.cpu_threads,
                           spec.cpu_workers, spec.gpu_workers, trackers)
    try:
        _make_dirs(out)
        with DirectoryLock(out):
            finished, kept, configs = _run(spec, out, runner, progress, retry_failed, trackers,
                                           retrain_under_trained)
    finally:
        runner.close()
    runs = tables.frames(finished, kept)["runs"]
    return runs[runs["trial_id"].isin(configs)].reset_index(drop=True)


def _run(spec: SweepSpec, out: Path, runner, progress: bool, retry_failed: bool = False,
         trackers: TrackerSettings | None = None, retrain_factor: float | None = None
         ) -> tuple[dict[str, dict], dict[str, pd.DataFrame], dict[str, TrialConfig]]:
    tables.remove_temporaries(out)
    notes: list[str] = []
    replacements = retrain.read_replacements(out)  # cells given a larger budget by an earlier run
    configs = {t.trial_id: t for t in spec.trials}  # a spec may list the same trial twice
    configs = retrain.apply_replacements(configs, replacements)
    slices = {i: [s.name for s in c.eval_slices] for i, c in configs.items()}
    finished = tables.read_trials(out, notes, slices)  # valid, complete trial files; the others set aside, noted
    try:
        kept = tables.kept_rows(out, finished, notes)  # rows of trials without a valid file: never dropped
    finally:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    if retrain_factor:
        grown = {c.trial_id for c in replacements.values()}
        new = retrain.replacements_for(configs, tables.frames(finished, kept)["runs"], retrain_factor, grown)
        if new:
            _write(out, lambda: retrain.record(out, replacements, new))
            configs = retrain.apply_replacements(configs, new)
            print(f"note: {len(new)} trials of under-trained cells re-run at {retrain_factor:g}x their steps; the "
                  f"first ones' rows go to {out / retrain.SUPERSEDED_DIR}", file=sys.stderr)
    _write(out, lambda: retrain.set_aside(out, replacements, finished, kept))
    # resumed from rows (trials/ is not versioned); a replacement made above has no rows, so `slices` serves
    in_tables = tables.finished_in_tables(kept, slices, tables.set_aside_trials(out))
    statuses = {**in_tables, **{i: {row["status"] for row in p["runs"]} for i, p in finished.items()}}
    pending = [t for i, t in configs.items() if i not in statuses or (retry_failed and "error" in statuses[i])]
    if kept:
        n = len(kept.get("runs", ()))
        resumed = f"; {len(in_tables)} trial(s) of this sweep have a row per eval slice: finished" if in_tables else ""
        print(f"note: {out} holds {n} runs rows of trials without a complete file in {tables.TRIALS_DIR}/: "
              f"they are kept{resumed}", file=sys.stderr)
    shown = SweepProgress(spec.name, len(configs), len(configs) - len(pending), progress)
    tracker_warned: set[str] = set()
    if trackers is not None and pending:
        _warn_trackers(trackers.prepare(), "setting up the sweep", tracker_warned)
    rebuild = _TableRebuilds(out, finished, kept)
    try:
        for payload in runner.run(pending):
            label = f"trial {payload['trial_id']} ({configs[payload['trial_id']].label()})"
            if payload.get("traceback"):  # an exception inside the trial: recorded, and shown in full
                print(f"membench: {label} raised an exception, recorded as status error:\n{payload['traceback']}",
                      file=sys.stderr, end="")
            for warning in payload.get("warnings", ()):  # e.g. a cost method that answered nonsense
                print(f"membench: warning: {label}: {warning}", file=sys.stderr)
            _warn_trackers(payload.pop("tracker_problems", {}), label, tracker_warned)
            _write(out, lambda: tables.write_trial(out, payload))
            finished[payload["trial_id"]] = payload
            rebuild.after_trial()
            shown.trial_finished(configs[payload["trial_id"]].label(), _status(payload))
    except BaseException as err:  # Ctrl-C, SIGTERM, a bug: the tables catch up with the trial files written so far
        if not isinstance(err, UsageError):  # (a write that failed is not tried again)
            rebuild.if_behind()
        raise
    finally:
        shown.close()
    rebuild.if_behind()  # the end of the sweep; also when nothing ran: the tables exist and match the trial files
    return finished, kept, configs


class _TableRebuilds:
    """When a sweep rebuilds its tables from the trial files (see the module doc): `after_trial` when they
    are due (the first trial's always), `if_behind` unless nothing changed since the last rebuild (a sweep
    that has not rebuilt them yet is behind: the tables may not exist, or not match the trial files)."""

    def __init__(self, out: Path, finished: dict[str, dict], kept: dict[str, pd.DataFrame]) -> None:
        self.out, self.finished, self.kept = out, finished, kept
        self.last, self.cost, self.behind = -math.inf, 0.0, True

    def after_trial(self) -> None:
        self.behind = True
        if time.monotonic() - self.last >= max(TABLES_EVERY, self.cost / TABLES_COST_SHARE):
            self.now()

    def if_behind(self) -> None:
        if self.behind:
            self.now()

    def now(self) -> None:
        started = time.monotonic()
        _write(self.out, lambda: tables.write_tables(self.out, tables.frames(self.finished, self.kept)))
        self.last = time.monotonic()
        self.cost, self.behind = self.last - started, False


def check_out_dir(out: Path) -> None:
    """Refuse an --out that cannot be a results directory, before anything is created: a file, a dangling
    symbolic link, or a directory whose trials/ or tables are of the wrong kind."""
    if out.is_symlink() and not out.exists():
        raise UsageError(f"--out {out} is a symbolic link to {os.readlink(out)}, which does not exist")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory")
    if (out / tables.TRIALS_DIR).exists() and not (out / tables.TRIALS_DIR).is_dir():
        raise UsageError(f"{out / tables.TRIALS_DIR} is a file, not a directory of trial files; move it away")
    for name in tables.TABLES:
        for suffix in (".csv", ".parquet"):
            path = out / f"{name}{suffix}"
            if path.exists() and not path.is_file():
                raise UsageError(f"{path} is not a file (a directory?); move it away")


def _make_dirs(out: Path) -> None:
    try:
        (out / tables.TRIALS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create {out / tables.TRIALS_DIR}: {err.strerror or err}; give a writable --out") \
            from None


def _write(out: Path, write) -> None:
    """Run a write into `out`; a failed write (disk full, permissions changed) is one line, not a traceback."""
    try:
        write()
    except OSError as err:
        where = f" ({err.filename})" if err.filename else ""
        raise UsageError(f"cannot write in {out}{where}: {err.strerror or err}; the trials already written are "
                         f"kept, and re-running resumes") from None


def _warn_trackers(problems: dict[str, str], where: str, warned: set[str]) -> None:
    """One warning line per failing tracker per sweep (one that fails in a trial most likely fails in every
    trial); the trials go on, their rows written, only that tracker's copy of their curves missing."""
    for name, problem in problems.items():
        if name not in warned:
            warned.add(name)
            print(f"membench: warning: --log {name} failed ({where}): {problem}; trials still run and write "
                  f"their rows, without {name} where it fails (said once)", file=sys.stderr)


def _status(payload: dict) -> str:
    statuses = {row["status"] for row in payload["runs"]}
    return "ok" if statuses == {"ok"} else "/".join(sorted(statuses))


def report_failures(runs: pd.DataFrame, out_dir) -> int:
    """Say on stderr how many of a sweep's trials (its `runs` rows) raised an exception, where their tracebacks
    are and how to re-run them; the command's exit code: 1 when any did, else 0. (oom, diverged and timeout
    are results, not failures of the run.)"""
    errored = runs.loc[runs["status"] == "error", "trial_id"].unique()
    if len(errored) == 0:
        return 0
    print(f"membench: {len(errored)} of {runs['trial_id'].nunique()} trials failed with an error (status error; "
          f"tracebacks in {Path(out_dir) / tables.TRIALS_DIR}/<trial_id>.json); fix the cause, then re-run with "
          f"--retry-failed", file=sys.stderr)
    return 1


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
