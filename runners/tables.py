"""The results tables of a sweep directory, and the per-trial files they are rebuilt from.

Layout of a sweep directory:

    trials/<trial_id>.json   one per finished trial: {"trial_id", "config", "runs", "lags", "curves",
                             "slice_curves"}
    runs.csv   lags.csv   curves.csv   slice_curves.csv   (+ .parquet beside each when pyarrow is importable)

Crash safety: every file is written to a temporary file in the same directory and moved into place with
os.replace (atomic on POSIX and Windows). A trial's file is written as it finishes, and the tables are
rebuilt from all trial files (when: runners.sweep); so a kill at any moment loses at most the trial in
flight, a table is always either the old or the new complete file, and rows cannot be duplicated (they are
keyed by trial_id). Temporary files are named `.tmp-<pid>-<name>.<random>` and ignored; a sweep removes
only its own and those of processes that no longer exist (never another live writer's file in flight).

No row is ever dropped: rows of the tables whose trial has no file in trials/ (a directory of tables
copied without its trials/, a trial file deleted by hand) are kept in the rebuilt tables (`kept_rows`),
until a trial of that id finishes again and its file replaces them.

A trial file counts as finished only when it holds every row its config implies (`missing_rows`: a runs
row per eval slice, each table a list of rows); an incomplete or unreadable one is re-run, with a note.

Reading checks each table's columns (`check_table`: types, ranges, known statuses) and names the file,
row and column of the first bad cell.

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
    "exact_match", "loss", "scored", "train_seconds", "compile_seconds", "ms_per_step", "tokens_per_second",
    "peak_memory_mb", "flops_per_step", "tflops_per_s", "attention_flops_share", "memory_flops_share", "state_size",
    "time_to_accuracy_seconds", "time_to_accuracy_steps", "time_to_accuracy_tokens", "stop_reason", "under_trained",
    "status", "error", "device", "precision", "git_commit", "torch_version",
]
LAGS_COLUMNS = ["trial_id", "task", "model", "train_len", "eval_len", "seed", "lag_bucket", "accuracy", "count"]
CURVES_COLUMNS = ["trial_id", "task", "model", "train_len", "seed", "step", "seconds", "tokens", "train_loss",
                  "eval_accuracy"]
SLICE_CURVES_COLUMNS = ["trial_id", "task", "model", "d_model", "train_len", "seed", "slice", "eval_len", "step",
                        "seconds", "tokens", "accuracy"]
TABLES = {"runs": RUNS_COLUMNS, "lags": LAGS_COLUMNS, "curves": CURVES_COLUMNS, "slice_curves": SLICE_CURVES_COLUMNS}
TRIALS_DIR = "trials"
_TMP = ".tmp-"  # + "<pid>-": whose file it is
# row order of every table: by these columns where present, then trial order within a trial
_SORT = ["task", "model", "d_model", "train_len", "seed", "lr", "trial_id"]


def state_cell(size: int | None) -> float | int:
    """The state_size column's value: NaN (an empty cell, "unknown" in tables and charts) for a model that
    declares no state size, never 0, which would claim a memoryless model."""
    return math.nan if size is None else size


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory and os.replace."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{_TMP}{os.getpid()}-{path.name}.")
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


def read_trials(out_dir: Path, notes: list[str] | None = None) -> dict[str, dict]:
    """Every readable trial file in `out_dir`: trial_id -> payload. A file that is not JSON, not a JSON
    object or not named by its trial_id is skipped (its trial re-runs), with a note appended to `notes`."""
    trials = {}
    folder = Path(out_dir) / TRIALS_DIR
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name.startswith(_TMP):
            continue
        try:
            payload = json.loads(path.read_bytes())
        except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            _add(notes, f"trial file {path} is unreadable ({type(err).__name__}); its trial will re-run")
            continue
        if not isinstance(payload, dict):
            _add(notes, f"trial file {path} holds a JSON {type(payload).__name__}, not an object; its trial will "
                        f"re-run")
        elif payload.get("trial_id") != path.stem:
            _add(notes, f"trial file {path} names trial {payload.get('trial_id')!r}, not {path.stem!r}; ignored")
        else:
            trials[path.stem] = payload
    return trials


def missing_rows(payload: dict, slices: list[str] | None = None) -> str:
    """What a trial payload lacks to count as finished ('' when complete): every table a list of row
    objects, and a runs row (with a known status) for each of `slices` (the config's eval slice names; by
    default those of payload["config"]).

        >>> missing_rows({"trial_id": "ab12", "runs": []}, ["L16"])
        'no lags rows list'
    """
    from membench.runners.trial import STATUSES

    for name in TABLES:
        rows = payload.get(name)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            if name == "slice_curves" and rows is None:
                continue  # files written before slice_curves existed have none
            return f"no {name} rows list"
    if slices is None:
        config = payload.get("config")
        try:
            slices = [s["name"] for s in config["eval_slices"]]
        except (TypeError, KeyError):
            return "no config with eval slices"
    have = {r.get("slice") for r in payload["runs"] if r.get("status") in STATUSES}
    lacking = [name for name in slices if name not in have]
    return f"no runs row for slice(s) {', '.join(lacking)}" if lacking else ""


def _add(notes: list[str] | None, text: str) -> None:
    if notes is not None:
        notes.append(text)


def remove_temporaries(out_dir: Path) -> None:
    """Delete temporary files of this process and of processes that no longer exist (a killed sweep);
    another live process's file in flight is left alone."""
    for folder in (Path(out_dir), Path(out_dir) / TRIALS_DIR):
        for path in folder.glob(_TMP + "*") if folder.is_dir() else []:
            pid = path.name[len(_TMP):].split("-", 1)[0]
            if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
                path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def kept_rows(out_dir: Path, trial_ids) -> dict[str, pd.DataFrame]:
    """Rows of the tables in `out_dir` whose trial_id is not in `trial_ids` (trials without a file): they
    are results too, and rebuilt tables keep them. Raises UsageError naming the file when a table exists
    but cannot be read (rather than overwrite it)."""
    kept = {}
    for name, columns in TABLES.items():
        path = Path(out_dir) / f"{name}.csv"
        if not path.is_file():
            continue
        table = read_table(path, name)
        if table is None:
            continue
        rows = table[~table["trial_id"].isin(set(trial_ids))]
        if len(rows):
            kept[name] = rows.reindex(columns=columns)
    return kept


