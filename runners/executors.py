"""Where trials run. An executor takes trials and yields each one's payload (see runners.trial) as it finishes;
the sweep writes them, so every executor produces the same files.

    local  one process on one device; with several GPUs, `gpu_workers` worker processes per GPU (spawned,
           its GPU set as its current device); on the CPU, `cpu_workers` worker processes (one per core with
           "cores"); a worker that dies or hits a sticky CUDA error is replaced by a fresh pool, and the
           sweep goes on (see LocalExecutor)
    ray    each trial a Ray task holding one GPU, or `threads` CPUs (default 1) when the cluster has none
           (`pip install membench[ray]`; `--address` joins a running cluster, else a local one starts)

`make_executor` validates everything (executor name, device, Ray importable, GPUs present) before the
sweep creates its output directory. Devices: "auto" (every GPU when there are any, else the CPU), "cpu",
"cuda" (every GPU) or "cuda:N".

Interrupts: the sweep's process alone answers Ctrl-C and SIGTERM. Its workers start with SIGINT blocked and
then ignore it (a Ctrl-C reaches the terminal's whole process group: they print nothing); when the sweep is
interrupted, its pool's workers are terminated at once, their trials abandoned (they have no trial file, so
the next run into the directory runs them again). A worker also ends with its parent, `kill -9` included
(see _die_with_parent), so no worker outlives the sweep.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Iterable, Iterator

import torch

from membench.checks import check_device
from membench.registry import unknown_name_message
from membench.runners.errors import UsageError
from membench.runners.interrupts import held_signals, sigint_blocked
from membench.runners.metrics import short_error
from membench.runners.precision import check_compile
from membench.runners.rows import failed_trial
from membench.runners.trackers import TrackerSettings
from membench.runners.trial import SAVED_MODELS_ENV, TrialConfig, run_trial

EXECUTORS = ("local", "ray")


def local_devices(device: str) -> list[str]:
    """The devices of this machine a sweep uses; UsageError when CUDA is asked for and absent."""
    check_device("device", device)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "auto":
        return [f"cuda:{i}" for i in range(count)] or ["cpu"]
    if device == "cpu":
        return ["cpu"]
    if count == 0:
        raise UsageError(f"device {device} is not available: torch sees no CUDA device; use --device cpu")
    if device == "cuda":
        return [f"cuda:{i}" for i in range(count)]
    if int(device.split(":")[1]) >= count:
        raise UsageError(f"device {device} is not available: there are {count} CUDA devices (cuda:0..cuda:{count - 1})")
    return [device]


class WorkerDied(RuntimeError):
    """The worker process running a trial ended without reporting (killed, crashed, out of host memory)."""


# Messages of CUDA errors after which the process's CUDA context is unusable: every later kernel fails too
STICKY_CUDA_ERRORS = ("device-side assert", "illegal memory access", "unspecified launch failure",
                      "misaligned address", "illegal instruction", "cudaErrorLaunchFailure")


def is_sticky(payload: dict) -> bool:
    """True when a trial failed with a CUDA error that poisons its process (see STICKY_CUDA_ERRORS)."""
    return any(row["status"] == "error" and any(m.lower() in str(row["error"]).lower() for m in STICKY_CUDA_ERRORS)
               for row in payload["runs"])


class LocalExecutor:
    """Trials one after another in this process, or on a pool of one spawned worker per device.

    Failures of a process, not of a trial:
    - a worker that dies (`BrokenProcessPool`) takes the pool down with it. The trials in flight are then
      run again, each alone on a fresh pool; one that kills its worker alone gets an `error` row, and the
      rest of the sweep goes on on a fresh pool;
    - a sticky CUDA error (`is_sticky`) poisons the process it happened in: no more trials are given to
      that pool, those in flight finish, and the rest run on a fresh pool (fresh processes, fresh CUDA
      contexts). In this process (one device), the rest move to a one-worker pool.

    `worker` is the function a pool runs for each trial (tests replace it with one that crashes); `trackers`
    go to each worker when it starts, which makes each trial's trackers itself (runners.trackers).
    """

    def __init__(self, devices: list[str], compile: str = "none", progress: bool = False,
                 threads: int | None = None, worker=None, trackers: TrackerSettings | None = None) -> None:
        self.devices, self.compile, self.progress, self.threads = devices, compile, progress, threads
        self.trackers = trackers
        self.worker = worker or _worker_trial
        self._pool: ProcessPoolExecutor | None = None  # the pool of the run in progress

    def run(self, trials: Iterable[TrialConfig]) -> Iterator[dict]:
        trials = list(trials)
        if len(self.devices) == 1 and self.worker is _worker_trial:
            thaw = gc.get_freeze_count() == 0  # a caller that froze its own heap keeps it frozen
            gc.freeze()  # what lives now outlives the sweep: each trial's gc.collect skips it (see _claim_device)
            try:
                while trials:
                    payload = run_trial(trials.pop(0), self.devices[0], self.compile, self.progress, self.threads,
                                        self.trackers)
                    gc.freeze()  # what outlived the trial's garbage collection (see _worker_trial)
                    yield payload
                    if is_sticky(payload):
                        break  # this process's CUDA context is poisoned: the rest run in a fresh worker
            finally:
                if thaw:
                    gc.unfreeze()
        yield from self._run_pooled(trials)

    def _run_pooled(self, trials: list[TrialConfig]) -> Iterator[dict]:
        queue = [(config, False) for config in trials]  # (trial, alone): suspects of a crash run alone
        while queue:
            yield from self._one_pool(queue)

    def _one_pool(self, queue: list) -> Iterator[dict]:
        """Run trials from the front of `queue` on one fresh pool until it is done, broken or poisoned.

        Anything that ends it early (Ctrl-C, SIGTERM, the caller closing this generator) stops the pool's
        workers at once (stop_workers) rather than waiting for their trials."""
        ctx = multiprocessing.get_context("spawn")
        free = ctx.Queue()
        for device in self.devices:
            free.put(device)
        in_flight: dict = {}  # future -> (config, alone)
        crashed: list = []  # (config, alone) of the trials whose worker died
        stop = False  # no more submissions to this pool (broken or poisoned)
        pool = ProcessPoolExecutor(len(self.devices), mp_context=ctx, initializer=_start_worker,
                                   initargs=(free, len(self.devices), os.getpid(), self.trackers))
        self._pool = pool

        def fill() -> None:
            while queue and not stop and len(in_flight) < len(self.devices):
                config, alone = queue[0]
                if (alone and in_flight) or any(a for _, a in in_flight.values()):
                    return  # a suspect runs with nothing beside it
                queue.pop(0)
                # submit may start a worker: it inherits the blocked SIGINT (see _start_worker), and a Ctrl-C
                # waits until the worker has its start-up data (runners/interrupts.py)
                with held_signals(), sigint_blocked():
                    future = pool.submit(self.worker, config, self.compile, self.threads)
                in_flight[future] = (config, alone)

        try:
            fill()
            while in_flight:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                payloads = []
                for future in done:
                    config, alone = in_flight.pop(future)
                    try:
                        payload = future.result()
                    except BrokenProcessPool:
                        crashed.append((config, alone))
                        stop = True
                        continue
                    payloads.append(payload)
                    stop = stop or is_sticky(payload)
                fill()  # the freed workers start their next trials while the sweep writes these results
                yield from payloads
        except BaseException:  # interrupted, or closed by the caller: the trials in flight are abandoned
            stop_workers(pool)
            raise
        finally:
            self._pool = None
        pool.shutdown()
        if len(crashed) == 1 or any(alone for _, alone in crashed):
            for config, _ in crashed:  # the one trial in flight when its worker died: that trial's fault
                err = WorkerDied("the worker process died while running this trial (killed, crashed or out "
                                 "of host memory); the sweep went on without it")
                yield failed_trial(config, "error", err, self.devices[0])
        else:  # several in flight: any of them may be the culprit, so each runs again alone
            queue[:0] = [(config, True) for config, _ in crashed]

    def close(self) -> None:
        """Stop the workers of a pool whose run was left unfinished (the caller stopped reading it: an
        exception while it wrote a result); a finished run has closed its pool already."""
        if self._pool is not None:
            stop_workers(self._pool)
            self._pool = None


STOP_GRACE = 2.0  # seconds a terminated worker has to end before it is killed
PARENT_POLL = 1.0  # seconds between two looks at the parent's pid (where PR_SET_PDEATHSIG is not available)
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): the signal this process gets when its parent dies


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """End a pool now: SIGTERM to every worker (a trial in flight is abandoned), SIGKILL to one still alive
    after STOP_GRACE seconds; the futures not started are cancelled."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # the live workers, by pid
    sentinels = {}
    for process in processes:
        with contextlib.suppress(ValueError, OSError):  # a process already closed or gone
            sentinels[process.sentinel] = process
            process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + STOP_GRACE
    while sentinels and time.monotonic() < deadline:
        for ended in multiprocessing.connection.wait(list(sentinels), deadline - time.monotonic()):
            sentinels.pop(ended)
    for process in sentinels.values():
        with contextlib.suppress(ValueError, OSError):
            process.kill()


