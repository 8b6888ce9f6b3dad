"""Evaluation benchmark, deselected by default. Run it with

    pytest -m benchmark --benchmark-enable tests/test_bench_eval.py -s

flip-flop's evaluation of many sequences at length 512 through a 2-layer width-64 transformer
(`metrics.evaluate`: generation on the device, forward, head at the scored reads, counts kept on the
device) timed against the bare forward passes over the same sequences, generated beforehand, in one run.
Target: within 1.5x. On CUDA 1e5 sequences; on a CPU 512 (the ratio, not the total, is the figure).
"""

from __future__ import annotations

import time

import pytest
import torch

from membench.memtasks import eval_seed, get_task
from membench.models import build_model
from membench.runners import metrics

pytestmark = pytest.mark.benchmark

LENGTH, BATCH = 512, 256
SEQUENCES = {"cpu": 512, "cuda": 100_000}
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                                   reason="needs CUDA")])]


@pytest.mark.parametrize("device", DEVICES)
def test_flip_flop_evaluation_is_bounded_by_the_forward_pass(benchmark, capsys, device):
    device = torch.device(device)
    n = SEQUENCES[device.type]
    task = get_task("flip_flop")
    torch.manual_seed(0)
    model = build_model("transformer", task.vocab_size, d_model=64, n_layers=2).to(device).eval()
    batches = [task.sample(min(BATCH, n - s), LENGTH, eval_seed(0, i), device).inputs
               for i, s in enumerate(range(0, n, BATCH))]

    @torch.no_grad()
    def bare() -> None:
        with metrics.autocast(device):
            for inputs in batches:
                model(inputs)
        metrics.synchronize(device)

    def evaluate() -> None:
        metrics.evaluate(model, task, LENGTH, n, BATCH, 0, device)
        metrics.synchronize(device)

    bare()  # warm-up of both paths
    evaluate()
    rounds = [(_seconds(bare), _seconds(evaluate)) for _ in range(2)]  # interleaved, same load
    forward, full = min(r[0] for r in rounds), min(r[1] for r in rounds)
    benchmark.group = "flip_flop evaluation vs bare forward"
    benchmark.pedantic(evaluate, rounds=1, iterations=1)
    benchmark.extra_info.update(sequences=n, forward_seconds=forward, evaluate_seconds=full, ratio=full / forward)
    with capsys.disabled():
        print(f"\nflip_flop eval of {n:,} x {LENGTH} on {device.type}: {full:.2f} s; bare forward passes "
              f"{forward:.2f} s; ratio {full / forward:.2f}")
    assert full <= 1.5 * forward


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
