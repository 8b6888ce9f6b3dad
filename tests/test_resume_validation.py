"""Resume trusts nothing it reads: bad trial files are set aside and re-run, bad table rows are named with a fix
that works, and a user's own columns survive a rebuild.

Sweeps here are one micro trial (mlp at length 8, 4 steps, slices L8 and L16): what is tested is what happens
to the files.
"""

from __future__ import annotations

import doctest
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from membench.runners import schema, tables
from membench.runners.errors import UsageError
from membench.runners.schema import RUNS_COLUMNS
from membench.runners.spec import load_spec
from membench.runners.sweep import run_sweep
from tests.helpers import MICRO_COPY, MICRO_SETTINGS, run_cli

SPEC = MICRO_SETTINGS + MICRO_COPY


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """A finished micro sweep (one trial): copy it, then damage the copy."""
    out = tmp_path_factory.mktemp("swept") / "out"
    (out.parent / "spec.toml").write_text(SPEC)
    run_sweep(load_spec(None, str(out.parent / "spec.toml")), out, progress=False)
    return out


@pytest.fixture
def out(tmp_path, swept) -> Path:
    shutil.copytree(swept, tmp_path / "out")
    (tmp_path / "spec.toml").write_text(SPEC)
    return tmp_path / "out"


def run(capsys, out: Path, *flags) -> tuple[int, str]:
    code, _, err = run_cli(capsys, "run", "--spec", str(out.parent / "spec.toml"), "--out", str(out), "--quiet",
                           *flags)
    return code, err


def trial_path(out: Path) -> Path:
    (path,) = (out / "trials").glob("*.json")
    return path


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("membench: error: ") and "Traceback" not in err, err
    return lines[0]


def edit_csv(path: Path, edit) -> None:
    """Rewrite the CSV at `path` as `edit(df)` of its cells as text (as a user's editor would)."""
    edit(pd.read_csv(path, dtype=str, keep_default_na=False)).to_csv(path, index=False)


# --- trial files: what is bad -----------------------------------------------------------------------------
def damaged(payload: dict, damage: str) -> dict:
    """A deep copy of `payload` with one thing wrong."""
    payload = json.loads(json.dumps(payload))
    first = payload["runs"][0]
    if damage == "accuracy_5":
        first["accuracy"] = 5.0
    elif damage == "negative_count":
        payload["lags"][0]["count"] = -3
    elif damage == "missing_key":
        del payload["curves"][0]["tokens"]
    elif damage == "row_of_another_trial":
        payload["slice_curves"][-1]["trial_id"] = "0123456789ab"
    elif damage == "text_for_a_number":
        first["steps"] = "many"
    elif damage == "bool_for_a_number":
        first["params"] = True
    elif damage == "number_for_text":
        first["model"] = 7
    elif damage == "not_yes_or_no":
        first["is_train_len"] = "maybe"
    elif damage == "fraction_of_an_integer":
        payload["curves"][0]["step"] = 2.5
    return payload


