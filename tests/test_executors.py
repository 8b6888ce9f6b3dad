"""The worker per device: its CUDA device is set, a crashed worker costs only its own trial, a sticky CUDA
error gets a fresh process. Exercised with CPU workers (spawned, so the worker functions live at module level).
"""

from __future__ import annotations

import gc
import os
import queue
import time

import pandas as pd
import pytest
import torch

from membench.runners import executors
from membench.runners.executors import LocalExecutor, is_sticky
from membench.runners.rows import failed_trial
from membench.runners.trial import EvalSlice, TrialConfig


def tiny(seed: int) -> TrialConfig:
    return TrialConfig(task="copy", task_params={"content_vocab": 4}, model="mlp", model_params={}, d_model=8,
                       n_layers=1, train_len=8, seed=seed, lr=1e-2, batch_size=4, steps=2, eval_every=2, log_every=1,
                       eval_slices=(EvalSlice("L8", 8, 4),))


def dies_on_seed_1(config, compile, threads):
    """A worker that kills its own process (no exception, no report) for the trial of seed 1."""
    if config.seed == 1:
        os._exit(3)
    return executors._worker_trial(config, compile, threads)


_poisoned = False  # per worker process: set by a (simulated) device-side assert, as CUDA's context would be


def poisons_on_seed_1(config, compile, threads):
    """After the trial of seed 1, every later trial in the same process fails, like a CUDA context after a
    device-side assert."""
    global _poisoned
    if config.seed == 1 or _poisoned:
        _poisoned = True
        return failed_trial(config, "error", RuntimeError("CUDA error: device-side assert triggered"), "cpu")
    return executors._worker_trial(config, compile, threads)


def records_its_start(config, compile, threads):
    """A worker that writes when it started each trial (seconds since the epoch) into $STARTS_DIR/<seed>."""
    with open(os.path.join(os.environ["STARTS_DIR"], str(config.seed)), "w") as f:
        f.write(repr(time.time()))
    return failed_trial(config, "error", RuntimeError("not trained"), "cpu")


def statuses(payloads) -> dict[int, str]:
    return {p["config"]["seed"]: p["runs"][0]["status"] for p in payloads}


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_a_worker_that_dies_costs_only_its_own_trial(workers):
    payloads = list(LocalExecutor(["cpu"] * workers, worker=dies_on_seed_1).run([tiny(s) for s in range(4)]))
    assert statuses(payloads) == {0: "ok", 1: "error", 2: "ok", 3: "ok"}
    (dead,) = [p for p in payloads if p["config"]["seed"] == 1]
    assert "worker process died" in dead["runs"][0]["error"]


@pytest.mark.slow
def test_a_sticky_cuda_error_gets_a_fresh_process():
    payloads = list(LocalExecutor(["cpu"], worker=poisons_on_seed_1).run([tiny(s) for s in range(4)]))
    assert statuses(payloads) == {0: "ok", 1: "error", 2: "ok", 3: "ok"}


def test_sticky_errors_are_told_by_their_message():
    config = tiny(0)
    assert is_sticky(failed_trial(config, "error", RuntimeError("CUDA error: an illegal memory access"), "cpu"))
    assert not is_sticky(failed_trial(config, "error", RuntimeError("shape mismatch"), "cpu"))
    assert not is_sticky(failed_trial(config, "oom", RuntimeError("CUDA out of memory"), "cpu"))


def test_a_cuda_error_raised_again_by_the_cleanup_is_recorded_not_raised(monkeypatch):
    """After a sticky CUDA error the next CUDA call (the cleanup's empty_cache) raises too: run_trial still
    returns a payload, so the executor can move the rest to a fresh process. A trial that had failed keeps its
    own error; one that had not becomes an error (the device failed under it), sticky like the cause."""
    from membench.runners import metrics, trial

    def cleanup_fails(device):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(metrics, "end_trial", cleanup_fails)
    after_ok = trial.run_trial(tiny(0))
    assert after_ok["runs"][0]["status"] == "error" and is_sticky(after_ok)
    assert "illegal memory access" in after_ok["runs"][0]["error"]
    assert "cleanup_fails" in after_ok["traceback"]  # shown in full, as any error of a trial is

    def assert_in_training(*args, **kwargs):
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(trial, "train", assert_in_training)
    after_error = trial.run_trial(tiny(0))
    assert after_error["runs"][0]["status"] == "error" and "device-side assert" in after_error["runs"][0]["error"]


