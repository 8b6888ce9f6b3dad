"""Logs fit for files: a sweep whose output goes to a file or a pipe prints a line per finished trial, not a
redrawn bar; `--quiet` prints only the summary; on a terminal the bar stays."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from membench.runners.progress import SweepProgress
from tests.helpers import run_cli, tiny_spec, undo_plugin_side_effects  # noqa: F401 (autouse)

ROOT = Path(__file__).resolve().parent.parent
FOUR_TRIALS = {"models": ["mlp"], "seeds": [0, 1, 2, 3], "steps": 4, "eval_every": 4, "log_every": 2}


def test_a_four_trial_run_into_a_file_logs_a_line_per_trial_in_under_8_kb(tmp_path):
    spec = tiny_spec(tmp_path, {"copy": {"params": {"content_vocab": 4}}}, **FOUR_TRIALS)
    log = tmp_path / "log.txt"
    with log.open("w") as file:  # stdout and stderr both to the file, as `membench run ... > log 2>&1`
        done = subprocess.run([sys.executable, "-m", "membench.runners", "run", "--spec", spec, "--out",
                               str(tmp_path / "out")], cwd=ROOT, stdout=file, stderr=subprocess.STDOUT, timeout=300)
    text = log.read_text()
    assert done.returncode == 0, text
    assert len(text.encode()) < 8 * 1024 and "\r" not in text and "\x1b[" not in text
    progress = [line for line in text.splitlines() if line.startswith("spec: ")]
    assert progress[0] == "spec: 4 trials, 0 finished before, 4 to run"
    assert [line.split(",")[0] for line in progress[1:]] == [f"spec: {n}/4 trials" for n in (1, 2, 3, 4)]
    assert all(line.endswith(": ok") and "copy mlp L8 seed" in line for line in progress[1:])
    assert "4 trials: 4 ok" in text


def test_quiet_prints_only_the_summary(tmp_path, capsys):
    spec = tiny_spec(tmp_path, {"copy": {"params": {"content_vocab": 4}}}, **{**FOUR_TRIALS, "seeds": [0, 1]})
    code, stdout, err = run_cli(capsys, "run", "--spec", spec, "--out", str(tmp_path / "out"), "--quiet")
    assert code == 0 and err == ""
    assert stdout.splitlines()[0].split() == ["task", "model", "train_len", "d_model", "params", "steps", "L8", "L16"]
    assert "2 trials: 2 ok" in stdout and "trials," not in stdout


def test_a_resumed_sweep_says_what_finished_before(tmp_path, capsys):
    spec = tiny_spec(tmp_path, {"copy": {"params": {"content_vocab": 4}}}, **{**FOUR_TRIALS, "seeds": [0]})
    out = str(tmp_path / "out")
    assert run_cli(capsys, "run", "--spec", spec, "--out", out)[0] == 0
    code, _, err = run_cli(capsys, "run", "--spec", spec, "--out", out)
    assert code == 0 and err.splitlines() == ["spec: 1 trial, 1 finished before, 0 to run"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_redrawn_bar_and_a_file_gets_lines():
    terminal, file = Terminal(), io.StringIO()
    for stream in (terminal, file):
        progress = SweepProgress("smoke", total=3, done=1, stream=stream)
        progress.trial_finished("copy lstm L16 seed0 lr0.003", "ok")
        progress.trial_finished("copy gru L16 seed0 lr0.003", "timeout")
        progress.close()
    assert "\r" in terminal.getvalue() and "3/3" in terminal.getvalue()
    lines = file.getvalue().splitlines()
    assert lines[0] == "smoke: 3 trials, 1 finished before, 2 to run"
    assert lines[1].startswith("smoke: 2/3 trials, 0:00:0") and lines[1].endswith(": copy lstm L16 seed0 lr0.003: ok")
    assert lines[2].startswith("smoke: 3/3 trials, ") and lines[2].endswith("copy gru L16 seed0 lr0.003: timeout")
    assert len(lines) == 3


def test_quiet_progress_writes_nothing():
    stream = Terminal()
    progress = SweepProgress("smoke", total=2, done=0, show=False, stream=stream)
    progress.trial_finished("copy lstm L16 seed0 lr0.003", "ok")
    progress.close()
    assert stream.getvalue() == "" and not progress.redrawn