DAMAGES = {  # damage -> what the note says
    "accuracy_5": "runs row 1 column accuracy: 5.0 is outside [0, 1]",
    "negative_count": "lags row 1 column count: -3 is negative",
    "missing_key": "curves row 1 lacks tokens",
    "row_of_another_trial": "names trial '0123456789ab'",
    "text_for_a_number": "runs row 1 column steps: 'many' is not a number",
    "bool_for_a_number": "runs row 1 column params: True is not a number",
    "number_for_text": "runs row 1 column model: 7 is not text",
    "not_yes_or_no": "runs row 1 column is_train_len: 'maybe' is not true or false",
    "fraction_of_an_integer": "curves row 1 column step: 2.5 is not an integer",
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_trial_problem_names_the_row_and_column(swept, damage):
    path = trial_path(swept)
    payload = json.loads(path.read_text())
    assert tables.trial_problem(payload, path.stem) == ""
    assert DAMAGES[damage] in tables.trial_problem(damaged(payload, damage), path.stem)


def test_trial_problem_checks_every_trial_of_a_batch_alone(swept):
    """read_trials checks the rows of all files together: one bad file must not taint the others."""
    path = trial_path(swept)
    good = json.loads(path.read_text())
    folder = path.parent
    for n in range(3):  # three copies under other ids, the middle one bad
        trial_id = f"{n:012d}"
        payload = json.loads(json.dumps(good).replace(path.stem, trial_id))
        (folder / f"{trial_id}.json").write_text(json.dumps(damaged(payload, "accuracy_5") if n == 1 else payload))
    try:
        notes = []
        found = tables.read_trials(swept, notes)
        assert sorted(found) == sorted([path.stem, "000000000000", "000000000002"])
        assert len(notes) == 1 and "000000000001.json is invalid (runs row 1 column accuracy" in notes[0]
    finally:
        for stray in folder.glob("0000000000*"):
            stray.unlink()


# --- trial files: set aside, noted, re-run ----------------------------------------------------------------
@pytest.mark.parametrize("damage", ["accuracy_5", "negative_count", "missing_key", "row_of_another_trial",
                                    "text_for_a_number"])
def test_bad_trial_file_is_set_aside_noted_and_rerun(out, capsys, damage):
    path = trial_path(out)
    bad_text = json.dumps(damaged(json.loads(path.read_text()), damage))
    path.write_text(bad_text)
    code, err = run(capsys, out)
    assert code == 0, err
    assert f"note: trial file {path} is " in err and DAMAGES[damage] in err  # named, and what is wrong
    assert f"set aside as {path.name}.bad-1" in err and "re-run" in err
    assert (path.parent / f"{path.name}.bad-1").read_text() == bad_text  # kept as it was, never deleted
    assert tables.trial_problem(json.loads(path.read_text()), path.stem) == ""  # the trial ran again
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 2 and runs["accuracy"].between(0, 1).all()
    code, _, err = run_cli(capsys, "charts", str(out))  # the directory is usable, not refused
    assert code == 0, err
    code, err = run(capsys, out)  # nothing left to note
    assert code == 0 and "note:" not in err, err


def test_set_aside_never_overwrites_an_earlier_bad_file(tmp_path):
    path = tmp_path / "ab12.json"
    for n, text in enumerate(["first", "second", "third"], start=1):
        path.write_text(text)
        assert tables.set_aside(path) == tmp_path / f"ab12.json.bad-{n}"
    assert [(tmp_path / f"ab12.json.bad-{n}").read_text() for n in (1, 2, 3)] == ["first", "second", "third"]
    assert tables.set_aside_trials(tmp_path.parent / "none") == set()


def test_an_incomplete_trial_file_is_set_aside_not_overwritten(out, capsys):
    path = trial_path(out)
    payload = json.loads(path.read_text())
    text = json.dumps({**payload, "runs": payload["runs"][:1]})
    path.write_text(text)
    code, err = run(capsys, out)
    assert code == 0 and "is incomplete (no runs row for slice(s) L16)" in err, err
    assert (path.parent / f"{path.name}.bad-1").read_text() == text
    assert len(json.loads(path.read_text())["runs"]) == 2


# --- runs.csv: a bad row, a missing column --------------------------------------------------------------
def test_bad_row_of_a_trial_with_a_file_is_simply_rebuilt(out, capsys):
    edit_csv(out / "runs.csv", lambda df: df.assign(accuracy="5.0"))
    code, _, err = run_cli(capsys, "charts", str(out))
    line = one_line_error(code, err)
    assert "runs.csv row 2 column accuracy: 5.0 is outside [0, 1]" in line
    assert f"run the sweep again (it rebuilds the row from trials/{trial_path(out).name})" in line  # the fix:
    before = trial_path(out).read_bytes()
    code, err = run(capsys, out)
    assert code == 0, err
    assert trial_path(out).read_bytes() == before  # nothing re-ran: the trial file was valid
    assert pd.read_csv(out / "runs.csv")["accuracy"].between(0, 1).all()
    assert run_cli(capsys, "charts", str(out))[0] == 0


def test_bad_row_of_a_trial_without_a_file_names_a_fix_that_works(out, capsys):
    path = trial_path(out)
    path.unlink()  # the table's rows are this trial's only record
    edit_csv(out / "runs.csv", lambda df: df.assign(accuracy=["0.5", "5.0"]))
    code, _, err = run_cli(capsys, "charts", str(out))
    assert one_line_error(code, err).endswith("5.0 is outside [0, 1]; fix or remove the row")  # no file: no rebuild
    code, err = run(capsys, out)
    line = one_line_error(code, err)
    assert f"{out / 'runs.csv'} row 3 column accuracy: 5.0 is outside [0, 1]" in line
    assert f"trial {path.stem} has no file in trials/" in line and "correct the cell or delete the row" in line
    assert not path.exists() and pd.read_csv(out / "runs.csv", dtype=str)["accuracy"].tolist() == ["0.5", "5.0"]
    edit_csv(out / "runs.csv", lambda df: df.drop(index=1))  # the fix: delete the row
    code, err = run(capsys, out)
    assert code == 0, err
    assert path.exists() and len(pd.read_csv(out / "runs.csv")) == 2  # its trial re-ran


def test_table_missing_a_column_is_rebuilt_when_every_row_has_a_file(out, capsys):
    edit_csv(out / "runs.csv", lambda df: df.drop(columns=["peak_memory_mb", "under_trained"]))
    code, err = run(capsys, out)
    assert code == 0, err
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs.columns) == RUNS_COLUMNS and runs["peak_memory_mb"].notna().all()


