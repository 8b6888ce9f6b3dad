"""The results tables of a sweep directory, and the per-trial files they are rebuilt from.

Layout of a sweep directory:

    trials/<trial_id>.json   one per finished trial: {"trial_id", "config", "runs", "lags", "curves",
                             "slice_curves"}
    runs.csv   lags.csv   curves.csv   slice_curves.csv   (+ .parquet beside each when pyarrow is importable)

Crash safety: every file is written to a temporary file in the same directory and moved into place with
os.replace (atomic on POSIX and Windows). A trial's file is written first, then the tables are rebuilt from
all trial files; so a kill at any moment loses at most the trial in flight, a table is always either the
old or the new complete file, and rows cannot be duplicated (they are keyed by trial_id). Temporary files
start with `.tmp-` and are ignored (and removed by the next sweep).

Column order is fixed (RUNS_COLUMNS, LAGS_COLUMNS, CURVES_COLUMNS, SLICE_CURVES_COLUMNS); the leaderboard and
charts read only these tables. slice_curves (every slice's accuracy at every evaluation) came later: trial
files written before it have none, and their trials add no rows.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path

import pandas as pd

RUNS_COLUMNS = [
    "trial_id", "task", "task_version", "task_params", "model", "model_version", "model_params", "d_model", "n_layers",
    "params", "train_len", "eval_len", "slice", "is_train_len", "seed", "lr", "batch_size", "steps", "accuracy",
    "exact_match", "loss", "scored", "train_seconds", "ms_per_step", "tokens_per_second", "peak_memory_mb",
    "flops_per_step", "tflops_per_s", "attention_flops_share", "memory_flops_share", "state_size",
    "time_to_accuracy_seconds", "time_to_accuracy_steps",
    "time_to_accuracy_tokens", "status", "error", "device", "git_commit", "torch_version",
]
LAGS_COLUMNS = ["trial_id", "task", "model", "train_len", "eval_len", "seed", "lag_bucket", "accuracy", "count"]
CURVES_COLUMNS = ["trial_id", "task", "model", "train_len", "seed", "step", "seconds", "tokens", "train_loss",
                  "eval_accuracy"]
SLICE_CURVES_COLUMNS = ["trial_id", "task", "model", "d_model", "train_len", "seed", "slice", "eval_len", "step",
                        "seconds", "tokens", "accuracy"]
TABLES = {"runs": RUNS_COLUMNS, "lags": LAGS_COLUMNS, "curves": CURVES_COLUMNS, "slice_curves": SLICE_CURVES_COLUMNS}
TRIALS_DIR = "trials"
_TMP = ".tmp-"
# row order of every table: by these columns where present, then trial order within a trial
_SORT = ["task", "model", "d_model", "train_len", "seed", "lr", "trial_id"]


def state_cell(size: int | None) -> float | int:
    """The state_size column's value: NaN (an empty cell, "unknown" in tables and charts) for a model that
    declares no state size, never 0, which would claim a memoryless model."""
    return math.nan if size is None else size


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory and os.replace."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP + path.name + ".")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_trial(out_dir: Path, payload: dict) -> None:
    """Store one finished trial's rows as trials/<trial_id>.json (atomically)."""
    path = Path(out_dir) / TRIALS_DIR / f"{payload['trial_id']}.json"
    atomic_write_bytes(path, json.dumps(payload, sort_keys=True).encode())


def read_trials(out_dir: Path) -> dict[str, dict]:
    """Every finished trial in `out_dir`: trial_id -> payload. Unreadable files are skipped (rerun)."""
    trials = {}
    folder = Path(out_dir) / TRIALS_DIR
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name.startswith(_TMP):
            continue
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if payload.get("trial_id") == path.stem:
            trials[path.stem] = payload
    return trials


def remove_temporaries(out_dir: Path) -> None:
    """Delete temporary files left by a killed sweep (one sweep writes a directory at a time)."""
    for folder in (Path(out_dir), Path(out_dir) / TRIALS_DIR):
        for path in folder.glob(_TMP + "*") if folder.is_dir() else []:
            path.unlink(missing_ok=True)


def frames(trials: dict[str, dict]) -> dict[str, pd.DataFrame]:
    """The tables (schema column order) from trial payloads."""
    result = {}
    for name, columns in TABLES.items():
        rows = [row for payload in trials.values() for row in payload.get(name, [])]
        df = pd.DataFrame(rows, columns=columns)
        keys = [c for c in _SORT if c in columns]
        df = df.sort_values(keys, kind="stable", ignore_index=True) if len(df) else df
        if name == "runs":
            df["is_train_len"] = df["is_train_len"].astype(bool)
            df["error"] = df["error"].fillna("")
        result[name] = df
    return result


def write_tables(out_dir: Path, tables: dict[str, pd.DataFrame]) -> None:
    """Atomically replace <name>.csv (and <name>.parquet when pyarrow is importable) for every table."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        pyarrow = None
    for name, df in tables.items():
        atomic_write_bytes(Path(out_dir) / f"{name}.csv", df.to_csv(index=False).encode())
        if pyarrow is not None:
            buffer = io.BytesIO()
            df.to_parquet(buffer, index=False)
            atomic_write_bytes(Path(out_dir) / f"{name}.parquet", buffer.getvalue())
