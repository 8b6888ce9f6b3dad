"""Never lose a result (issue 12, items 1-5 and 8): each reproduction of the issue, now kept or refused.

Sweeps here are tiny (mlp/lstm at length 8, a few steps): what is tested is what happens to the files.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from membench.runners import sweep, tables
from membench.runners.lock import LOCK_NAME, DirectoryLock
from membench.runners.spec import load_spec
from membench.runners.sweep import run_sweep
from tests.helpers import MICRO_COPY, MICRO_SETTINGS, run_cli, tiny_spec

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "results" / "smoke-cpu"
SPEC = MICRO_SETTINGS + MICRO_COPY


@pytest.fixture
def spec_file(tmp_path) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(SPEC)
    return path


def run(capsys, spec_file: Path, out, *flags) -> tuple[int, str, str]:
    return run_cli(capsys, "run", "--spec", str(spec_file), "--out", str(out), "--quiet", *flags)


def one_line_error(code: int, err: str) -> str:
    """The error line of a refused command: exit 2, one line `membench: error: ...` (or argparse's)."""
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, err
    return lines[0]


# --- 1. a directory of tables without trials/ is never wiped, and resumes from its rows -------------------
def test_tables_without_trial_files_keep_every_row(tmp_path, capsys):
    out = tmp_path / "smoke"
    shutil.copytree(SMOKE, out)
    before = {name: pd.read_csv(out / f"{name}.csv") for name in ("runs", "curves", "lags")}
    assert not (out / "trials").exists() and len(before["runs"]) > 100
    sweep = ("run", "--preset", "smoke", "--tasks", "copy", "--models", "lstm,mlp", "--lengths", "8",
             "--out", str(out), "--quiet")
    code, _, err = run_cli(capsys, *sweep, "--seeds", "0")  # trials the committed tables hold
    assert code == 0, err
    assert "they are kept; 2 trial(s) of this sweep have a row per eval slice: finished" in err
    assert not list((out / "trials").glob("*.json"))  # resumed from the rows: nothing re-ran
    code, _, err = run_cli(capsys, *sweep, "--seeds", "7")  # trials the tables lack
    assert code == 0, err
    assert "they are kept" in err  # the user is told the rows are kept
    new_ids = {p.stem for p in (out / "trials").glob("*.json")}
    assert len(new_ids) == 2 and not new_ids & set(before["runs"]["trial_id"])
    for name, old in before.items():
        after = pd.read_csv(out / f"{name}.csv")
        assert len(after) == len(old) + (after["trial_id"].isin(new_ids)).sum()
        assert set(old["trial_id"]) <= set(after["trial_id"])  # no trial of the copy was dropped
    runs = pd.read_csv(out / "runs.csv")
    assert not runs.duplicated(["trial_id", "slice"]).any()
    merged = runs.merge(before["runs"], on=["trial_id", "slice"], suffixes=("", "_old"))
    assert len(merged) == len(before["runs"])
    assert (merged["accuracy"].fillna(-1) == merged["accuracy_old"].fillna(-1)).all()  # values kept as they were
    # and the charts still read the merged tables
    code, _, err = run_cli(capsys, "charts", str(out))
    assert code == 0, err


def test_a_trial_with_rows_but_no_file_is_finished_unless_a_slice_is_missing(tmp_path, spec_file):
    out = tmp_path / "out"
    spec = load_spec(None, str(spec_file))
    first = run_sweep(spec, out, progress=False)
    trial_id = spec.trials[0].trial_id
    (out / "trials" / f"{trial_id}.json").unlink()  # as in a clone: the tables hold its rows, trials/ does not
    again = run_sweep(spec, out, progress=False)
    assert not (out / "trials" / f"{trial_id}.json").exists()  # not re-run
    columns = ["trial_id", "slice", "status", "accuracy", "steps"]  # and the sweep still returns its rows
    assert again[columns].values.tolist() == first[columns].values.tolist()
    runs = pd.read_csv(out / "runs.csv")
    runs.iloc[1:].to_csv(out / "runs.csv", index=False)  # one eval slice's row gone: not finished any more
    run_sweep(spec, out, progress=False)
    assert (out / "trials" / f"{trial_id}.json").is_file()  # re-run, and its new rows replace the old ones
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 2 and set(runs["trial_id"]) == {trial_id}


def test_rows_of_an_errored_trial_without_a_file_run_again_with_retry_failed(tmp_path, spec_file):
    out = tmp_path / "out"
    spec = load_spec(None, str(spec_file))
    run_sweep(spec, out, progress=False)
    trial_id = spec.trials[0].trial_id
    (out / "trials" / f"{trial_id}.json").unlink()
    runs = pd.read_csv(out / "runs.csv")
    runs["status"], runs["error"] = "error", "RuntimeError: boom"
    runs.to_csv(out / "runs.csv", index=False)
    run_sweep(spec, out, progress=False)
    assert not (out / "trials" / f"{trial_id}.json").exists()  # an error row is a result: kept, not re-run
    run_sweep(spec, out, progress=False, retry_failed=True)
    assert (out / "trials" / f"{trial_id}.json").is_file()
    assert set(pd.read_csv(out / "runs.csv")["status"]) != {"error"}


def test_rows_of_a_damaged_trial_file_of_another_sweep_are_kept(tmp_path, spec_file, capsys):
    out = tmp_path / "out"
    assert run(capsys, spec_file, out)[0] == 0
    path = next((out / "trials").glob("*.json"))
    path.write_text(json.dumps({"trial_id": path.stem}))  # its rows are still in the tables
    code, _, err = run(capsys, spec_file, out, "--seeds", "1")  # another sweep into the same directory
    assert code == 0, err
    assert "its rows in the tables are kept" in err
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 4 and path.stem in set(runs["trial_id"])


# --- 2. one writer per directory ---------------------------------------------------------------------------
HOLD = """
import sys, time
from membench.runners.lock import DirectoryLock
with DirectoryLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_second_writer_is_refused_while_the_first_holds_the_directory(tmp_path, spec_file, capsys):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = run(capsys, spec_file, out)
        line = one_line_error(code, err)
        assert f"{out} is being written by PID {holder.pid} (started " in line
        assert not list((out / "trials").glob("*.json"))  # nothing trained
    finally:
        holder.kill()
        holder.wait()
    code, _, err = run(capsys, spec_file, out)  # the holder died: its lock is taken over
    assert code == 0, err


def test_stale_lock_file_of_a_dead_process_is_taken_over(tmp_path, spec_file, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text("999999999 2020-01-01 00:00:00 UTC\n")
    code, _, err = run(capsys, spec_file, out)
    assert code == 0, err
    assert (out / LOCK_NAME).read_text().split()[0] == str(os.getpid())


def test_only_own_and_dead_processes_temporaries_are_removed(tmp_path):
    out = tmp_path / "out"
    (out / "trials").mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = out / "trials" / f".tmp-{sleeper.pid}-abc.json.x1"  # another writer's file in flight
        mine = out / f".tmp-{os.getpid()}-runs.csv.x2"
        dead = out / ".tmp-999999999-runs.csv.x3"
        for path in (live, mine, dead):
            path.write_text("partial")
        tables.remove_temporaries(out)
        assert live.exists() and not mine.exists() and not dead.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_temporary_files_carry_the_writers_pid(tmp_path, monkeypatch):
    seen = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (seen.append(Path(a).name), real(a, b)))
    tables.atomic_write_bytes(tmp_path / "x.csv", b"a\n")
    assert seen and seen[0].startswith(f".tmp-{os.getpid()}-x.csv.")


def test_lock_is_released_when_the_sweep_ends(tmp_path, spec_file):
    out = tmp_path / "out"
    run_sweep(load_spec(None, str(spec_file)), out, progress=False)
    with DirectoryLock(out):  # the sweep let go of it
        pass


# --- 3. a trial file counts as finished only with all its rows ---------------------------------------------
@pytest.mark.parametrize("damage", ["no_rows", "empty_runs", "one_slice", "list", "null", "garbage"])
def test_incomplete_trial_file_is_rerun_with_a_note(tmp_path, spec_file, capsys, damage):
    out = tmp_path / "out"
    code, _, err = run(capsys, spec_file, out)
    assert code == 0, err
    path = next((out / "trials").glob("*.json"))
    payload = json.loads(path.read_text())
    text = {"no_rows": json.dumps({"trial_id": path.stem}),
            "empty_runs": json.dumps({**payload, "runs": []}),
            "one_slice": json.dumps({**payload, "runs": payload["runs"][:1]}),
            "list": "[]", "null": "null", "garbage": "\x00\x01 not json"}[damage]
    path.write_text(text)
    code, _, err = run(capsys, spec_file, out)
    assert code == 0, err
    assert "note: trial file" in err and "re-run" in err
    assert json.loads(path.read_text())["runs"] and len(json.loads(path.read_text())["runs"]) == 2
    assert len(pd.read_csv(out / "runs.csv")) == 2
    code, _, err = run(capsys, spec_file, out)  # repaired: nothing more to do, no note
    assert code == 0 and "note: trial file" not in err


def test_non_object_trial_file_does_not_crash_the_leaderboard(tmp_path, spec_file, capsys):
    out = tmp_path / "out"
    run(capsys, spec_file, out)
    (out / "trials" / "0123456789ab.json").write_text("[]")  # valid JSON, not an object, not of this spec
    code, _, err = run_cli(capsys, "leaderboard", "--spec", str(spec_file), "--out", str(out), "--quiet")
    assert code == 0, err
    assert "holds a JSON list" in err


def test_missing_rows_names_what_is_lacking():
    assert tables.missing_rows({"trial_id": "x", "runs": []}, ["L8"]) == "no lags rows list"
    full = {"runs": [{"slice": "L8", "status": "ok"}], "lags": [], "curves": [], "slice_curves": []}
    assert tables.missing_rows(full, ["L8"]) == ""
    assert tables.missing_rows(full, ["L8", "L16"]) == "no runs row for slice(s) L16"
    assert tables.missing_rows({**full, "runs": [{"slice": "L8", "status": "bogus"}]}, ["L8"]).startswith("no runs")


# --- 4. the tables are rebuilt often, not after every trial, and always before the sweep ends --------------
def rebuilds_counted(monkeypatch) -> list[int]:
    """Count the sweep's table rebuilds: each appends the number of trials whose runs rows it wrote."""
    counted, real = [], tables.write_tables
    monkeypatch.setattr(tables, "write_tables",
                        lambda out, frames: (counted.append(frames["runs"]["trial_id"].nunique()), real(out, frames)))
    return counted


@pytest.mark.parametrize("every, share, expected", [(3600.0, 0.05, [1, 4]), (0.0, 0.05, [1, 4]),
                                                     (0.0, 1e9, [1, 2, 3, 4])])
def test_tables_are_rebuilt_after_the_first_trial_when_due_and_at_the_end(tmp_path, monkeypatch, every, share,
                                                                          expected):
    """Due after TABLES_EVERY seconds and 1 / TABLES_COST_SHARE rebuild times (each of these trials takes less
    than 20 rebuilds)."""
    monkeypatch.setattr(sweep, "TABLES_EVERY", every)
    monkeypatch.setattr(sweep, "TABLES_COST_SHARE", share)
    counted = rebuilds_counted(monkeypatch)
    spec = load_spec(None, tiny_spec(tmp_path, {"copy": {"params": {"content_vocab": 4}}}, models=["mlp"],
                                     seeds=[0, 1, 2, 3], steps=2, eval_every=2))
    run_sweep(spec, tmp_path / "out", progress=False)
    assert counted == expected
    assert pd.read_csv(tmp_path / "out" / "runs.csv")["trial_id"].nunique() == 4


def test_an_interrupted_sweep_first_brings_its_tables_up_to_its_trial_files(tmp_path, monkeypatch):
    from membench.runners import executors

    real = executors.run_trial

    def interrupted_at_seed_2(config, *args, **kwargs):
        if config.seed == 2:
            raise KeyboardInterrupt
        return real(config, *args, **kwargs)

    monkeypatch.setattr(executors, "run_trial", interrupted_at_seed_2)
    counted = rebuilds_counted(monkeypatch)
    spec = load_spec(None, tiny_spec(tmp_path, {"copy": {"params": {"content_vocab": 4}}}, models=["mlp"],
                                     seeds=[0, 1, 2, 3], steps=2, eval_every=2))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path / "out", progress=False)
    assert counted == [1, 2]  # after the first trial (due), then on the interrupt (the second was not due)
    assert pd.read_csv(tmp_path / "out" / "runs.csv")["trial_id"].nunique() == 2


