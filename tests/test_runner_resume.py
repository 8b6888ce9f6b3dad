"""Kill -9 in the middle of a sweep, then resume: every trial once, tables complete and parseable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd

from membench.runners.spec import load_spec
from membench.runners.sweep import run_sweep
from tests.helpers import tiny_spec


def resume_spec(tmp_path) -> str:
    return tiny_spec(tmp_path, {"copy": {"params": {"content_vocab": 4}}}, models=["mlp"], seeds=[0, 1, 2, 3, 4, 5],
                     steps=30, eval_every=20)


def test_kill_and_resume(tmp_path):
    spec_file, out = resume_spec(tmp_path), tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "membench.runners", "run", "--spec", spec_file, "--out", str(out),
                             "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trials_dir = out / "trials"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if trials_dir.is_dir() and len(list(trials_dir.glob("*.json"))) >= 2:
                break
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in trials_dir.glob("*.json")}
    assert 2 <= len(done_before) < 6, "the sweep was not killed mid-way"
    if (out / "runs.csv").exists():  # whatever the kill interrupted, the table is whole
        partial = pd.read_csv(out / "runs.csv")
        assert not partial.duplicated(["trial_id", "slice"]).any()

    spec = load_spec(None, str(spec_file), {})
    runs = run_sweep(spec, out, progress=False)
    assert runs["trial_id"].nunique() == 6 and len(runs) == 12
    table = pd.read_csv(out / "runs.csv")
    assert len(table) == 12 and not table.duplicated(["trial_id", "slice"]).any()
    assert set(table["trial_id"]) == {t.trial_id for t in spec.trials}
    assert (table["status"] == "ok").all()
    for name in ("lags", "curves"):
        assert pd.read_csv(out / f"{name}.csv")["trial_id"].nunique() == 6
    after = {p.name: p.stat().st_mtime_ns for p in trials_dir.glob("*.json")}
    assert len(after) == 6 and all(after[name] == stamp for name, stamp in done_before.items())
    assert not list(out.rglob(".tmp-*"))
