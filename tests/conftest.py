"""Shared test settings.

One torch thread: the tests use tiny models, for which a second thread costs more in synchronisation than it
gains, and CI has only 2 cores.

Ctrl-C as in a terminal: a test session started with SIGINT ignored (a background job of a non-interactive
shell, `nohup`) would pass that on to every process the tests start, and the tests of what a Ctrl-C does would
fail for a reason that is not the code's. Python catches SIGINT with its default handler unless it started
ignored; the tests restore that, and the processes they start inherit the default action.
"""

import signal

import torch

torch.set_num_threads(1)
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
