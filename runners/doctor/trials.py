"""Whole trials through the runner (`run_trial`, the executors, `run_sweep`): a batch that cannot be allocated is
an `oom` row and the next trial runs ("oom"); a mini-sweep's runs.csv reads back equal ("mini-sweep"); and, on
CUDA, 10 compiled trials in one process neither hit dynamo's recompile limit nor grow memory ("trials in one
process"), a captured trial that runs out of memory leaves memory at its baseline ("captured oom"), and with
two or more GPUs each worker runs on its own GPU ("worker per GPU").
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from membench.models import list_models
from membench.runners import metrics
from membench.runners.doctor.rows import verdict
from membench.runners.trial import EvalSlice, TrialConfig


def _tiny_trial(model: str = "mlp", seed: int = 0, **change) -> TrialConfig:
    """A trial of a few seconds on the CPU (copy, length 8, 4 steps), with `change` applied to its fields."""
    fields = dict(task="copy", task_params={"content_vocab": 4}, model=model, model_params={}, d_model=16,
                  n_layers=1, train_len=8, seed=seed, lr=1e-2, batch_size=8, steps=4, eval_every=4, log_every=2,
                  eval_slices=(EvalSlice("L8", 8, 16),))
    return TrialConfig(**{**fields, **change})


OOM_BATCH = 2**40  # sequences in the batch of the trial that must run out of memory: petabytes, on any device


def check_oom(device):
    """A trial whose batch cannot be allocated, then a normal one, through the runner's executor: oom then ok."""
    from membench.runners.executors import LocalExecutor

    trials = [_tiny_trial(batch_size=OOM_BATCH), _tiny_trial(seed=1)]
    payloads = list(LocalExecutor([str(device)]).run(trials))
    statuses = [p["runs"][0]["status"] for p in payloads]
    error = payloads[0]["runs"][0]["error"]
    said = re.search(r"(out of memory|can't allocate memory)[^.;]*", error, re.IGNORECASE)
    yield verdict(statuses == ["oom", "ok"], "oom", f"a batch of 2^40 sequences then a normal trial: "
                  f"{' then '.join(statuses)} ({said.group(0) if said else error[:80]})", "expected oom then ok")


def check_mini_sweep(device):
    """The smoke preset's copy task at length 8 for a few families, into a temporary directory: every trial ok,
    and runs.csv read back equals the rows returned."""
    import pandas as pd

    from membench.runners.spec import load_spec
    from membench.runners.sweep import run_sweep

    models = list_models() if device.type == "cuda" else ["mlp", "lstm", "transformer"]
    spec = load_spec("smoke", None, {"tasks": ["copy"], "models": models, "lengths": [8], "device": str(device)})
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        runs = run_sweep(spec, out, progress=False)
        seconds = time.perf_counter() - start
        back = pd.read_csv(Path(out) / "runs.csv")
    same = (sorted(back["trial_id"]) == sorted(runs["trial_id"])
            and back.sort_values(["trial_id", "slice"])["accuracy"].round(6).tolist()
            == runs.sort_values(["trial_id", "slice"])["accuracy"].round(6).tolist())
    statuses = runs.drop_duplicates("trial_id")["status"].value_counts().to_dict()
    ok = same and set(statuses) == {"ok"}
    yield verdict(ok, "mini-sweep", f"smoke copy L8, {len(models)} families: {len(runs)} rows in {seconds:.0f} s, "
                  f"statuses {statuses}, runs.csv read back {'equal' if same else 'DIFFERENT'}",
                  "a trial failed or the table differs")


