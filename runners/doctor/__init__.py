"""`membench doctor`: a self-check of this install on one device, one row per check.

Every check returns `Check` rows (name, status, detail). Status is "pass", "FAIL" (the detail says why) or
"skipped" (the detail says why: "needs CUDA", "needs 2+ CUDA devices", "not in --quick"). A check that
raises becomes a FAIL row with the error, so one broken check never hides the others; `run_checks` runs
them all and the command exits 1 when any row FAILed.

    >>> rows = run_checks(torch.device("cpu"), only=["torch"])
    >>> [(r.name, r.status) for r in rows]
    [('torch', 'pass'), ('torch version', 'pass')]

The checks live in modules by kind: install.py (torch, precision), paths.py (paths, rnn autocast), training.py
(compile, fused AdamW, capture), kernels.py (task generation, attention, nonzero_static, sdpa backend) and
trials.py (oom, mini-sweep, trials in one process, captured oom, worker per GPU); rows.py holds the `Check` row
and report.py the header, the printed line and the report files. `CHECKS` below is the order of the report:
a new check is a generator fn(device) -> Check rows in the module of its kind, and one line in `CHECKS`.

What is checked (D = the device; the CPU shapes are smaller, and each row says which it used):

    torch, torch version      torch and the device; torch >= the version pyproject.toml requires
    precision                 the autocast dtype runners.precision picks for D, and whether cuda_graphs may run
    paths <family>            every registered family's fast path against its reference path on D (outputs and
                              gradients of 2 x 64 tokens): fp32 within 1e-4, bf16 autocast within 5e-2, relative
                              to the fp32 reference (||a - b|| / ||b||); families without a reference path
                              compare bf16 against their own fp32
    compile <mode>            the captured training step (runners.step_loss.loss_fn) of each compile mode D supports,
                              3 steps against eager: losses within 1e-4 (fp32) or 2e-2 (bf16)
    fused AdamW               3 steps of fused AdamW against the plain loop: parameters within 1e-5
    oom                       a trial whose batch cannot be allocated (2^40 sequences), then a normal one, through
                              the runner's executor: `oom` then `ok`
    rnn autocast              the dtype torch's LSTM sees under bf16 autocast (float32, autocast off), and the
                              gradient norm against fp32 within 5%
    task generation           associative recall (vocab 8192, 64 pairs, length 256) drawn on D: tokens/s; on CUDA
                              20,000 sequences with no host sync (sync debug mode "error"), on the CPU 2,000
    attention TFLOP/s         causal SDPA forward at one long length (CUDA 8192, CPU 1024), full-square FLOPs
    mini-sweep                the smoke preset's copy task at length 8 for a few families, run into a temporary
                              directory; runs.csv read back equals the rows returned
  CUDA only (skipped elsewhere):
    nonzero_static            on D equal to the CPU under sync debug mode "error"
    capture <family> T=<n>    3 cuda_graphs steps at T = 1024 and 4096: graph breaks, cudagraph skips, first-step
                              (compile) seconds
    trials in one process     10 small trials of different families with torch_compile: no recompile-limit
                              warning, memory_reserved() does not grow after the first
    captured oom              a cuda_graphs trial that runs out of memory, then a normal trial: oom then ok, and
                              memory_allocated() back to its baseline
    sdpa backend <family>     the SDPA kernels each attention family's calls can use at the standard preset's
                              widths under the chosen precision (FAIL when only the math fallback can)
    worker per GPU            (2+ GPUs) one worker per GPU, each with its own GPU as the current device, and a
                              trial on each whose loss matches the same trial on one device
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from membench.runners import metrics
from membench.runners.doctor import install, kernels, paths, training, trials
from membench.runners.doctor.report import describe, format_row, header, write_report
from membench.runners.doctor.rows import STATUSES, Check

__all__ = ["CHECKS", "STATUSES", "Check", "describe", "format_row", "header", "run_checks", "write_report"]


@dataclass
class _Entry:
    """One check of the report: its name, fn(device) -> Iterable[Check], and where it runs."""

    name: str
    fn: Callable
    needs: str = ""  # "", "cuda" or "gpus" (two or more CUDA devices): skipped elsewhere
    quick: bool = False  # run under --quick


CHECKS: list[_Entry] = [
    _Entry("torch", install.check_torch, quick=True),
    _Entry("precision", install.check_precision, quick=True),
    _Entry("paths", paths.check_paths, quick=True),
    _Entry("rnn autocast", paths.check_rnn_autocast, quick=True),
    _Entry("compile", training.check_compile_modes),
    _Entry("fused AdamW", training.check_fused_adamw, quick=True),
    _Entry("oom", trials.check_oom, quick=True),
    _Entry("task generation", kernels.check_task_generation, quick=True),
    _Entry("attention TFLOP/s", kernels.check_attention, quick=True),
    _Entry("mini-sweep", trials.check_mini_sweep, quick=True),
    _Entry("nonzero_static", kernels.check_nonzero_static, needs="cuda", quick=True),
    _Entry("capture", training.check_capture, needs="cuda"),
    _Entry("trials in one process", trials.check_trials_in_one_process, needs="cuda"),
    _Entry("captured oom", trials.check_captured_oom, needs="cuda"),
    _Entry("sdpa backend", kernels.check_sdpa_backend, needs="cuda"),
    _Entry("worker per GPU", trials.check_worker_per_gpu, needs="gpus"),
]


def run_checks(device: torch.device, quick: bool = False, only: Iterable[str] | None = None,
               progress: Callable[[Check], None] | None = None) -> list[Check]:
    """Every check of `CHECKS` (or those named in `only`) on `device`, in order; never raises for a check."""
    rows: list[Check] = []

    def emit(row: Check) -> None:
        rows.append(row)
        if progress is not None:
            progress(row)

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for entry in CHECKS:
        if only is not None and entry.name not in only:
            continue
        if entry.needs == "cuda" and device.type != "cuda":
            emit(Check(entry.name, "skipped", "needs CUDA"))
        elif entry.needs == "gpus" and (device.type != "cuda" or gpus < 2):
            emit(Check(entry.name, "skipped", f"needs 2+ CUDA devices (this machine has {gpus})"))
        elif quick and not entry.quick:
            emit(Check(entry.name, "skipped", "not in --quick"))
        else:
            try:
                for row in entry.fn(device):  # rows are reported as they come (some checks take minutes)
                    emit(row)
            except Exception as err:  # noqa: BLE001 - a check that breaks is a failed check, with its reason
                emit(Check(entry.name, "FAIL", metrics.short_error(err)))
            finally:
                metrics.release_memory(device)
    return rows