STRING_COLUMNS = {"trial_id": str, "task": str, "task_params": str, "model_params": str, "model": str, "slice": str,
                  "status": str, "error": str, "device": str, "precision": str, "stop_reason": str, "git_commit": str,
                  "torch_version": str}


def read_table(path: Path, name: str) -> pd.DataFrame | None:
    """Table `name` (a key of TABLES) from `path`, its columns checked (check_table); None when the file is
    empty. Raises UsageError naming the file when it is not a CSV of that table."""
    from membench.runners.errors import UsageError

    try:
        table = pd.read_csv(path, dtype={k: v for k, v in STRING_COLUMNS.items() if k in TABLES[name]})
    except pd.errors.EmptyDataError:
        return None
    except (UnicodeDecodeError, pd.errors.ParserError, OSError) as err:
        why = err.strerror if isinstance(err, OSError) else " ".join(str(err).split())[:120]
        raise UsageError(f"{path} is not a readable CSV table ({why}); move it away or restore it") from None
    if "trial_id" not in table.columns:
        raise UsageError(f"{path} lacks column trial_id; it must follow the membench {name} schema")
    check_table(name, table, path)
    return table


# --- column checks of a table read back ---------------------------------------------------------------
_INTEGER = {"d_model", "n_layers", "params", "train_len", "eval_len", "seed", "batch_size", "steps", "lag_bucket",
            "count", "step", "tokens", "task_version", "model_version", "state_size", "time_to_accuracy_steps",
            "time_to_accuracy_tokens"}
_FRACTION = {"accuracy", "exact_match", "eval_accuracy", "attention_flops_share", "memory_flops_share"}
_REQUIRED_TEXT = {"trial_id", "task", "model", "slice", "status"}  # never empty


def check_table(name: str, table: pd.DataFrame, path) -> None:
    """Raise UsageError naming `path`, the row (its line in the file) and the column of the first bad cell:
    a non-numeric value in a numeric column, a fraction outside [0, 1], a non-integer where an integer is
    due (lengths, seeds, steps, counts), an empty trial_id, task, model, slice or status, or an unknown status.
    Empty numeric cells are allowed (NaN: a failed trial's metrics)."""
    from membench.runners.errors import UsageError
    from membench.runners.trial import STATUSES

    def fail(index, column: str, value, why: str) -> None:
        raise UsageError(f"{path} row {int(index) + 2} column {column}: {value!r} {why}; fix or remove the row")

    bool_columns = {"is_train_len"}
    for column in table.columns:
        if column not in TABLES[name]:
            continue
        values = table[column]
        if column in _REQUIRED_TEXT:
            empty = values.isna() | (values.astype(str).str.strip() == "")
            if empty.any():
                fail(empty.idxmax(), column, "", "is empty")
            if column == "status":
                unknown = ~values.isin(STATUSES)
                if unknown.any():
                    fail(unknown.idxmax(), column, values[unknown.idxmax()], f"is not a status ({', '.join(STATUSES)})")
            continue
        if column in STRING_COLUMNS or column in bool_columns:
            continue
        numbers = pd.to_numeric(values, errors="coerce")
        bad = numbers.isna() & values.notna()
        if bad.any():
            fail(bad.idxmax(), column, values[bad.idxmax()], "is not a number")
        if column in _INTEGER:
            frac = numbers.notna() & (numbers != numbers.round())
            if frac.any():
                fail(frac.idxmax(), column, values[frac.idxmax()], "is not an integer")
        if column in _FRACTION:
            out = numbers.notna() & ((numbers < 0) | (numbers > 1))
            if out.any():
                fail(out.idxmax(), column, values[out.idxmax()], "is outside [0, 1]")


def frames(trials: dict[str, dict], kept: dict[str, pd.DataFrame] | None = None) -> dict[str, pd.DataFrame]:
    """The tables (schema column order) from trial payloads, plus `kept` rows (kept_rows) of trials that
    have no payload here."""
    result = {}
    for name, columns in TABLES.items():
        rows = [row for payload in trials.values() for row in payload.get(name, None) or []]
        df = pd.DataFrame(rows, columns=columns)
        extra = (kept or {}).get(name)
        if extra is not None and len(extra):
            extra = extra[~extra["trial_id"].isin(set(trials))]
            df = pd.concat([df.astype(object), extra.astype(object)], ignore_index=True) if len(df) else extra.copy()
        keys = [c for c in _SORT if c in columns]
        df = df.sort_values(keys, kind="stable", ignore_index=True) if len(df) else df
        if name == "runs":
            df["is_train_len"] = df["is_train_len"].map(_as_bool).astype(bool)
            df["error"] = df["error"].fillna("")
        result[name] = df.infer_objects() if extra is not None else df
    return result


def _as_bool(value) -> bool:
    return value.strip().lower() == "true" if isinstance(value, str) else bool(value)


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