def test_table_missing_a_column_with_rows_of_no_file_is_refused_and_the_fix_works(out, capsys):
    path = trial_path(out)
    path.unlink()
    edit_csv(out / "runs.csv", lambda df: df.drop(columns=["peak_memory_mb"]))
    code, err = run(capsys, out, "--seeds", "1")  # another trial: this one's rows can only be kept
    line = one_line_error(code, err)
    assert f"{out / 'runs.csv'} lacks column(s) peak_memory_mb, and 2 of its rows (row 2 first)" in line
    assert "add the column(s) to runs.csv, empty where the values are unknown, or delete those rows" in line
    assert not list((out / "trials").glob("*.json"))  # refused before anything trained
    edit_csv(out / "runs.csv", lambda df: df.assign(peak_memory_mb=""))  # the fix
    code, err = run(capsys, out, "--seeds", "1")
    assert code == 0, err
    runs = pd.read_csv(out / "runs.csv")
    kept = runs[runs["trial_id"] == path.stem]
    assert len(runs) == 4 and len(kept) == 2 and kept["peak_memory_mb"].isna().all()  # kept, unknown


def test_rows_copied_from_a_set_aside_file_are_left_out_with_a_note(out):
    """The issue's loop: a bad trial file's values were copied into runs.csv; they go with the file."""
    path = trial_path(out)
    bad = damaged(json.loads(path.read_text()), "accuracy_5")
    tables.write_tables(out, tables.frames({path.stem: bad}))  # what a sweep without the checks wrote
    path.write_text(json.dumps(bad))
    notes = []
    assert tables.read_trials(out, notes) == {} and "set aside as" in notes[0]
    with pytest.raises(UsageError, match="row 2 column accuracy: 5.0 is outside"):
        tables.kept_rows(out, {})  # no notes to say it: an error, never a silent drop
    kept = tables.kept_rows(out, {}, notes)
    assert len(kept["runs"]) == 1 and kept["runs"]["slice"].tolist() == ["L16"]  # its valid row is kept
    assert "runs.csv holds 1 invalid row(s) of trials whose file was set aside" in notes[1]
    assert "row 2 column accuracy: 5.0 is outside [0, 1]" in notes[1] and "left out" in notes[1]
    assert len(kept["lags"]) == len(bad["lags"])  # the other tables' valid rows too


# --- a user's own columns ---------------------------------------------------------------------------------
def test_users_own_columns_are_kept_through_a_rebuild(out, capsys):
    first = trial_path(out).stem
    edit_csv(out / "runs.csv", lambda df: df.assign(note=["looks off", "007"], tag="x"))
    edit_csv(out / "lags.csv", lambda df: df.assign(checked="yes"))
    code, err = run(capsys, out, "--seeds", "1")  # another trial: the tables are rebuilt with its rows
    assert code == 0, err
    runs = pd.read_csv(out / "runs.csv", dtype=str, keep_default_na=False)
    assert list(runs.columns) == [*RUNS_COLUMNS, "note", "tag"]
    mine = runs[runs["trial_id"] == first].set_index("slice")
    assert mine.loc["L8", "note"] == "looks off" and mine.loc["L16", "note"] == "007"  # as written: not 7
    assert (mine["tag"] == "x").all()
    assert (runs.loc[runs["trial_id"] != first, ["note", "tag"]] == "").all().all()  # the new trial's: empty
    lags = pd.read_csv(out / "lags.csv", dtype=str, keep_default_na=False)
    assert (lags.loc[lags["trial_id"] == first, "checked"] == "yes").all()
    assert (lags.loc[lags["trial_id"] != first, "checked"] == "").all()
    assert run_cli(capsys, "charts", str(out))[0] == 0  # the reports ignore them


def test_users_own_columns_follow_kept_rows_and_rerun_trials(out, capsys):
    path = trial_path(out)
    edit_csv(out / "runs.csv", lambda df: df.assign(note=["a", "b"], status="error", error="RuntimeError: x"))
    path.unlink()  # kept rows first, then replaced by the trial's new run (rows of an error: --retry-failed)
    code, err = run(capsys, out, "--retry-failed")
    assert code == 0, err
    runs = pd.read_csv(out / "runs.csv", dtype=str, keep_default_na=False).set_index("slice")
    assert path.exists() and runs.loc["L8", "note"] == "a" and runs.loc["L16", "note"] == "b"


def test_user_columns_are_matched_by_row_key_numbers_as_text(tmp_path):
    path = tmp_path / "lags.csv"
    path.write_text("trial_id,eval_len,lag_bucket,mine\nab12,16,4,x\nab12,16.0,8,y\n")
    new = pd.DataFrame({"trial_id": ["ab12", "ab12", "cd34", "ab12"], "eval_len": [16, 16, 16, 16],
                        "lag_unit": ["symbols", "symbols", "symbols", "tokens"], "lag_bucket": [8, 4, 4, 4]})
    # the old file predates lag_unit: its rows were in symbols, so the row in tokens gets no cell of theirs
    assert (tables.with_user_columns(new, "lags", path)["mine"].fillna("(empty)").tolist()
            == ["y", "x", "(empty)", "(empty)"])
    assert list(tables.with_user_columns(new, "cost", path).columns) == list(new.columns)  # no row key: as given


def test_docstring_examples_of_tables_and_schema_run():
    results = [doctest.testmod(module) for module in (tables, schema)]
    assert [r.failed for r in results] == [0, 0] and min(r.attempted for r in results) >= 3
