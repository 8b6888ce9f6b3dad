"""How the doctor's rows are shown and kept: the header (date, commit, torch, device), one printed line per row,
and the report files doctor.md and doctor.csv.

    >>> format_row(Check("paths lstm", "pass", "fp32 out 1.2e-07"))
    'paths lstm                  pass     fp32 out 1.2e-07'
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import torch

from membench.runners import metrics
from membench.runners.doctor.rows import Check
from membench.runners.trial import git_commit


def header(device: torch.device) -> dict[str, str]:
    """What the report is about: date, commit, torch version and device."""
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": git_commit() or "unknown",
            "torch_version": torch.__version__, "device": describe(device)}


def describe(device: torch.device) -> str:
    """'cuda:0 (NVIDIA H100 80GB HBM3)' or 'cpu: <processor model>'."""
    name = metrics.device_name(device)
    return name if device.type == "cpu" else f"{device} ({name})"


NAME_WIDTH = 26  # rows are printed as they finish, so the name column has a fixed width


def format_row(row: Check) -> str:
    """'paths lstm                  pass     fp32 out ...': name, status, detail."""
    return f"{row.name.ljust(NAME_WIDTH)}  {row.status.ljust(7)}  {row.detail}"


def write_report(out_dir: Path, rows: list[Check], about: dict[str, str]) -> None:
    """doctor.md (the table in markdown, under the header) and doctor.csv (one row per check, header columns)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# membench doctor", ""] + [f"- {k}: {v}" for k, v in about.items()] + [
        "", "| check | status | detail |", "|---|---|---|"]
    lines += [f"| {r.name} | {r.status} | {r.detail.replace('|', '/')} |" for r in rows]
    (out_dir / "doctor.md").write_text("\n".join(lines) + "\n")
    with open(out_dir / "doctor.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["check", "status", "detail", *about])
        writer.writeheader()
        for r in rows:
            writer.writerow({"check": r.name, "status": r.status, "detail": r.detail, **about})
