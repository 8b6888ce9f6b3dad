"""One writer per results directory: an exclusive lock on DIR/.membench.lock, held while a sweep runs.

    with DirectoryLock("out/smoke"):        # a second process here gets UsageError:
        run_the_sweep()                     # "out/smoke is being written by PID 4242 (started ...)"

The lock is `fcntl.flock` on the lock file, so the kernel releases it when its process exits, however it
exits (kill -9 included): a lock file left by a dead process is simply taken over. The file holds the
holder's PID and start time (UTC), for the message. Taking the lock is also the first write into the
directory, so a read-only, full or otherwise unwritable directory fails here, before any training.
Where fcntl does not exist (Windows) no lock is taken.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from membench.runners.errors import UsageError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".membench.lock"


class DirectoryLock:
    """Context manager: hold the writer's lock of `directory` (which must exist) or raise UsageError."""

    def __init__(self, directory) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> "DirectoryLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise UsageError(f"cannot write in {self.directory}: {err.strerror or err}; give a writable --out") \
                from None
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise UsageError(f"{self.directory} is being written by {_holder(fd)}; wait for it to "
                                     f"finish or give another --out") from None
            started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {started}\n".encode(), 0)
            os.fsync(fd)
        except OSError as err:
            os.close(fd)
            raise UsageError(f"cannot write in {self.directory}: {err.strerror or err}; give a writable --out "
                             f"(or free some space)") from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _holder(fd: int) -> str:
    """'PID n (started ...)' from the lock file's contents."""
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").split()
    except OSError:
        text = []
    if len(text) >= 2 and text[0].isdigit():
        return f"PID {text[0]} (started {' '.join(text[1:])})"
    return "another process"