def _start_worker(free, workers: int, parent: int, trackers: TrackerSettings | None = None) -> None:
    """Pool initializer: ignore Ctrl-C (the sweep's process answers it and stops the pool), end with the
    parent `parent` (_die_with_parent), keep the sweep's `trackers`, then take a device (_claim_device)."""
    global _worker_trackers
    _worker_trackers = trackers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    _claim_device(free, workers)


def _die_with_parent(parent: int) -> None:
    """End this process when `parent` ends, however it ends (kill -9 included). On Linux the kernel sends
    SIGKILL (prctl PR_SET_PDEATHSIG; it fires when the thread that started the worker ends, which is the
    thread running the sweep); elsewhere a daemon thread looks at os.getppid() every PARENT_POLL seconds.
    A parent gone before either was armed (the worker was then adopted: another ppid) ends it at once."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            armed = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):  # no libc to load, or no prctl in it
            armed = False
    if os.getppid() != parent:
        os._exit(1)
    if not armed:
        threading.Thread(target=_exit_when_orphaned, args=(parent,), name="membench-parent-watch",
                         daemon=True).start()


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    os._exit(1)


_worker_device = "cpu"  # the device of this worker process, claimed once when it starts
_worker_trackers: TrackerSettings | None = None  # the trackers its trials log to, set when it starts


def _claim_device(free, workers: int) -> None:
    """Pool initializer: take one device and make it this process's current CUDA device (so that kernels,
    caches and `torch.cuda` calls without an index use it); CPU workers share the cores evenly."""
    global _worker_device
    _worker_device = free.get()
    if _worker_device == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    else:
        torch.cuda.set_device(torch.device(_worker_device))
    # The modules imported so far live as long as the worker: frozen, the garbage collection that ends every
    # trial (release_memory) no longer walks their ~300k objects, which cost ~0.2 s a trial on the CPU
    gc.freeze()


def _worker_trial(config: TrialConfig, compile: str, threads: int | None) -> dict:
    payload = run_trial(config, _worker_device, compile, threads=threads, trackers=_worker_trackers)
    # What outlived the trial's garbage collection joins the frozen heap: the modules its first optimizer
    # imported (torch._dynamo, ~200k objects: ~55 ms a collection) and the caches it filled. Each trial's
    # collection then walks only the objects made since the last one: ~1 ms instead of ~55 on the CPU
    gc.freeze()
    return payload


class RayExecutor:
    """Each trial a Ray task with one GPU (or one CPU); results are gathered by the driver as they finish."""

    def __init__(self, device: str, compile: str = "none", address: str | None = None,
                 threads: int | None = None, trackers: TrackerSettings | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise UsageError("executor ray needs Ray, which is not installed: pip install membench[ray]") from None
        self.ray, self.compile, self.threads, self.trackers = ray, compile, threads, trackers
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        gpus = ray.cluster_resources().get("GPU", 0)
        if device.startswith("cuda") and gpus < 1:
            self.close()
            raise UsageError(f"device {device} is not available: the Ray cluster has no GPU; use --device cpu")
        self.use_gpu = gpus >= 1 and device != "cpu"
        if compile == "cuda_graphs" and not self.use_gpu:
            self.close()
            check_compile(compile, torch.device("cpu"))  # raises: no GPU (the workers check theirs)

    def run(self, trials: Iterable[TrialConfig]) -> Iterator[dict]:
        ray = self.ray
        resources = {"num_gpus": 1} if self.use_gpu else {"num_cpus": self.threads or 1}
        if SAVED_MODELS_ENV in os.environ:  # save_model's folder: Ray's workers do not inherit the driver's env
            resources["runtime_env"] = {"env_vars": {SAVED_MODELS_ENV: os.environ[SAVED_MODELS_ENV]}}
        task = ray.remote(**resources)(run_trial)
        device = "cuda" if self.use_gpu else "cpu"  # Ray makes the task's own GPU the only visible one
        pending = {task.remote(config, device, self.compile, False, self.threads, self.trackers): config
                   for config in trials}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                config = pending.pop(ref)
                try:
                    yield ray.get(ref)
                except ray.exceptions.RayError as err:  # the worker died (e.g. killed for memory), or the task raised
                    yield ray_failure(ray, err, config, device)

    def close(self) -> None:
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()


# a terminal escape sequence (Ray colours its messages), or what is left of one that a length limit cut short
ANSI_ESCAPE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]?)?")


def ray_failure(ray, err: BaseException, config: TrialConfig, device: str) -> dict:
    """The payload of a Ray task that failed: status oom when Ray killed it for memory, else error. A task that
    raised (RayTaskError) is recorded by its own exception, with Ray's full traceback (payload "traceback");
    every text without the colour codes Ray puts in it.

        >>> ANSI_ESCAPE.sub("", "\x1b[36mray::run_trial()\x1b[39m (pid=7)")
        'ray::run_trial() (pid=7)'
    """
    status = "oom" if isinstance(err, ray.exceptions.OutOfMemoryError) else "error"
    cause = getattr(err, "cause", None) if isinstance(err, ray.exceptions.RayTaskError) else None
    reason = ANSI_ESCAPE.sub("", short_error(cause if isinstance(cause, BaseException) else err))
    trace = ANSI_ESCAPE.sub("", str(err)) if isinstance(err, ray.exceptions.RayTaskError) else ""
    return failed_trial(config, status, reason, device, trace=trace)


def make_executor(name: str, device: str = "auto", compile: str = "none", address: str | None = None,
                  progress: bool = False, threads: int | None = None, cpu_workers: int | str = 1,
                  gpu_workers: int = 1, trackers: TrackerSettings | None = None):
    """A ready executor; UsageError for an unknown name, an unavailable device or a missing Ray.

    `cpu_workers`: on the CPU, that many worker processes (or "cores": one per core) each run trials with
    `threads` torch threads; `gpu_workers`: that many worker processes share each GPU (small models leave a
    large GPU mostly idle, waiting on kernel launches). A trial's rows do not depend on which worker ran it
    (its seeds fix its data, weights and evaluation), only its timings do: trials sharing a GPU slow each
    other down, so their ms_per_step is not a cost measurement (`membench cost` is). `trackers`: where each
    trial's curves also go (runners.trackers)."""
    if name not in EXECUTORS:
        raise UsageError(unknown_name_message("executor", name, list(EXECUTORS)))
    check_device("device", device)
    if name == "ray":
        return RayExecutor(device, compile, address, threads, trackers)
    if address is not None:
        raise UsageError("--address is only for --executor ray")
    devices = local_devices(device)
    for each in devices:  # cuda_graphs on the CPU or on a pre-Ampere GPU: a one-line ConfigError
        check_compile(compile, torch.device(each))
    if devices == ["cpu"]:
        workers = (os.cpu_count() or 1) if cpu_workers == "cores" else cpu_workers
        devices = ["cpu"] * max(1, workers)
    else:
        devices = [gpu for gpu in devices for _ in range(gpu_workers)]
    return LocalExecutor(devices, compile, progress, threads, trackers=trackers)
