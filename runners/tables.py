"""The files of a results directory: the per-trial files and the tables rebuilt from them, written
atomically and checked when read back. What the tables hold (columns, statuses, valid cells) is
runners.schema; the rows themselves are made by runners.rows.

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

Resume trusts nothing it reads. A trial file counts as finished only when it is valid (`trial_problem`): a
JSON object named by its trial_id, with every row its config implies (`missing_rows`: a runs row per eval
slice, each table a list of rows), every row with all its table's columns and its file's trial_id, and every
value passing the tables' own checks (`runners.schema.cell_problems`). Any other file is set aside as
`<trial_id>.json.bad-<n>` (never deleted), with a note, and its trial re-runs.

No row is ever dropped: rows of the tables whose trial has no valid file in trials/ (a directory of tables
copied without its trials/, a trial file deleted by hand or set aside) are kept in the rebuilt tables
(`kept_rows`), until a trial of that id finishes again and its file replaces them. A trial of the sweep whose
kept rows include a runs row per eval slice counts as finished (`finished_in_tables`), unless its file was set
aside: trials/ is not versioned, so a committed results directory resumes from its tables. Those rows are checked
like any table read (their values, and that the table has every column); rows of trials that do have a
file are not, since they are rebuilt from it. An invalid row is left out only when its trial's file was set
aside (that file holds the trial's rows), with a note; any other bad row stops the sweep with a one-line
error naming the file, row and column, before anything is written.

Reading checks each table's cells (`check_table`, with the schema's checks: types, ranges, known statuses)
and names the file, row and column of the first bad cell.

A user's own columns: columns a user adds to a table (notes, tags) are kept when the sweep rewrites it
(`write_tables`): they follow the schema's columns, and each row takes them from the old row of the same
ROW_KEYS (runs: trial_id and slice), so a re-run trial's rows keep them too.

Column order is fixed (the schema's TABLES); the leaderboard and charts read only these tables. slice_curves
(every slice's accuracy at every evaluation) came later: trial files written before it have none, and their
trials add no rows.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import pandas as pd

from membench.runners.errors import UsageError
from membench.runners.schema import (
    KEYS_ADDED_LATER,
    ROW_KEYS,
    STATUSES,
    STRING_COLUMNS,
    TABLES,
    as_bool,
    cell_problems,
)

TRIALS_DIR = "trials"
_TMP = ".tmp-"  # + "<pid>-": whose file it is
# row order of every table: by these columns where present, then trial order within a trial
_SORT = ["task", "model", "d_model", "train_len", "seed", "lr", "trial_id"]


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


def read_trials(out_dir: Path, notes: list[str], slices: dict[str, list[str]] | None = None) -> dict[str, dict]:
    """Every valid trial file in `out_dir` (see trial_problem): trial_id -> payload. `slices`: the eval slice
    names of the sweep's trials by trial_id, which their files must hold (a file of another trial must hold
    the slices of its own config; without `slices`, every file's trial counts as another's).

    Every other file is set aside as <name>.bad-<n> (never deleted), with a note appended to `notes`
    naming it and saying what becomes of its trial: it re-runs, and its rows in the tables are kept until
    then (kept_rows).
    """
    folder = Path(out_dir) / TRIALS_DIR
    paths = [p for p in sorted(folder.glob("*.json")) if not p.name.startswith(_TMP)] if folder.is_dir() else []
    trials, problems = {}, {}
    for path in paths:
        try:
            payload = json.loads(path.read_bytes())
        except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            problems[path] = f"is unreadable ({type(err).__name__})"
            continue
        wanted = (slices or {}).get(path.stem)
        problem = _shape_problem(payload, path.stem, wanted)
        if problem:
            problems[path] = problem
        else:
            trials[path.stem] = payload
    for trial_id, problem in _value_problems(trials).items():
        del trials[trial_id]
        problems[folder / f"{trial_id}.json"] = problem
    for path, problem in sorted(problems.items()):
        aside = set_aside(path)
        if slices is None:
            fate = "its trial re-runs in a sweep that has it, and its rows in the tables are kept until then"
        else:
            fate = "its trial will re-run" if path.stem in slices else "its rows in the tables are kept"
        notes.append(f"trial file {path} {problem}: set aside as {aside.name}; {fate}")
    return trials


def trial_problem(payload, trial_id: str, slices: list[str] | None = None) -> str:
    """What makes `payload` (a trial file's JSON, named `trial_id`) not a finished trial, as a phrase ('' when
    it is one): not an object, named by another trial_id, incomplete (missing_rows, for `slices` or its
    config's), a row lacking a column of its table or naming another trial, or a value that fails the
    tables' checks (cell_problems).

        >>> trial_problem({"trial_id": "ab12", "runs": []}, "ab12", ["L16"])
        'is incomplete (no lags rows list)'
        >>> trial_problem([], "ab12")
        'holds a JSON list, not an object'
    """
    return _shape_problem(payload, trial_id, slices) or _value_problems({trial_id: payload}).get(trial_id, "")


def _shape_problem(payload, trial_id: str, slices: list[str] | None) -> str:
    """trial_problem's checks of everything but the rows' values."""
    if not isinstance(payload, dict):
        return f"holds a JSON {type(payload).__name__}, not an object"
    if payload.get("trial_id") != trial_id:
        return f"names trial {payload.get('trial_id')!r}, not {trial_id!r}"
    lacking = missing_rows(payload, slices)
    if lacking:
        return f"is incomplete ({lacking})"
    for name, columns in TABLES.items():
        for number, row in enumerate(payload.get(name) or [], start=1):
            absent = [c for c in columns if c not in row]
            if absent:
                return f"is invalid ({name} row {number} lacks {', '.join(absent)})"
            if row["trial_id"] != trial_id:
                return f"is invalid ({name} row {number} names trial {row['trial_id']!r})"
    return ""


def _value_problems(trials: dict[str, dict]) -> dict[str, str]:
    """trial_id -> the first bad value of its rows (cell_problems), for the payloads of `trials` that have one
    (their rows already shaped: _shape_problem). The rows of all trials are checked together, one table at a
    time, not one small frame per file: 1,000 trial files take under 2 s."""
    problems = {}
    for name, columns in TABLES.items():
        rows = [row for payload in trials.values() for row in payload.get(name) or []]
        if not rows:
            continue
        where = [(trial_id, number) for trial_id, payload in trials.items()  # each row's file and place in it
                 for number, _ in enumerate(payload.get(name) or [], start=1)]
        found = cell_problems(name, pd.DataFrame(rows, columns=columns))
        for index in found.index[found != ""]:
            trial_id, number = where[index]
            problems.setdefault(trial_id, f"is invalid ({name} row {number} {found[index]})")
    return problems


def set_aside(path: Path) -> Path:
    """Rename the file at `path` to <name>.bad-<n> beside it, n the first number free; the new path. It is
    never deleted: what it holds can be read back by hand."""
    n = 1
    while path.with_name(f"{path.name}.bad-{n}").exists():
        n += 1
    aside = path.with_name(f"{path.name}.bad-{n}")
    try:
        path.rename(aside)
    except OSError as err:
        raise UsageError(f"cannot set {path} aside as {aside.name} ({err.strerror or err}); move it out of "
                         f"{TRIALS_DIR}/ by hand") from None
    return aside


def set_aside_trials(out_dir: Path) -> set[str]:
    """The trial_ids whose file was set aside in `out_dir` (trials/<trial_id>.json.bad-<n> exists)."""
    folder = Path(out_dir) / TRIALS_DIR
    return {p.name.split(".json.bad-")[0] for p in folder.glob("*.json.bad-*")} if folder.is_dir() else set()


def missing_rows(payload: dict, slices: list[str] | None = None) -> str:
    """What a trial payload lacks to count as finished ('' when complete): every table a list of row
    objects, and a runs row (with a known status) for each of `slices` (the config's eval slice names; by
    default those of payload["config"]).

        >>> missing_rows({"trial_id": "ab12", "runs": []}, ["L16"])
        'no lags rows list'
    """
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
    have = {r["slice"] for r in payload["runs"] if isinstance(r.get("slice"), str) and r.get("status") in STATUSES}
    lacking = [str(name) for name in slices if not (isinstance(name, str) and name in have)]
    return f"no runs row for slice(s) {', '.join(lacking)}" if lacking else ""


def finished_in_tables(kept: dict[str, pd.DataFrame], slices: dict[str, list[str]],
                       set_aside: set[str] = frozenset()) -> dict[str, set[str]]:
    """The trials of `slices` (trial_id -> its config's eval slice names) that have no trial file but whose
    `kept` runs rows (kept_rows) hold a row per eval slice: trial_id -> the statuses of those rows. A sweep
    counts them as finished, so a results directory committed without trials/ (they are not versioned)
    resumes from its tables. Trials in `set_aside` (their file was set aside: set_aside_trials) are left
    out: they run again.

        >>> rows = pd.DataFrame({"trial_id": ["ab", "ab", "cd"], "slice": ["L8", "L16", "L8"],
        ...                      "status": ["ok", "ok", "ok"]})
        >>> finished_in_tables({"runs": rows}, {"ab": ["L8", "L16"], "cd": ["L8", "L16"]})
        {'ab': {'ok'}}
    """
    runs = kept.get("runs")
    if runs is None or not len(runs):
        return {}
    result = {}
    for trial_id, rows in runs[runs["trial_id"].isin(set(slices) - set(set_aside))].groupby("trial_id"):
        if set(slices[trial_id]) <= set(rows["slice"]):
            result[trial_id] = set(rows["status"])
    return result


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


def kept_rows(out_dir: Path, trial_ids, notes: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Rows of the tables in `out_dir` whose trial_id is not in `trial_ids` (trials without a valid file):
    they are results too, and rebuilt tables keep them. A table whose rows all have a file gives none: it is
    rebuilt from them, whatever it holds.

    The rows kept are checked (cell_problems), and their table must have every column of the schema. An
    invalid row of a trial whose file was set aside (set_aside_trials) is left out, with a note appended to
    `notes` (that file holds the trial's rows; without `notes`, such a row is an error like any other). Raises
    UsageError naming the file, row and column, and a fix that works, for any other bad row, a missing
    column, or a table that cannot be read (rather than overwrite it).
    """
    kept, ids = {}, set(trial_ids)
    for name, columns in TABLES.items():
        path = Path(out_dir) / f"{name}.csv"
        table = _read_csv_table(path, name) if path.is_file() else None
        if table is None:
            continue
        rows = table[~table["trial_id"].isin(ids)]
        problems = cell_problems(name, rows)
        bad = problems != ""
        aside = set_aside_trials(out_dir) if notes is not None else set()  # left out only where it is said
        left_out = bad & rows["trial_id"].isin(aside)
        if (bad & ~left_out).any():
            index = (bad & ~left_out).idxmax()
            raise UsageError(f"{path} row {index + 2} {problems[index]}, and trial {rows.loc[index, 'trial_id']} "
                             f"has no file in {TRIALS_DIR}/ to rebuild the row from: correct the cell or delete "
                             f"the row (a sweep that has the trial re-runs it)")
        if left_out.any():
            index = left_out.idxmax()
            notes.append(f"{path} holds {int(left_out.sum())} invalid row(s) of trials whose file was set aside in "
                         f"{TRIALS_DIR}/ (row {index + 2} {problems[index]}): left out; the set-aside files hold "
                         f"those trials' rows")
            rows = rows[~left_out]
        absent = [c for c in columns if c not in table.columns]
        if absent and len(rows):
            raise UsageError(f"{path} lacks column(s) {', '.join(absent)}, and {len(rows)} of its rows (row "
                             f"{rows.index[0] + 2} first) have no file in {TRIALS_DIR}/ to rebuild them from: add "
                             f"the column(s) to {path.name}, empty where the values are unknown, or delete those "
                             f"rows (a sweep that has their trials re-runs them)")
        if len(rows):
            kept[name] = rows.reindex(columns=columns)
    return kept


def _read_csv_table(path: Path, name: str) -> pd.DataFrame | None:
    """Table `name` (a key of TABLES) from `path`, its text columns read as text, not yet checked; None when
    the file is empty. Raises UsageError naming the file when it is not a CSV with a trial_id column."""
    table = _read_csv(path, dtype={k: v for k, v in STRING_COLUMNS.items() if k in TABLES[name]})
    if table is not None and "trial_id" not in table.columns:
        raise UsageError(f"{path} lacks column trial_id, so its rows cannot be matched to their trials; restore "
                         f"the column, or move {path.name} away (a sweep rebuilds it from {TRIALS_DIR}/)")
    return table


def _read_csv(path: Path, **options) -> pd.DataFrame | None:
    """pd.read_csv(path, **options); None when the file is empty. Raises UsageError naming the file when it
    is not a readable CSV."""
    try:
        return pd.read_csv(path, **options)
    except pd.errors.EmptyDataError:
        return None
    except (UnicodeDecodeError, pd.errors.ParserError, OSError) as err:
        why = err.strerror if isinstance(err, OSError) else " ".join(str(err).split())[:120]
        raise UsageError(f"{path} is not a readable CSV table ({why}); move it away or restore it") from None


def check_table(name: str, table: pd.DataFrame, path) -> None:
    """Raise UsageError naming `path`, the row (its line in the file) and the column of the first bad cell
    (cell_problems) of `table`, read from `path` with its default index, and the fix: running the sweep again
    when the row's trial has a file in trials/ beside the table (it rebuilds the row), else fixing the row."""
    problems = cell_problems(name, table)
    if (problems != "").any():
        index = (problems != "").idxmax()
        trial_file = Path(path).parent / TRIALS_DIR / f"{table.at[index, 'trial_id']}.json"
        fix = (f"run the sweep again (it rebuilds the row from {TRIALS_DIR}/{trial_file.name}) or fix the cell"
               if "trial_id" in table.columns and trial_file.is_file() else "fix or remove the row")
        raise UsageError(f"{path} row {int(index) + 2} {problems[index]}; {fix}")


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
            df["is_train_len"] = df["is_train_len"].map(as_bool).astype(bool)
            df["error"] = df["error"].fillna("")
        result[name] = df.infer_objects() if extra is not None else df
    return result


def write_tables(out_dir: Path, tables: dict[str, pd.DataFrame]) -> None:
    """Atomically replace <name>.csv (and <name>.parquet when pyarrow is importable) for every table, keeping
    the columns a user added to the CSV it replaces (with_user_columns)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        pyarrow = None
    for name, df in tables.items():
        path = Path(out_dir) / f"{name}.csv"
        df = with_user_columns(df, name, path)
        atomic_write_bytes(path, df.to_csv(index=False).encode())
        if pyarrow is not None:
            buffer = io.BytesIO()
            df.to_parquet(buffer, index=False)
            atomic_write_bytes(Path(out_dir) / f"{name}.parquet", buffer.getvalue())


def with_user_columns(df: pd.DataFrame, name: str, path: Path) -> pd.DataFrame:
    """`df` (table `name`, about to replace the CSV at `path`) followed by the columns of that CSV which are
    not in the schema (a user's own), each row taking their cells, as written, from the old row of the same
    ROW_KEYS; a row that had none gets empty cells. A key column the old CSV predates (KEYS_ADDED_LATER) takes
    the value its rows had then.

        runs.csv before:  trial_id,slice,...,status,note      after:  trial_id,slice,...,status,note
                          ab12,L8,...,ok,check lr                     ab12,L8,...,ok,check lr
                                                                      cd34,L8,...,ok,
    """
    keys = ROW_KEYS.get(name)
    header = _read_csv(path, nrows=0) if keys and path.is_file() else None
    if header is None:
        return df
    absent = [k for k in keys if k not in header.columns]
    if any(k not in KEYS_ADDED_LATER for k in absent):
        return df
    own = [c for c in header.columns if c not in TABLES[name] and c not in df.columns]
    if not own:
        return df
    old = _read_csv(path, usecols=[*(k for k in keys if k not in absent), *own], dtype=str, keep_default_na=False)
    old = old.assign(**{k: KEYS_ADDED_LATER[k] for k in absent})
    old.index = _row_key(old, keys)
    carried = old.loc[~old.index.duplicated(), own].reindex(_row_key(df, keys))
    return pd.concat([df.reset_index(drop=True), carried.reset_index(drop=True)], axis=1)


def _row_key(table: pd.DataFrame, keys: list[str]) -> pd.Index:
    """One text per row of `table` from its `keys` columns, the same for a row read back from a CSV (numbers
    as text) and for the row it was written from (numbers as numbers)."""
    parts = [table[k].astype(str) if k in STRING_COLUMNS
             else pd.to_numeric(table[k], errors="coerce").map(lambda x: f"{x:.17g}") for k in keys]
    return pd.Index(parts[0].str.cat(parts[1:], sep="\x1f") if len(parts) > 1 else parts[0])
