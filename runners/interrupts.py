"""Ctrl-C and SIGTERM in membench's own process: held back while a step must not be cut in two, then raised.

Two different things hold a signal back, and starting a worker process needs both:

    held_signals()     this process: a Ctrl-C or SIGTERM that comes during the block is recorded and delivered
                       to its handler when the block ends. Blocking SIGINT in one thread is not enough for that:
                       the kernel hands a process's signal to any thread that does not block it (a queue's
                       feeder thread, say), and Python then runs the handler in the main thread wherever it is.
    sigint_blocked()   a child process started during the block: it inherits the blocked SIGINT (the signal
                       mask survives fork and exec), so a worker never sees the terminal's Ctrl-C, not even
                       while it imports torch.

A Ctrl-C that cut `ProcessPoolExecutor.submit` between starting a worker and sending it its start-up data left
that worker to print `EOFError: Ran out of input` under "membench: interrupted"; held, it comes once the worker
has what it needs, and the sweep then stops the worker (runners/executors.py).

    >>> import os, signal
    >>> try:
    ...     with held_signals():
    ...         os.kill(os.getpid(), signal.SIGINT)
    ...         print("the block ran to its end")
    ... except KeyboardInterrupt:
    ...     print("then the Ctrl-C")
    the block ran to its end
    then the Ctrl-C
"""

from __future__ import annotations

import contextlib
import signal
import threading


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that it unwinds like Ctrl-C (locks released, one line)."""


def raise_terminated(signum, frame) -> None:
    """A SIGTERM handler: raise Terminated."""
    raise Terminated()


def install(signum: int, handler):
    """signal.signal where it is allowed (the main thread); the previous handler, or None."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signum, handler)


@contextlib.contextmanager
def held_signals():
    """Ctrl-C and SIGTERM recorded while the block runs, then delivered once it has ended to the handlers that
    were in place before it (by default KeyboardInterrupt for a Ctrl-C). Only the main thread can hold them
    (Python runs every handler there); elsewhere the block runs with the handlers as they are."""
    held: list[int] = []
    previous = {signum: install(signum, lambda signum, frame: held.append(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():  # (None: a handler not set from Python, unknown: the default)
            install(signum, signal.SIG_DFL if handler is None else handler)
    if held:
        signal.raise_signal(held[0])  # its handler runs before this returns: it raises from here


@contextlib.contextmanager
def sigint_blocked():
    """SIGINT blocked in this thread: a process started meanwhile inherits the block, and one that arrives
    meanwhile stays pending here (or goes to another thread) until the block ends. Without pthread_sigmask
    (Windows) nothing is blocked."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
