"""The training step on the device: each compile mode's captured step against eager ("compile <mode>"), fused
AdamW against the plain loop ("fused AdamW"), and, on CUDA, whether each compile-friendly family's step is
captured whole by cuda_graphs at T = 1024 and 4096 ("capture <family> T=<n>").

All of them train a fresh model (seed 0) on associative recall for 3 steps through the runner's own
`step_loss.loss_fn`, `train.make_optimizer` and `step_loss.scored_positions` (`_train_losses`).
"""

from __future__ import annotations

import math
import time

import torch

from membench.memtasks import get_task
from membench.models import build_model, list_models, model_class
from membench.runners import precision, train
from membench.runners.doctor.rows import Check, verdict
from membench.runners.step_loss import gather_capacity, loss_fn, scored_positions


def _train_losses(name: str, device: torch.device, compile: str, steps: int = 3, seq_len: int = 32,
                  batch_size: int = 8, vocab: int = 16, d_model: int = 32) -> tuple[list[float], float]:
    """Losses of `steps` training steps of a fresh model (seed 0) with `compile`, and the first step's seconds."""
    torch.manual_seed(0)
    model = build_model(name, vocab, d_model=d_model, n_layers=2).to(device)
    task = get_task("associative_recall", vocab_size=vocab)
    optimizer = train.make_optimizer(model, 3e-3, 0.1, device)
    step_loss = loss_fn(model, compile, device)
    capacity = gather_capacity(task.sample(batch_size, seq_len, 0, device).targets)
    losses, first = [], math.nan
    for step in range(steps):
        batch = task.sample(batch_size, seq_len, step, device)
        start = time.perf_counter()
        index, picked, _ = scored_positions(batch.targets, capacity)
        loss = step_loss(batch.inputs, index, picked)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step == 0:
            first = time.perf_counter() - start
    return losses, first


def check_compile_modes(device):
    """3 steps of each compile mode the device supports against eager: losses within 1e-4 (fp32) or 2e-2 (bf16)."""
    tol = 2e-2 if precision.choose_precision(device) is not None else 1e-4
    width = 64 if device.type == "cuda" else 16  # inductor's C++ build dominates on the CPU: keep it small
    eager, _ = _train_losses("transformer", device, "none", d_model=width)
    modes = ["torch_compile"] + (["cuda_graphs"] if precision.graphs_supported(device) else [])
    for mode in modes:
        torch.compiler.reset()
        try:
            losses, first = _train_losses("transformer", device, mode, d_model=width)
        finally:
            torch.compiler.reset()
        err = max(abs(a - b) / abs(b) for a, b in zip(losses, eager))
        yield verdict(err <= tol, f"compile {mode}", f"transformer d_model {width}, 3 steps: losses within "
                      f"{err:.1e} of eager (tol {tol:g}); first step {first:.1f} s", "differs from eager")
    if "cuda_graphs" not in modes:
        yield Check("compile cuda_graphs", "skipped", f"needs CUDA with compute capability >= "
                    f"{'.'.join(map(str, precision.GRAPHS_MIN_CAPABILITY))}")


def check_fused_adamw(device):
    """3 steps of fused AdamW against the plain loop, on the same gradients: parameters within 1e-5."""
    torch.manual_seed(0)
    params = [torch.randn(64, 32, device=device), torch.randn(32, device=device)]
    results = []
    for fused in (False, True):
        copies = [p.clone().requires_grad_() for p in params]
        optimizer = torch.optim.AdamW(copies, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1, fused=fused,
                                      foreach=False if not fused else None)
        for step in range(3):
            gen = torch.Generator(device).manual_seed(step)
            for p in copies:
                p.grad = torch.randn(p.shape, generator=gen, device=device)
            optimizer.step()
        results.append(torch.cat([p.detach().flatten() for p in copies]))
    err = (results[0] - results[1]).abs().max().item()
    note = "" if device.type in train.FUSED_ADAMW_DEVICES else " (the runner does not use it on this device)"
    yield verdict(err <= 1e-5, "fused AdamW", f"3 steps: max difference {err:.1e} from the loop (tol 1e-5){note}",
                  "fused AdamW disagrees")


def _dynamo_counts() -> tuple[int, int]:
    """(graph breaks, cudagraph skips) counted by dynamo and inductor since the counters were cleared."""
    from torch._dynamo.utils import counters

    return sum(counters["graph_break"].values()), counters["inductor"]["cudagraph_skips"]


CAPTURE_BUDGET = 240.0  # seconds for all capture rows: past it the remaining ones are skipped, and say so


def check_capture(device):
    """3 cuda_graphs steps per compile-friendly family at T = 1024 and 4096: no graph break, no cudagraph skip."""
    started = time.perf_counter()
    for seq_len in (1024, 4096):
        for name in list_models():
            if not model_class(name).compile_friendly:
                yield Check(f"capture {name} T={seq_len}", "skipped", "not compile-friendly (a loop over tokens or "
                            "a cuDNN RNN): compile = \"auto\" runs it eagerly")
                continue
            if time.perf_counter() - started > CAPTURE_BUDGET:
                yield Check(f"capture {name} T={seq_len}", "skipped", f"over the {CAPTURE_BUDGET:.0f} s budget of "
                            "the capture rows (compile time grows with T for some families)")
                continue
            torch.compiler.reset()
            from torch._dynamo.utils import counters

            counters.clear()
            try:
                losses, first = _train_losses(name, device, "cuda_graphs", seq_len=seq_len, batch_size=8,
                                              vocab=64, d_model=64)
            finally:
                breaks, skips = _dynamo_counts()
                torch.compiler.reset()
            ok = breaks == 0 and skips == 0 and all(math.isfinite(x) for x in losses)
            yield verdict(ok, f"capture {name} T={seq_len}", f"3 cuda_graphs steps: {breaks} graph breaks, "
                          f"{skips} cudagraph skips; first step (compile) {first:.1f} s",
                          "not captured whole")