def test_the_worker_initialiser_sets_its_cuda_device(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    monkeypatch.setattr(executors, "_worker_device", "cpu")
    free = queue.Queue()
    free.put("cuda:1")
    executors._claim_device(free, 2)
    frozen = gc.get_freeze_count()
    gc.unfreeze()
    assert executors._worker_device == "cuda:1" and calls == [torch.device("cuda:1")]
    assert frozen > 1000  # the worker's imports, out of every trial's garbage collection


def test_trials_in_this_process_run_with_the_heap_before_them_frozen_and_thawed_after(monkeypatch):
    """The in-process path freezes what lives before the sweep (each trial's gc.collect then skips it) and
    unfreezes it when the sweep ends, so a caller's own objects are collectable again."""
    real, frozen = executors.run_trial, []

    def counting(config, *args):
        frozen.append(gc.get_freeze_count())
        return real(config, "cpu")

    monkeypatch.setattr(executors, "run_trial", counting)
    assert gc.get_freeze_count() == 0
    payloads = list(LocalExecutor(["cpu"]).run([tiny(s) for s in range(2)]))
    assert statuses(payloads) == {0: "ok", 1: "ok"}
    assert len(frozen) == 2 and min(frozen) > 1000 and gc.get_freeze_count() == 0
    gc.freeze()  # a caller's own frozen heap stays frozen after the sweep
    try:
        list(LocalExecutor(["cpu"]).run([tiny(0)]))
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()


def _is_frozen(obj) -> bool:
    """gc.get_objects() lists the three generations, not the frozen (permanent) one."""
    return gc.is_tracked(obj) and not any(o is obj for o in gc.get_objects())


def test_what_outlives_a_trial_is_frozen_before_the_next_one(monkeypatch):
    """Objects a trial leaves alive (the modules its first optimizer imports, caches) are frozen when it ends,
    in this process and in a worker, so that the next trial's garbage collection does not walk them."""
    survivors, seen = [], []

    def leaving_a_survivor(config, *args, **kwargs):
        seen.append([_is_frozen(s) for s in survivors])
        survivors.append(["made by trial", config.seed])  # a list: always tracked by the collector
        return failed_trial(config, "error", RuntimeError("not run"), "cpu")

    monkeypatch.setattr(executors, "run_trial", leaving_a_survivor)
    assert gc.get_freeze_count() == 0
    list(LocalExecutor(["cpu"]).run([tiny(s) for s in range(3)]))
    assert seen == [[], [True], [True, True]] and gc.get_freeze_count() == 0  # thawed after the sweep
    try:
        executors._worker_trial(tiny(3), "none", None)
        assert _is_frozen(survivors[-1])
    finally:
        gc.unfreeze()


@pytest.mark.slow
def test_after_a_sticky_error_in_this_process_the_rest_runs_in_a_fresh_worker(monkeypatch):
    """One device: trials run in this process until one poisons it; the rest go to a spawned worker (where
    the real run_trial runs), so they are ok although this process would now fail them all."""
    real, here = executors.run_trial, []

    def in_this_process(config, *args):
        here.append(config.seed)
        if config.seed == 1 or len(here) > 2:  # seed 1 poisons this process: every later trial here fails
            return failed_trial(config, "error", RuntimeError("CUDA error: device-side assert triggered"), "cpu")
        return real(config, "cpu")

    monkeypatch.setattr(executors, "run_trial", in_this_process)
    payloads = list(LocalExecutor(["cpu"]).run([tiny(s) for s in range(4)]))
    assert statuses(payloads) == {0: "ok", 1: "error", 2: "ok", 3: "ok"}
    assert here == [0, 1]  # trials 2 and 3 never ran in this process


@pytest.mark.slow
def test_cpu_workers_give_the_rows_of_a_sequential_run(tmp_path):
    """Two CPU worker processes (one per core) produce the same rows as one process, timings aside."""
    from membench.runners.spec import load_spec
    from membench.runners.sweep import run_sweep
    from tests.helpers import tiny_spec

    spec_file = tiny_spec(tmp_path, {"copy": {"params": {"content_vocab": 4}}}, models=["mlp", "lstm"],
                          lengths=[8, 12], cpu_threads=1)
    sequential = run_sweep(load_spec(None, spec_file, {}), tmp_path / "one", progress=False)
    parallel_spec = load_spec(None, tiny_spec(tmp_path, {"copy": {"params": {"content_vocab": 4}}}, file="two.toml",
                                              models=["mlp", "lstm"], lengths=[8, 12], cpu_threads=1,
                                              cpu_workers=2), {})
    assert parallel_spec.cpu_workers == 2
    parallel = run_sweep(parallel_spec, tmp_path / "two", progress=False)
    same = ["trial_id", "slice", "params", "steps", "accuracy", "exact_match", "loss", "flops_per_step", "status"]
    key = ["trial_id", "slice"]
    pd.testing.assert_frame_equal(sequential[same].sort_values(key).reset_index(drop=True),
                                  parallel[same].sort_values(key).reset_index(drop=True))


@pytest.mark.slow
def test_a_freed_worker_starts_its_next_trial_while_the_sweep_writes_the_last_result(tmp_path, monkeypatch):
    monkeypatch.setenv("STARTS_DIR", str(tmp_path))  # the spawned worker inherits it
    payloads = LocalExecutor(["cpu"], worker=records_its_start).run([tiny(0), tiny(1)])
    next(payloads)
    received = time.time()
    time.sleep(1.0)  # the sweep writing the first result (its trial file and tables)
    list(payloads)
    started = float((tmp_path / "1").read_text())
    assert started < received + 0.5, f"the second trial started {started - received:.2f} s after the first result"
