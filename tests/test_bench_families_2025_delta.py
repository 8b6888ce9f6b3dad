"""Benchmarks of the chunked forms of kda and gated_deltaproduct against their token loops, deselected by default.
Run them with

    pytest -m benchmark --benchmark-enable tests/test_bench_families_2025_delta.py

One forward + backward pass of the recurrence alone at T = 2048 tokens (B = 8, H = 4, head width 32), with one
torch thread (CPU time, which a busy shared machine inflates far less than wall time), both forms measured in the
same run. The issue's target: the chunked form at least SPEED_UP_TARGET times faster than its token loop at the
family's default chunk size. rwkv7 has no chunked form (its loop is its only path), so nothing to compare.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from membench.models import family_params
from membench.models.scan import delta_rule_chunked, delta_rule_reference
from membench.models.scan_vector_decay import MIN_LOG_DECAY, vector_decay_delta_chunked, vector_decay_delta_reference
from tests.helpers import best_seconds, forward_backward_seconds

pytestmark = pytest.mark.benchmark

BATCH, LENGTH, HEADS, WIDTH = 8, 2048, 4, 32
ROUNDS = 2
SPEED_UP_TARGET = 5.0


def kda_inputs() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    shape = (BATCH, LENGTH, HEADS, WIDTH)
    q, v = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    k = F.normalize(torch.randn(shape, generator=gen), dim=-1)
    beta = 2 * torch.rand(BATCH, LENGTH, HEADS, generator=gen)
    log_decay = 0.1 * MIN_LOG_DECAY * torch.rand(shape, generator=gen)
    return [q, k, v, beta, log_decay]


def deltaproduct_inputs(steps: int) -> list[torch.Tensor]:
    """The interleaved sequence of T n_h steps that gated_deltaproduct hands to the delta rule."""
    gen = torch.Generator().manual_seed(0)
    shape = (BATCH, LENGTH * steps, HEADS, WIDTH)
    q, v = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    k = F.normalize(torch.randn(shape, generator=gen), dim=-1)
    beta = 2 * torch.rand(BATCH, LENGTH * steps, HEADS, generator=gen)
    log_decay = -0.1 * torch.rand(BATCH, LENGTH * steps, HEADS, generator=gen)
    return [q, k, v, beta, log_decay]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cases():
    steps, kda_chunk = family_params("gated_deltaproduct")["n_householder"], family_params("kda")["chunk_size"]
    product_chunk = family_params("gated_deltaproduct")["chunk_size"]
    return [
        pytest.param("kda", vector_decay_delta_reference,
                     lambda *a: vector_decay_delta_chunked(*a, chunk_size=kda_chunk), kda_inputs, id="kda"),
        pytest.param("gated_deltaproduct", delta_rule_reference,
                     lambda *a: delta_rule_chunked(*a, chunk_size=product_chunk),
                     lambda: deltaproduct_inputs(steps), id="gated_deltaproduct"),
    ]


@pytest.mark.parametrize("name,reference,chunked,make_inputs", cases())
def test_chunked_form_against_the_token_loop(benchmark, capsys, one_thread, name, reference, chunked, make_inputs):
    inputs = make_inputs()
    reference_s, chunked_s = best_seconds(reference, chunked, inputs, ROUNDS)  # CPU time: one thread
    ratio = reference_s / chunked_s
    benchmark.extra_info.update(reference_s=reference_s, chunked_s=chunked_s, speed_up=ratio,
                                target=SPEED_UP_TARGET)
    benchmark.pedantic(forward_backward_seconds, args=(chunked, inputs), rounds=1, warmup_rounds=0)
    with capsys.disabled():
        print(f"\n{name} T={LENGTH}, 1 thread: reference {reference_s:.2f} s, chunked {chunked_s:.3f} s "
              f"(CPU time): {ratio:.1f}x (target {SPEED_UP_TARGET:.0f}x)")
    assert ratio >= SPEED_UP_TARGET, f"{name}: {ratio:.1f}x < {SPEED_UP_TARGET}"
