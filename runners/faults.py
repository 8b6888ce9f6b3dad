"""The fault boundary: whatever one trial (or one cost point) raises becomes that unit's result, never the end
of the sweep.

    >>> with FaultBoundary() as fault:
    ...     raise SystemExit(3)                     # e.g. a user's mixer calling sys.exit
    >>> fault.failed, fault.reason
    (True, 'SystemExit: 3')

Contained: every Exception, a SystemExit, and a KeyboardInterrupt that no Ctrl-C of this process caused (user
code raising it). While the boundary is active in the main thread, where Python's own SIGINT handler is
installed, a SIGINT is noted before it raises KeyboardInterrupt as usual, so a real Ctrl-C passes through and
ends the sweep (its trials resume next time). Elsewhere (a worker thread, a worker process that ignores SIGINT)
nothing is installed and every KeyboardInterrupt is the unit's own. Anything else (the CLI's SIGTERM, a
GeneratorExit) passes through.

Only text is kept (the reason, the traceback), never the exception: its traceback's frames hold the failed
step's tensors, which are freed when the `with` block ends.

Costs a model reports about itself are checked by `cost_value`: a value that is not a finite non-negative
number becomes NaN (a blank cell) with a warning, never a crash when the trial file is written.
"""

from __future__ import annotations

import math
import numbers
import signal
import threading
import traceback

import torch

from membench.runners.metrics import is_oom, short_error


class FaultBoundary:
    """Context manager that contains a failure (see the module doc). After the block: `failed`, and then
    `reason` ('Type: message', one line), `message` (str of the exception, safely), `traceback`, `oom`, and
    `exception_type`."""

    def __init__(self) -> None:
        self.failed, self.reason, self.message, self.traceback = False, "", "", ""
        self.oom, self.exception_type = False, None
        self._sigint, self._watching = False, False

    def _note_sigint(self, signum, frame) -> None:
        self._sigint = True
        raise KeyboardInterrupt

    def __enter__(self) -> "FaultBoundary":
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, self._note_sigint)
            self._watching = True
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._watching:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if exc is None or not isinstance(exc, (Exception, SystemExit, KeyboardInterrupt)):
            return False
        if isinstance(exc, KeyboardInterrupt) and self._sigint:
            return False  # a real Ctrl-C
        self.failed, self.exception_type, self.oom = True, exc_type, is_oom(exc)
        self.reason = short_error(exc)
        try:
            self.message = str(exc)
        except Exception:  # noqa: BLE001 - the reason already says the message could not be printed
            self.message = self.reason
        self.traceback = "".join(traceback.format_exception(exc_type, exc, tb))
        return True


def cost_value(what: str, method, args: tuple, warnings: list[str], unknown_ok: bool = False) -> float:
    """`method(*args)` as a finite non-negative number (integers stay ints: numpy and 0-d tensor ones too);
    NaN, with a line in `warnings`, for anything else. None is NaN without a warning where `unknown_ok` (an
    unknown state size); NotImplementedError (the Mixer stub: not declared) is unknown too. What the method
    raises otherwise propagates: a failure of the unit.

    >>> w = []
    >>> cost_value("state_size(8)", lambda n: torch.tensor(3 * n), (8,), w), w
    (24, [])
    >>> cost_value("flops(2, 8)", lambda b, n: -1, (2, 8), w), w
    (nan, ['flops(2, 8) returned -1, not a finite non-negative number: left blank'])
    """
    try:
        value = method(*args)
    except NotImplementedError:
        warnings.append(f"{what} is not declared: left blank (unknown)")
        return math.nan
    if value is None and unknown_ok:
        return math.nan
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    elif hasattr(value, "item") and getattr(value, "shape", None) == ():  # a numpy scalar
        value = value.item()
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < 0:
        warnings.append(f"{what} returned {repr(value)[:60]}, not a finite non-negative number: left blank")
        return math.nan
    return int(value) if float(value).is_integer() else float(value)
