"""The rows every doctor check yields: a `Check` (name, status, detail), and `verdict` for a pass-or-FAIL row.

    >>> verdict(True, "oom", "oom then ok", "expected oom then ok")
    Check(name='oom', status='pass', detail='oom then ok')
    >>> verdict(False, "oom", "ok then ok", "expected oom then ok")
    Check(name='oom', status='FAIL', detail='expected oom then ok; ok then ok')
"""

from __future__ import annotations

from dataclasses import dataclass

STATUSES = ("pass", "FAIL", "skipped")


@dataclass
class Check:
    """One row of the report."""

    name: str
    status: str  # "pass", "FAIL" or "skipped"
    detail: str = ""


def verdict(ok: bool, name: str, detail: str, why: str = "") -> Check:
    """A "pass" row with `detail`, or a "FAIL" row whose detail starts with `why` (when given)."""
    return Check(name, "pass" if ok else "FAIL", detail if ok or not why else f"{why}; {detail}")
