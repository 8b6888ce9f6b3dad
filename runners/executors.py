"""Where trials run. An executor takes trials and yields each one's payload (see runners.trial) as it finishes;
the sweep writes them, so every executor produces the same files.

    local  one process on one device; with several GPUs, one worker process per GPU (spawned)
    ray    each trial a Ray task holding one GPU, or `threads` CPUs (default 1) when the cluster has none
           (`pip install membench[ray]`; `--address` joins a running cluster, else a local one starts)

`make_executor` validates everything (executor name, device, Ray importable, GPUs present) before the
sweep creates its output directory. Devices: "auto" (every GPU when there are any, else the CPU), "cpu",
"cuda" (every GPU) or "cuda:N".
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Iterable, Iterator

import torch

from membench.checks import check_device
from membench.registry import unknown_name_message
from membench.runners.errors import UsageError
from membench.runners.trial import TrialConfig, failed_trial, run_trial

EXECUTORS = ("local", "ray")
_NO_GRAPHS = "compile cuda_graphs needs a CUDA device; on the CPU use none or torch_compile"


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


class LocalExecutor:
    """Trials one after another in this process, or on a pool of one spawned worker per device."""

    def __init__(self, devices: list[str], compile: str = "none", progress: bool = False,
                 threads: int | None = None) -> None:
        self.devices, self.compile, self.progress, self.threads = devices, compile, progress, threads

    def run(self, trials: Iterable[TrialConfig]) -> Iterator[dict]:
        if len(self.devices) == 1:
            for config in trials:
                yield run_trial(config, self.devices[0], self.compile, self.progress, self.threads)
            return
        ctx = multiprocessing.get_context("spawn")
        free = ctx.Queue()
        for device in self.devices:
            free.put(device)
        with ProcessPoolExecutor(len(self.devices), mp_context=ctx, initializer=_claim_device,
                                 initargs=(free, len(self.devices))) as pool:
            futures = [pool.submit(_worker_trial, config, self.compile, self.threads) for config in trials]
            for future in as_completed(futures):
                yield future.result()

    def close(self) -> None:
        """Nothing to release (the pool closes with its run)."""


_worker_device = "cpu"  # the device of this worker process, claimed once when it starts


def _claim_device(free, workers: int) -> None:
    """Pool initializer: take one device; CPU workers share the cores evenly."""
    global _worker_device
    _worker_device = free.get()
    if _worker_device == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def _worker_trial(config: TrialConfig, compile: str, threads: int | None) -> dict:
    return run_trial(config, _worker_device, compile, threads=threads)


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
            raise UsageError(_NO_GRAPHS)

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
                  progress: bool = False, threads: int | None = None):
    """A ready executor; UsageError for an unknown name, an unavailable device or a missing Ray."""
    if name not in EXECUTORS:
        raise UsageError(unknown_name_message("executor", name, list(EXECUTORS)))
    check_device("device", device)
    if name == "ray":
        return RayExecutor(device, compile, address, threads)
    if address is not None:
        raise UsageError("--address is only for --executor ray")
    devices = local_devices(device)
    if compile == "cuda_graphs" and devices == ["cpu"]:
        raise UsageError(_NO_GRAPHS)
    return LocalExecutor(devices, compile, progress, threads)
