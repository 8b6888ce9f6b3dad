"""Benchmark: the chunked forms of gla and log_linear against their per-token references, forward + backward,
on one CPU thread. Deselected by default; run with

    pytest -m benchmark --benchmark-enable tests/test_bench_families_2025_gated.py -s

Setting (the issue's): T = 2048, B = 4, H = 4, N = P = 32, float32, one torch thread (tests/conftest.py), each
kernel at its family's default chunk (gla 16, log_linear 64). gla's log-gates are logsigmoid(normal) / 16, as
its layer makes them; log_linear has log-decays in [-0.1, 0] and lambdas in [0, 1) for every level. Both paths are
timed in the same test, in CPU time of this process (`time.process_time`: the work done, which a busy shared
machine inflates far less than wall time), min of ROUNDS for the chunked form and one run of the reference (it is
the slow one). The issue's target is a speed-up of SPEED_UP_TARGET; the test asserts it and reports the ratio.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from membench.models.families.gla import gated_scan_chunked, gated_scan_reference
from membench.models.scan_log_linear import levels, log_linear_chunked, log_linear_reference
from tests.helpers import forward_backward_seconds

pytestmark = pytest.mark.benchmark

BATCH, LENGTH, HEADS, WIDTH = 4, 2048, 4, 32
ROUNDS = 3
SPEED_UP_TARGET = 5.0


def gla_inputs(gen: torch.Generator) -> list[torch.Tensor]:
    shape = (BATCH, LENGTH, HEADS, WIDTH)
    q, k, v = (torch.randn(shape, generator=gen) for _ in range(3))
    return [q, k, v, F.logsigmoid(torch.randn(shape, generator=gen)) / 16]


def log_linear_inputs(gen: torch.Generator) -> list[torch.Tensor]:
    shape = (BATCH, LENGTH, HEADS, WIDTH)
    q, k, v = (torch.randn(shape, generator=gen) for _ in range(3))
    log_decay = -0.1 * torch.rand(BATCH, LENGTH, HEADS, generator=gen)
    return [q, k, v, log_decay, torch.rand(BATCH, LENGTH, HEADS, levels(LENGTH), generator=gen)]


KERNELS = {
    "gla": (gla_inputs, lambda *a: gated_scan_chunked(*a, chunk_size=16), gated_scan_reference),
    "log_linear": (log_linear_inputs, lambda *a: log_linear_chunked(*a, chunk_size=64), log_linear_reference),
}


@pytest.mark.parametrize("name", list(KERNELS))
def test_chunked_form_against_the_token_loop_at_2048(benchmark, name):
    make_inputs, chunked, reference = KERNELS[name]
    inputs = make_inputs(torch.Generator().manual_seed(0))
    forward_backward_seconds(chunked, inputs)  # warm-up: allocations
    chunked_s = min(forward_backward_seconds(chunked, inputs) for _ in range(ROUNDS))
    reference_s = forward_backward_seconds(reference, inputs)
    ratio = reference_s / chunked_s
    benchmark.extra_info.update(reference_s=reference_s, chunked_s=chunked_s, speed_up=ratio,
                                target=SPEED_UP_TARGET, threads=torch.get_num_threads())
    benchmark.pedantic(forward_backward_seconds, args=(chunked, inputs), rounds=1, warmup_rounds=0)
    print(f"\n{name}, T = {LENGTH}, {torch.get_num_threads()} thread(s): reference {reference_s:.2f} s, "
          f"chunked {chunked_s:.3f} s (CPU time): {ratio:.1f}x (target {SPEED_UP_TARGET:.0f}x)")
    assert ratio >= SPEED_UP_TARGET, f"chunked {chunked_s:.3f} s, reference {reference_s:.2f} s: {ratio:.1f}x"
