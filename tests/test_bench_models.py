"""Step-time benchmarks: forward + backward of every registered family at a fixed number of tokens per batch.

    pytest -m benchmark --benchmark-enable tests/test_bench_models.py --benchmark-columns=min,median,max,rounds

Setting: d_model 128, 2 layers, vocabulary 64, the fast path, cross-entropy on every position,
batch = tokens // length. On CUDA: 32768 tokens per batch, lengths 256 / 1024 / 4096, bf16 autocast.
On CPU (fp32) a feasible subset: 8192 tokens per batch, lengths 256 and 1024, and a combination
whose first (warm-up) step takes longer than CPU_STEP_BUDGET_S is skipped with its time in the reason.
Deselected by default (marker `benchmark`); CUDA variants skip cleanly without a GPU.
"""

from __future__ import annotations

import time

import pytest
import torch

from membench.models import build_model, list_models

pytestmark = pytest.mark.benchmark

D_MODEL, N_LAYERS, VOCAB = 128, 2, 64
TOKENS = {"cpu": 8192, "cuda": 32768}
LENGTHS = {"cpu": (256, 1024), "cuda": (256, 1024, 4096)}
CPU_STEP_BUDGET_S = 10.0
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

CASES = [pytest.param(name, n, "cpu", id=f"{name}-T{n}-cpu") for name in list_models() for n in LENGTHS["cpu"]] + [
    pytest.param(name, n, "cuda", id=f"{name}-T{n}-cuda", marks=[pytest.mark.gpu, CUDA])
    for name in list_models()
    for n in LENGTHS["cuda"]
]


def make_step(name: str, seq_len: int, device: str):
    """The model and a closure running one forward + backward pass of family `name` on a
    (TOKENS[device] // seq_len, seq_len) batch; the closure returns the loss."""
    torch.manual_seed(0)
    model = build_model(name, VOCAB, d_model=D_MODEL, n_layers=N_LAYERS).to(device)
    shape = (TOKENS[device] // seq_len, seq_len)
    tokens = torch.randint(0, VOCAB, shape, device=device)
    targets = torch.randint(0, VOCAB, shape, device=device)
    use_bf16 = device == "cuda"

    def step() -> float:
        model.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(tokens)  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        return loss.item()

    return model, step


@pytest.mark.parametrize("name,seq_len,device", CASES)
def test_step_time(benchmark, name, seq_len, device):
    model, step = make_step(name, seq_len, device)
    start = time.perf_counter()
    loss = step()  # warm-up: allocations, kernel selection
    warm_up_s = time.perf_counter() - start
    if device == "cpu" and warm_up_s > CPU_STEP_BUDGET_S:
        pytest.skip(f"{name} at length {seq_len}: one CPU step took {warm_up_s:.1f}s > {CPU_STEP_BUDGET_S}s")
    assert torch.isfinite(torch.tensor(loss))
    assert all(p.grad is not None for p in model.parameters())
    benchmark.extra_info.update(family=name, seq_len=seq_len, batch=TOKENS[device] // seq_len, device=device,
                                params=model.num_params(), threads=torch.get_num_threads())
    benchmark.pedantic(step, rounds=3 if device == "cpu" else 10, warmup_rounds=0 if device == "cpu" else 2)
