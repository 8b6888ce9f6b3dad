"""`membench doctor` on the CPU: it runs and exits 0, a failing check is a FAIL row with its reason and exit 1,
the CUDA rows skip with their reason. (CI runs the doctor through these tests.)"""

from __future__ import annotations

import csv

import pytest
import torch

from membench.models.families import recurrent
from membench.runners import doctor
from membench.runners.doctor import Check, run_checks, training, trials
from tests.helpers import run_cli

CPU = torch.device("cpu")
CUDA_ROWS = [e.name for e in doctor.CHECKS if e.needs == "cuda"]


def only(monkeypatch, *names, extra=()):
    """Let the command run only the named checks (and `extra` entries), to keep a test short."""
    monkeypatch.setattr(doctor, "CHECKS", [e for e in doctor.CHECKS if e.name in names] + list(extra))


@pytest.mark.slow
def test_the_quick_doctor_passes_on_the_cpu_and_writes_its_report(tmp_path, capsys):
    code, out, err = run_cli(capsys, "doctor", "--device", "cpu", "--quick", "--out", str(tmp_path))
    assert code == 0, out + err
    assert "0 FAIL" in out
    for name in ("paths lstm", "paths transformer", "oom", "mini-sweep", "rnn autocast", "fused AdamW"):
        assert any(line.startswith(name + " ") and " pass " in line for line in out.splitlines()), name
    with open(tmp_path / "doctor.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["device"] for r in rows} == {doctor.describe(CPU)}
    assert all(r["date"] and r["commit"] and r["torch_version"] == torch.__version__ for r in rows)
    skipped = {r["check"]: r["detail"] for r in rows if r["status"] == "skipped"}
    assert all(skipped[name] == "needs CUDA" for name in CUDA_ROWS)
    assert skipped["compile"] == "not in --quick"
    report = (tmp_path / "doctor.md").read_text()
    assert "| paths lstm | pass |" in report and f"- torch_version: {torch.__version__}" in report


def test_a_wrong_reference_path_fails_its_rows_and_the_exit_code(monkeypatch, capsys):
    only(monkeypatch, "torch", "paths")
    monkeypatch.setattr(recurrent, "recurrent_reference", lambda kind, rnn, x: torch.zeros_like(x))
    code, out, err = run_cli(capsys, "doctor", "--device", "cpu")
    assert code == 1
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("paths ")}
    for name in ("rnn", "lstm", "gru"):
        assert " FAIL " in lines[name] and "outside tolerance; fp32 out" in lines[name]
    assert " pass " in lines["transformer"] and " pass " in lines["ssm"]
    assert "checks FAILed: paths rnn, paths lstm, paths gru" in err


def test_a_check_that_raises_is_a_fail_row_with_the_error(monkeypatch, capsys):
    def broken(device):
        raise RuntimeError("kernel exploded")
        yield  # a generator, like every check

    only(monkeypatch, "torch", extra=[doctor._Entry("broken", broken, "", True)])
    code, out, _ = run_cli(capsys, "doctor", "--device", "cpu", "--quick")
    assert code == 1
    assert doctor.format_row(Check("broken", "FAIL", "RuntimeError: kernel exploded")) in out


def test_cuda_rows_skip_with_their_reason_on_the_cpu():
    rows = run_checks(CPU, only=[*CUDA_ROWS, "worker per GPU"])
    assert [(r.name, r.status, r.detail) for r in rows] == [
        *[(name, "skipped", "needs CUDA") for name in CUDA_ROWS],
        ("worker per GPU", "skipped", f"needs 2+ CUDA devices (this machine has {torch.cuda.device_count()})")]
    assert {"nonzero_static", "capture", "trials in one process", "captured oom", "sdpa backend"} <= set(CUDA_ROWS)


def test_the_capture_rows_skip_the_families_auto_never_captures(monkeypatch):
    """compile = "auto" runs the loops over tokens and cuDNN's RNNs eagerly, so capturing them is no check:
    their rows are skipped with the reason, and only the others are captured."""
    captured = []
    monkeypatch.setattr(training, "list_models", lambda: ["lstm", "mlp"])
    monkeypatch.setattr(training, "_train_losses", lambda name, *a, **k: (captured.append(name), ([1.0, 0.9], 0.1))[1])
    monkeypatch.setattr(training, "_dynamo_counts", lambda: (0, 0))
    rows = list(training.check_capture(CPU))
    assert [(r.name, r.status) for r in rows] == [("capture lstm T=1024", "skipped"), ("capture mlp T=1024", "pass"),
                                                  ("capture lstm T=4096", "skipped"), ("capture mlp T=4096", "pass")]
    assert captured == ["mlp", "mlp"] and "runs it eagerly" in rows[0].detail


def test_an_allocation_that_cannot_fit_is_an_oom_row_and_the_sweep_goes_on():
    (row,) = run_checks(CPU, only=["oom"])
    assert row.status == "pass" and "oom then ok" in row.detail and "allocate memory" in row.detail


def test_the_rnn_row_sees_float32_under_autocast():
    (row,) = run_checks(CPU, only=["rnn autocast"])
    assert row.status == "pass" and "sees float32 (autocast off)" in row.detail


def test_bad_flags_are_one_line_errors(capsys, tmp_path):
    code, _, err = run_cli(capsys, "doctor", "--out", "")
    assert code == 2 and "--out needs a directory" in err
    (tmp_path / "file").write_text("")
    code, _, err = run_cli(capsys, "doctor", "--out", str(tmp_path / "file"))
    assert code == 2 and "is a file; give a directory" in err
    if not torch.cuda.is_available():
        code, _, err = run_cli(capsys, "doctor", "--device", "cuda")
        assert code == 2 and "torch sees no CUDA device" in err and len(err.strip().splitlines()) == 1


def test_the_recompile_limit_warning_is_caught():
    """What the "trials in one process" row looks for: dynamo's warning when it gives up compiling."""
    step = torch.compile(lambda x: x * 2, backend="eager")
    torch.compiler.reset()
    with torch._dynamo.config.patch(recompile_limit=2), trials.recompile_limit_warnings() as hits:
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):  # a recompile each
            step(torch.ones(3, dtype=dtype))
    torch.compiler.reset()
    assert len(hits) == 1 and "recompile_limit (2)" in hits[0]
