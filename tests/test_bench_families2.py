"""Benchmarks of the mlstm, hyena and based families, deselected by default. Run them with

    pytest -m benchmark --benchmark-enable tests/test_bench_families2.py

Their step times at T = 256 and 1024 come from `tests/test_bench_models.py`, which runs every family.
Here: Hyena's FFT convolution against its explicit O(T^2) reference at T = 4096, forward + backward of a
whole model (d_model 64, 2 layers, batch 1), both measured in the same run; the FFT path must be at
least 10x faster; and the same for mLSTM's chunked form against its per-token recurrence.
"""

from __future__ import annotations

import time

import pytest
import torch

from membench.models import build_model

pytestmark = pytest.mark.benchmark

VOCAB, D_MODEL, LENGTH = 64, 64, 4096


def step_of(name: str, path: str, batch: int = 1):
    """A closure running forward + backward of family `name` on one (batch, LENGTH) batch on `path`."""
    torch.manual_seed(0)
    model = build_model(name, VOCAB, d_model=D_MODEL, n_layers=2).set_path(path)
    tokens = torch.randint(0, VOCAB, (batch, LENGTH))

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(tokens).logsumexp(-1).mean().backward()

    return step


def seconds(step, rounds: int) -> float:
    """Best wall time of `rounds` calls."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("name,min_speedup", [("hyena", 10.0), ("mlstm", 10.0)])
def test_fast_path_against_the_reference_at_4096(benchmark, capsys, name, min_speedup):
    fast_step, reference_step = step_of(name, "fast"), step_of(name, "reference")
    fast_step()  # warm-up
    benchmark.group = f"{name} forward + backward, T = {LENGTH}, d_model {D_MODEL}, 2 layers"
    benchmark.pedantic(fast_step, rounds=3, warmup_rounds=0)
    fast = seconds(fast_step, 3)
    reference = seconds(reference_step, 1)  # O(T^2) (hyena) or a loop over 4096 tokens (mlstm): once
    benchmark.extra_info.update(fast_seconds=fast, reference_seconds=reference, speedup=reference / fast,
                                threads=torch.get_num_threads())
    with capsys.disabled():
        print(f"\n{name} T={LENGTH}: fast {fast * 1e3:.0f} ms, reference {reference * 1e3:.0f} ms, "
              f"{reference / fast:.1f}x")
    assert reference / fast >= min_speedup
