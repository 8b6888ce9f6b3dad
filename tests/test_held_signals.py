"""Signals held back while a worker starts (runners/interrupts.py): a Ctrl-C that comes meanwhile is raised
once the block has ended, even when the kernel hands it to another thread of the process."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import pytest

from membench.runners.interrupts import Terminated, held_signals, install, raise_terminated, sigint_blocked

pytestmark = pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="needs POSIX signal masks")


def ctrl_c_while_starting_a_worker(hold) -> list[str]:
    """A Ctrl-C to the process while this (main) thread blocks SIGINT and another thread does not: what ran."""
    ran = []
    other = threading.Event()
    helper = threading.Thread(target=other.wait, args=(5,))  # SIGINT unblocked there: the kernel delivers it
    helper.start()
    try:
        with hold(), sigint_blocked():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # Python runs the handler in this thread meanwhile
            ran.append("the block")
    except KeyboardInterrupt:
        ran.append("KeyboardInterrupt")
    finally:
        other.set()
        helper.join()
    return ran


def test_a_ctrl_c_that_reaches_another_thread_cuts_a_block_that_only_masks_it():
    assert ctrl_c_while_starting_a_worker(hold=contextlib.nullcontext) == ["KeyboardInterrupt"]


def test_held_a_ctrl_c_comes_once_the_block_has_ended():
    assert ctrl_c_while_starting_a_worker(hold=held_signals) == ["the block", "KeyboardInterrupt"]


def test_held_a_sigterm_goes_to_the_handler_that_was_in_place():
    previous = install(signal.SIGTERM, raise_terminated)
    ran = []
    try:
        with pytest.raises(Terminated):
            with held_signals():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.1)
                ran.append("the block")
        assert ran == ["the block"]
        assert signal.getsignal(signal.SIGTERM) is raise_terminated  # restored
    finally:
        install(signal.SIGTERM, previous)


def test_nothing_held_leaves_the_handlers_as_they_were():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with held_signals():
        pass
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
