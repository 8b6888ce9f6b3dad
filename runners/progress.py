"""A sweep's progress on stderr: a redrawn bar on a terminal, a line per finished trial anywhere else.

A bar redrawn into a file (a CI log, `nohup`, `membench run ... > log 2>&1`) leaves every redraw behind:
~190 KB for a smoke run. So the form follows the stream:

    a terminal   one tqdm bar for the sweep (and one for the trial's steps, in a one-process sweep)
    otherwise    a line when the sweep starts and one per finished trial, flushed at once:

                     smoke: 8 trials, 2 finished before, 6 to run
                     smoke: 3/8 trials, 0:00:41: copy lstm L16 seed0 lr0.003: ok
    quiet        nothing (`--quiet`: the command prints only its summary)

Warnings and errors are not progress: they go to stderr whatever the form.
"""

from __future__ import annotations

import sys
import time


class SweepProgress:
    """The progress of one sweep of `total` trials, `done` of them finished before it started."""

    def __init__(self, name: str, total: int, done: int, show: bool = True, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.name, self.total, self.done, self.started = name, total, done, time.monotonic()
        self.form = "quiet" if not show else ("bar" if redrawn(show, self.stream) else "lines")
        self.bar = None
        if self.form == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc=name, unit="trial", position=0, file=self.stream)
        elif self.form == "lines":
            self._line(f"{total} trial{'' if total == 1 else 's'}, {done} finished before, {total - done} to run")

    @property
    def redrawn(self) -> bool:
        """True when progress is a redrawn bar: a trial may draw its own bar of steps below it."""
        return self.form == "bar"

    def trial_finished(self, label: str, status: str) -> None:
        """One more trial done: `label` (TrialConfig.label) ended with `status`."""
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"{label}: {status}")
            self.bar.update()
        elif self.form == "lines":
            elapsed = clock(time.monotonic() - self.started)
            self._line(f"{self.done}/{self.total} trials, {elapsed}: {label}: {status}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def _line(self, text: str) -> None:
        print(f"{self.name}: {text}", file=self.stream, flush=True)


def clock(seconds: float) -> str:
    """Elapsed seconds as H:MM:SS.

        >>> clock(41.7), clock(3725)
        ('0:00:41', '1:02:05')
    """
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def redrawn(show: bool, stream=None) -> bool:
    """True when progress shown on `stream` (default stderr) is a redrawn bar: shown, and on a terminal."""
    stream = stream or sys.stderr
    try:
        return show and stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
