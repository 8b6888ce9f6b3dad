"""`membench doctor [--device DEVICE] [--out DIR] [--quick]`: check this install on this device (runners/doctor/).

Prints one row per check (pass, FAIL with the reason, or skipped and why); `--out DIR` also writes
doctor.md and doctor.csv with the date, commit, torch version and device. Exit 0 when nothing FAILed, else 1.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from membench.runners import doctor
from membench.runners.errors import UsageError
from membench.runners.executors import local_devices

HELP = "self-check of this install on a device: model paths, precision, capture, OOM handling, a mini-sweep"


def add_arguments(parser) -> None:
    parser.add_argument("--device", default="auto", help="auto (the first GPU when there is one), cpu, cuda or cuda:N")
    parser.add_argument("--out", metavar="DIR", help="also write DIR/doctor.md and DIR/doctor.csv")
    parser.add_argument("--quick", action="store_true", help="only the fast checks (the others are skipped)")


def writable_out(out: str) -> None:
    """Make --out (with its parents) and write a file into it, before any check runs: UsageError, one line,
    where that fails (an empty string, a file, a read-only or missing place)."""
    if not out.strip():
        raise UsageError("--out needs a directory, got an empty string")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise UsageError(f"cannot write in --out {out}: {err.strerror or err}; give a writable directory") from None


def run(args) -> int:
    if args.out is not None:
        writable_out(args.out)
    device = torch.device(local_devices(args.device)[0])
    about = doctor.header(device)
    print(f"membench doctor on {about['device']}, torch {about['torch_version']}, commit {about['commit']}")
    rows = doctor.run_checks(device, quick=args.quick, progress=lambda row: print(doctor.format_row(row), flush=True))
    counts = {s: sum(r.status == s for r in rows) for s in doctor.STATUSES}
    print(f"{counts['pass']} pass, {counts['FAIL']} FAIL, {counts['skipped']} skipped")
    if args.out is not None:
        try:
            doctor.write_report(Path(args.out), rows, about)
        except OSError as err:  # e.g. the disk filled up while the checks ran
            raise UsageError(f"cannot write the report in {args.out}: {err.strerror or err}") from None
        print(f"report: {Path(args.out) / 'doctor.md'}, doctor.csv")
    failed = [r.name for r in rows if r.status == "FAIL"]
    if failed:
        print(f"membench doctor: {len(failed)} checks FAILed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
