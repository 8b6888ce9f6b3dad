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
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Iterable, Iterator

import torch

from membench.checks import check_device
from membench.registry import unknown_name_message
from membench.runners.errors import UsageError
from membench.runners.precision import check_compile
from membench.runners.trial import TrialConfig, failed_trial, run_trial

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

    `worker` is the function a pool runs for each trial (tests replace it with one that crashes).
    """

    def __init__(self, devices: list[str], compile: str = "none", progress: bool = False,
                 threads: int | None = None, worker=None) -> None:
        self.devices, self.compile, self.progress, self.threads = devices, compile, progress, threads
        self.worker = worker or _worker_trial

    def run(self, trials: Iterable[TrialConfig]) -> Iterator[dict]:
        trials = list(trials)
        if len(self.devices) == 1 and self.worker is _worker_trial:
            thaw = gc.get_freeze_count() == 0  # a caller that froze its own heap keeps it frozen
            gc.freeze()  # what lives now outlives the sweep: each trial's gc.collect skips it (see _claim_device)
            try:
                while trials:
                    payload = run_trial(trials.pop(0), self.devices[0], self.compile, self.progress, self.threads)
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
        """Run trials from the front of `queue` on one fresh pool until it is done, broken or poisoned."""
        ctx = multiprocessing.get_context("spawn")
        free = ctx.Queue()
        for device in self.devices:
            free.put(device)
        in_flight: dict = {}  # future -> (config, alone)
        crashed: list = []  # (config, alone) of the trials whose worker died
        stop = False  # no more submissions to this pool (broken or poisoned)
        with ProcessPoolExecutor(len(self.devices), mp_context=ctx, initializer=_claim_device,
                                 initargs=(free, len(self.devices))) as pool:
            def fill() -> None:
                while queue and not stop and len(in_flight) < len(self.devices):
                    config, alone = queue[0]
                    if (alone and in_flight) or any(a for _, a in in_flight.values()):
                        return  # a suspect runs with nothing beside it
                    queue.pop(0)
                    in_flight[pool.submit(self.worker, config, self.compile, self.threads)] = (config, alone)

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
        if len(crashed) == 1 or any(alone for _, alone in crashed):
            for config, _ in crashed:  # the one trial in flight when its worker died: that trial's fault
                err = WorkerDied("the worker process died while running this trial (killed, crashed or out "
                                 "of host memory); the sweep went on without it")
                yield failed_trial(config, "error", err, self.devices[0])
        else:  # several in flight: any of them may be the culprit, so each runs again alone
            queue[:0] = [(config, True) for config, _ in crashed]

    def close(self) -> None:
        """Nothing to release (the pool closes with its run)."""


_worker_device = "cpu"  # the device of this worker process, claimed once when it starts


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
    payload = run_trial(config, _worker_device, compile, threads=threads)
    # What outlived the trial's garbage collection joins the frozen heap: the modules its first optimizer
    # imported (torch._dynamo, ~200k objects: ~55 ms a collection) and the caches it filled. Each trial's
    # collection then walks only the objects made since the last one: ~1 ms instead of ~55 on the CPU
    gc.freeze()
    return payload


class RayExecutor:
    """Each trial a Ray task with one GPU (or one CPU); results are gathered by the driver as they finish."""

    def __init__(self, device: str, compile: str = "none", address: str | None = None,
                 threads: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise UsageError("executor ray needs Ray, which is not installed: pip install membench[ray]") from None
        self.ray, self.compile, self.threads = ray, compile, threads
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
        task = ray.remote(**resources)(run_trial)
        device = "cuda" if self.use_gpu else "cpu"  # Ray makes the task's own GPU the only visible one
        pending = {task.remote(config, device, self.compile, False, self.threads): config for config in trials}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                config = pending.pop(ref)
                try:
                    yield ray.get(ref)
                except ray.exceptions.RayError as err:  # the worker itself died (e.g. killed for memory)
                    status = "oom" if isinstance(err, ray.exceptions.OutOfMemoryError) else "error"
                    yield failed_trial(config, status, err, device)

    def close(self) -> None:
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()


def make_executor(name: str, device: str = "auto", compile: str = "none", address: str | None = None,
                  progress: bool = False, threads: int | None = None, cpu_workers: int | str = 1,
                  gpu_workers: int = 1):
    """A ready executor; UsageError for an unknown name, an unavailable device or a missing Ray.

    `cpu_workers`: on the CPU, that many worker processes (or "cores": one per core) each run trials with
    `threads` torch threads; `gpu_workers`: that many worker processes share each GPU (small models leave a
    large GPU mostly idle, waiting on kernel launches). A trial's rows do not depend on which worker ran it
    (its seeds fix its data, weights and evaluation), only its timings do: trials sharing a GPU slow each
    other down, so their ms_per_step is not a cost measurement (`membench cost` is)."""
    if name not in EXECUTORS:
        raise UsageError(unknown_name_message("executor", name, list(EXECUTORS)))
    check_device("device", device)
    if name == "ray":
        return RayExecutor(device, compile, address, threads)
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
    return LocalExecutor(devices, compile, progress, threads)