class _Warnings(logging.Handler):
    """Keeps the message of every warning logged to it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def recompile_limit_warnings():
    """Collects (into the yielded list) the warnings dynamo logs when it hits its recompile limit and
    falls back to eager ("torch._dynamo hit config.recompile_limit (8)")."""
    handler = _Warnings()
    logger = logging.getLogger("torch._dynamo")
    logger.addHandler(handler)
    hits: list[str] = []
    try:
        yield hits
    finally:
        logger.removeHandler(handler)
        hits += [m for m in handler.messages if "recompile_limit" in m or "cache_size_limit" in m]


def check_trials_in_one_process(device):
    """10 torch_compile trials of different families in this process: no recompile-limit warning, and
    memory_reserved() grows at most 64 MB after the first."""
    from membench.runners.trial import run_trial

    names = (list_models() * 2)[:10]
    reserved, statuses = [], []
    with recompile_limit_warnings() as limit:
        for i, name in enumerate(names):
            payload = run_trial(_tiny_trial(name, seed=i), str(device), "torch_compile")
            statuses.append(payload["runs"][0]["status"])
            reserved.append(torch.cuda.memory_reserved(device))
    growth = (reserved[-1] - reserved[0]) / 2**20
    ok = not limit and growth <= 64 and set(statuses) == {"ok"}
    yield verdict(ok, "trials in one process", f"10 torch_compile trials: statuses {sorted(set(statuses))}, "
                  f"{len(limit)} recompile-limit warnings, memory_reserved grew {growth:.0f} MB after the first",
                  limit[0][:120] if limit else "memory grew or a trial failed")


def check_captured_oom(device):
    """A cuda_graphs trial that runs out of memory, then a normal one: oom then ok, memory_allocated() back
    within 16 MB of its baseline."""
    from membench.runners.trial import run_trial

    torch.cuda.synchronize(device)
    baseline = torch.cuda.memory_allocated(device)
    total = torch.cuda.get_device_properties(device).total_memory
    # 2^24 tokens of width 1024 through an MLP of ratio 4: 256 GB of activations, more than any GPU holds
    huge = _tiny_trial(d_model=1024, batch_size=4096, train_len=4096, eval_slices=(EvalSlice("L4096", 4096, 16),),
                       task_params={"content_vocab": 4})
    first = run_trial(huge, str(device), "cuda_graphs")["runs"][0]
    second = run_trial(_tiny_trial(seed=1), str(device), "cuda_graphs")["runs"][0]
    torch.compiler.reset()
    metrics.release_memory(device)
    left = (torch.cuda.memory_allocated(device) - baseline) / 2**20
    ok = first["status"] == "oom" and second["status"] == "ok" and left <= 16
    yield verdict(ok, "captured oom", f"cuda_graphs trial beyond {total / 2**30:.0f} GiB then a normal one: "
                  f"{first['status']} then {second['status']}; memory_allocated {left:+.0f} MB from baseline",
                  f"expected oom then ok at baseline ({first['error'][:80]})")


def _report_device(_) -> tuple[int, int, str]:
    """(pid, current CUDA device, claimed device) of the pool worker that runs this."""
    import os

    from membench.runners import executors

    return os.getpid(), torch.cuda.current_device(), executors._worker_device


def check_worker_per_gpu(device):
    """One worker per GPU, each with its own GPU as the current device, and a trial on each whose loss matches
    the same trial on one device."""
    import multiprocessing

    from membench.runners import executors

    count = torch.cuda.device_count()
    devices = [f"cuda:{i}" for i in range(count)]
    ctx = multiprocessing.get_context("spawn")
    free = ctx.Queue()
    for each in devices:
        free.put(each)
    with ProcessPoolExecutor(count, mp_context=ctx, initializer=executors._claim_device,
                             initargs=(free, count)) as pool:
        reports = list(pool.map(_report_device, range(4 * count)))
    claimed = {pid: (current, name) for pid, current, name in reports}
    right = all(name == f"cuda:{current}" for current, name in claimed.values())
    trials = [_tiny_trial(seed=i) for i in range(count)]
    pooled = {p["trial_id"]: p["runs"][0] for p in executors.LocalExecutor(devices).run(trials)}
    alone = {p["trial_id"]: p["runs"][0] for p in executors.LocalExecutor([str(device)]).run(trials)}
    statuses = sorted({row["status"] for row in [*pooled.values(), *alone.values()]})
    same = all(math.isclose(pooled[i]["loss"], alone[i]["loss"], rel_tol=1e-3) for i in alone)
    ok = right and statuses == ["ok"] and same
    yield verdict(ok, "worker per GPU", f"{count} GPUs: workers' current devices "
                  f"{sorted(name for _, name in claimed.values())}; a trial per GPU: {statuses}, losses "
                  f"{'equal to' if same else 'DIFFERENT from'} one device's",
                  "a worker is not on its own GPU, a trial failed or the rows differ")