# --- 5. an empty --out ------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["run", "--preset", "smoke", "--out", ""],
    ["compare", "lstm", "mlp", "--task", "copy", "--out", ""],
    ["leaderboard", "--preset", "smoke", "--out", ""],
    ["cost", "--models", "mlp", "--out", ""],
    ["charts", ""],
])
def test_empty_out_is_refused_everywhere(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs.csv").write_text("precious\n")
    code, _, err = run_cli(capsys, *argv)
    assert "must not be empty" in one_line_error(code, err)
    assert (tmp_path / "runs.csv").read_text() == "precious\n" and sorted(os.listdir(tmp_path)) == ["runs.csv"]


def test_run_sweep_refuses_an_empty_out(spec_file):
    from membench.runners.errors import UsageError

    with pytest.raises(UsageError, match="--out is empty"):
        run_sweep(load_spec(None, str(spec_file)), "", progress=False)


# --- 8. an --out that cannot be written: one line, before any training --------------------------------------
def _file_out(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("x")
    return path


def _dangling(tmp_path):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    return link


def _trials_file(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "trials").write_text("x")
    return out


def _runs_dir(tmp_path):
    out = tmp_path / "out"
    (out / "runs.csv").mkdir(parents=True)
    return out


def _under_a_file(tmp_path):
    return _file_out(tmp_path) / "sub"


@pytest.mark.parametrize("make, words", [
    (_file_out, "is a file"), (_dangling, "symbolic link"), (_trials_file, "trials is a file"),
    (_runs_dir, "runs.csv is not a file"), (_under_a_file, "cannot create"),
])
def test_unusable_out_is_one_line(tmp_path, spec_file, capsys, make, words):
    out = make(tmp_path)
    code, _, err = run(capsys, spec_file, out)
    assert words in one_line_error(code, err)


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root writes anywhere")
def test_read_only_out_fails_before_training(tmp_path, spec_file, capsys, monkeypatch):
    out = tmp_path / "out"
    (out / "trials").mkdir(parents=True)
    out.chmod(0o555)
    trained = []
    import membench.runners.trial as trial

    monkeypatch.setattr(trial, "train", lambda *a, **k: trained.append(1))
    try:
        code, _, err = run(capsys, spec_file, out)
    finally:
        out.chmod(0o755)
    assert "cannot write in" in one_line_error(code, err)
    assert not trained


def test_unwritable_out_fails_before_training_even_as_root(tmp_path, spec_file, capsys, monkeypatch):
    import errno

    import membench.runners.lock as lock
    import membench.runners.trial as trial

    class ReadOnly:  # the os module, but creating the lock file fails as in a read-only directory
        def __getattr__(self, name):
            return getattr(os, name)

        def open(self, path, *args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    trained = []
    monkeypatch.setattr(lock, "os", ReadOnly())
    monkeypatch.setattr(trial, "train", lambda *a, **k: trained.append(1))
    code, _, err = run(capsys, spec_file, tmp_path / "out")
    assert "cannot write in" in one_line_error(code, err) and "Permission denied" in err
    assert not trained


def test_full_disk_while_writing_is_one_line(tmp_path, spec_file, capsys, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "out" / "trials" / "x.json"))

    monkeypatch.setattr(tables, "write_trial", full)
    code, _, err = run(capsys, spec_file, tmp_path / "out")
    line = one_line_error(code, err)
    assert "No space left on device" in line and "re-running resumes" in line


# --- 8. hand-edited tables: the file, row and column named ------------------------------------------------
@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("swept") / "out"
    spec_file = out.parent / "spec.toml"
    spec_file.write_text(SPEC)
    run_sweep(load_spec(None, str(spec_file)), out, progress=False)
    return out


@pytest.mark.parametrize("table, column, value, words", [
    ("runs", "accuracy", "abc", "is not a number"),
    ("runs", "accuracy", "1.5", "outside [0, 1]"),
    ("runs", "status", "", "is empty"),
    ("runs", "status", "fine", "is not a status"),
    ("runs", "eval_len", "8.5", "is not an integer"),
    ("runs", "flops_per_step", "lots", "is not a number"),
    ("lags", "accuracy", "high", "is not a number"),
    ("curves", "step", "x", "is not a number"),
])
def test_hand_edited_table_is_named_by_file_row_and_column(tmp_path, swept, capsys, table, column, value, words):
    out = tmp_path / "out"
    shutil.copytree(swept, out)
    df = pd.read_csv(out / f"{table}.csv", dtype=str, keep_default_na=False)
    row = min(1, len(df) - 1)
    df.loc[row, column] = value
    df.to_csv(out / f"{table}.csv", index=False)
    code, _, err = run_cli(capsys, "charts", str(out))
    line = one_line_error(code, err)
    assert f"{table}.csv row {row + 2} column {column}" in line and words in line


def test_short_row_is_named(tmp_path, swept, capsys):
    out = tmp_path / "out"
    shutil.copytree(swept, out)
    with open(out / "runs.csv", newline="") as f:
        rows = list(csv.reader(f))
    rows[2] = rows[2][:5]  # a row cut short after its model column
    with open(out / "runs.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    code, _, err = run_cli(capsys, "charts", str(out))
    assert "runs.csv row 3 column" in one_line_error(code, err)


def test_binary_table_is_named(tmp_path, swept, capsys):
    out = tmp_path / "out"
    shutil.copytree(swept, out)
    (out / "runs.csv").write_bytes(b"\xff\xfe\x00binary\x00\x81")
    code, _, err = run_cli(capsys, "charts", str(out))
    assert "runs.csv is not a readable CSV" in one_line_error(code, err)


def test_unreadable_table_is_never_overwritten_by_a_sweep(tmp_path, swept, capsys, spec_file):
    out = tmp_path / "out"
    shutil.copytree(swept, out)
    (out / "runs.csv").write_bytes(b"\xff\xfe\x00binary\x00\x81")
    shutil.rmtree(out / "trials")
    code, _, err = run(capsys, spec_file, out)
    assert "runs.csv is not a readable CSV" in one_line_error(code, err)
    assert (out / "runs.csv").read_bytes() == b"\xff\xfe\x00binary\x00\x81"


# --- Ctrl-C and SIGTERM ------------------------------------------------------------------------------------
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see torch being imported")
@pytest.mark.parametrize("signum, words, code", [(signal.SIGINT, "interrupted", 130),
                                                  (signal.SIGTERM, "terminated", 143)])
def test_signal_during_start_up_prints_one_line(tmp_path, signum, words, code):
    proc = subprocess.Popen([sys.executable, "-m", "membench.runners", "run", "--preset", "smoke", "--quiet",
                             "--out", str(tmp_path / "out")], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    maps, deadline = Path(f"/proc/{proc.pid}/maps"), time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and "libtorch" not in maps.read_text():
        time.sleep(0.005)  # wait until torch is being imported: the CLI is starting up
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.strip().splitlines() == [f"membench: {words}"]
