"""Signals to a multi-worker sweep (runners/executors.py, runners/cli.py): Ctrl-C and SIGTERM stop it within
seconds with one line, its workers with it; `kill -9` of it leaves no worker behind; a second run resumes.

Real processes: `membench run` of a 2-worker CPU sweep whose two copy trials end at once and whose one
flip_flop trial would run to its time cap. The signal comes once the copy trials' files are written: one
worker is inside the flip_flop trial, the other idle (or, for Ctrl-C, also while the workers start).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LONG_CAP = 20.0  # seconds: the time cap of the trial that is interrupted (far above GONE_WITHIN; the resumed
#                   run waits for it)
GONE_WITHIN = 5.0  # seconds from the signal until no process of the sweep is left

SPEC = f"""
models = ["mlp"]
lengths = [8]
seeds = [0, 1]
d_model = 16
n_layers = 1
steps = 4
batch_size = 4
eval_every = 4
eval_multipliers = []
eval_sequences = 8
cpu_workers = 2
cpu_threads = 1

[tasks.copy]
params = {{ content_vocab = 4 }}

[tasks.long]
task = "flip_flop"
seeds = [0]
steps = 100000000
eval_every = 100000000
time_cap = {LONG_CAP}
"""

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")]


def _ppid(pid: int) -> int | None:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """Every living process below `pid` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            children.setdefault(_ppid(int(entry.name)), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie, waiting for a parent that does not reap it, is not)."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def start(out: Path, spec: Path) -> subprocess.Popen:
    """`membench run` in its own session (as a terminal's foreground job: one process group)."""
    (spec).write_text(SPEC)
    return subprocess.Popen([sys.executable, "-m", "membench.runners", "run", "--spec", str(spec), "--out", str(out),
                             "--quiet"], cwd=ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_long_trial(proc: subprocess.Popen, out: Path) -> list[int]:
    """Wait until the two copy trials are written (a worker then runs the flip_flop trial, the other idles);
    the sweep's processes."""
    deadline = time.monotonic() + 240
    while len(list((out / "trials").glob("*.json"))) < 2:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the copy trials did not finish"
        time.sleep(0.05)
    tree = descendants(proc.pid)
    assert len(tree) >= 2, tree  # the two workers (and multiprocessing's resource tracker)
    return tree


def wait_for_workers(proc: subprocess.Popen, out: Path) -> list[int]:
    """Wait until the sweep has started its two workers (they are then importing torch)."""
    deadline = time.monotonic() + 240
    while len(tree := descendants(proc.pid)) < 3:  # the resource tracker and the two workers
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.01)
    return tree


def gone_after(pids: list[int], since: float) -> float:
    """Seconds from `since` until none of `pids` runs (fails after GONE_WITHIN)."""
    while any(alive(p) for p in pids):
        assert time.monotonic() - since < GONE_WITHIN, f"still running: {[p for p in pids if alive(p)]}"
        time.sleep(0.05)
    return time.monotonic() - since


def statuses(out: Path) -> dict[str, str]:
    """Task -> the statuses of its trial files."""
    found: dict[str, list[str]] = {}
    for path in (out / "trials").glob("*.json"):
        payload = json.loads(path.read_text())
        found.setdefault(payload["config"]["task"], []).extend(r["status"] for r in payload["runs"])
    return {task: sorted(set(s)) for task, s in found.items()}


@pytest.mark.parametrize("wait, finished", [(wait_for_long_trial, {"copy": ["ok"]}), (wait_for_workers, {})],
                         ids=["trials-running", "workers-starting"])
def test_ctrl_c_stops_the_sweep_and_its_workers_with_one_line_and_the_next_run_resumes(tmp_path, wait, finished):
    out, spec = tmp_path / "out", tmp_path / "spec.toml"
    proc = start(out, spec)
    tree = wait(proc, out)
    signalled = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground process group
    _, err = proc.communicate(timeout=GONE_WITHIN * 4)
    gone_after([proc.pid, *tree], signalled)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["membench: interrupted"]  # no worker's traceback
    assert statuses(out) == finished  # the interrupted trials left no file
    proc = start(out, spec)  # resumes: the flip_flop trials run again, to their time cap
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert statuses(out) == {"copy": ["ok"], "flip_flop": ["timeout"]}


@pytest.mark.parametrize("signum, code, words",
                         [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_a_signal_to_the_sweep_alone_stops_its_workers_at_once(tmp_path, signum, code, words):
    out = tmp_path / "out"
    proc = start(out, tmp_path / "spec.toml")
    tree = wait_for_long_trial(proc, out)
    signalled = time.monotonic()
    proc.send_signal(signum)  # `kill PID`: the workers get nothing from outside, and the trial is not waited for
    proc.wait(timeout=GONE_WITHIN * 4)
    gone_after([proc.pid, *tree], signalled)
    assert proc.returncode == code
    assert proc.stderr.read().strip().splitlines() == [f"membench: {words}"]


def test_kill_9_of_the_sweep_leaves_no_worker(tmp_path):
    out = tmp_path / "out"
    proc = start(out, tmp_path / "spec.toml")
    tree = wait_for_long_trial(proc, out)
    killed = time.monotonic()
    proc.kill()
    proc.wait(timeout=GONE_WITHIN)  # (not its stderr: a worker left alive would hold it open)
    gone_after(tree, killed)  # each worker ends with its parent (PR_SET_PDEATHSIG, or its watch on the ppid)
