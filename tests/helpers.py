"""Helpers shared by test modules."""

import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch

# parametrise a test over devices: CUDA variants run when CUDA is present and skip cleanly otherwise
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
    ),
]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Run `membench ARGV` in-process: (exit code, stdout, stderr)."""
    from membench.runners.cli import main

    try:
        code = main(list(argv))
    except SystemExit as stop:  # argparse exits on its own errors
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def outputs_and_grads(forward, inputs, params=()) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`forward(*inputs)` and the gradients, for a fixed cotangent (a ramp over the output), of every float
    input that requires grad and every tensor in `params` (None inputs are passed through)."""
    out = forward(*inputs)
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out)
    leaves = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad] + list(params)
    grads = torch.autograd.grad((out * weight).sum(), leaves, allow_unused=True)
    return out.detach(), [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads)]


def assert_same_outputs_and_grads(forward_a, forward_b, inputs, params=(), atol=1e-9, rtol=1e-7) -> None:
    """Two computations of one function agree in outputs and in every gradient (see outputs_and_grads)."""
    out_a, grads_a = outputs_and_grads(forward_a, inputs, params)
    out_b, grads_b = outputs_and_grads(forward_b, inputs, params)
    torch.testing.assert_close(out_a, out_b, atol=atol, rtol=rtol)
    for g_a, g_b in zip(grads_a, grads_b):
        torch.testing.assert_close(g_a, g_b, atol=atol, rtol=rtol)


def assert_paths_agree(module: torch.nn.Module, *inputs, atol=1e-9, rtol=1e-7) -> None:
    """A mixer's or model's fast and reference paths agree in outputs and in the gradients of its float
    inputs and of every parameter. Float inputs are made leaves that require grad; token inputs are not."""
    inputs = [t.detach().clone().requires_grad_(True) if t.is_floating_point() else t for t in inputs]

    def on(path):
        def forward(*args):
            for m in module.modules():
                if hasattr(m, "path"):
                    m.path = path
            return module(*args)
        return forward

    assert_same_outputs_and_grads(on("fast"), on("reference"), inputs, list(module.parameters()), atol, rtol)


TINY = {"lengths": [8], "seeds": [0], "d_model": 16, "n_layers": 1, "steps": 10, "batch_size": 8,
        "eval_every": 5, "eval_multipliers": [2], "eval_sequences": 16}  # a sweep that runs in seconds


# the same, smaller, as spec text, for tests that edit, corrupt or append to it: one mlp trial of 4 steps
MICRO_SETTINGS = """
models = ["mlp"]
lengths = [8]
seeds = [0]
d_model = 16
n_layers = 1
steps = 4
batch_size = 4
eval_every = 4
eval_multipliers = [2]
eval_sequences = 8
"""
MICRO_COPY = """
[tasks.copy]
params = { content_vocab = 4 }
"""


def tiny_spec(directory, task_tables: dict | None = None, file: str = "spec.toml", **settings) -> str:
    """Write a tiny sweep spec into `directory` and return its path: TINY's settings overridden by
    `settings` (None drops a key), and one table per entry of `task_tables` ({"copy": {"params": {...}}})."""
    def value(v) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(v)

    lines = [f"{k} = {value(v)}" for k, v in {**TINY, **settings}.items() if v is not None]
    for name, table in (task_tables or {}).items():
        lines += [f"[tasks.{name}]", *(f"{k} = {value(v)}" for k, v in table.items())]
    path = Path(directory) / file
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(autouse=True)
def undo_plugin_side_effects(monkeypatch):
    """Plugins put folders on sys.path and in the environment (so worker processes see them too): a test module
    that imports this autouse fixture gets both restored after each test."""
    from membench.plugins import INCLUDE_ENV

    monkeypatch.setattr(sys, "path", list(sys.path))
    for var in ("PYTHONPATH", INCLUDE_ENV):
        old = os.environ.get(var)
        monkeypatch.setenv(var, old or "")  # records the value to restore, absent included
        if old is None:
            monkeypatch.delenv(var)


def counted_flops(module: torch.nn.Module, *args) -> int:
    """FLOPs that torch's FlopCounterMode counts for `module(*args)`."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        module(*args)
    return counter.get_total_flops()


# --- timing a fast path against its reference (the benchmarks) -------------------------------------------------
def forward_backward_seconds(fn, inputs: list[torch.Tensor | None]) -> float:
    """Seconds for one forward + backward pass of `fn` on fresh leaves made from `inputs`: CPU time of this
    process with one torch thread (the work done, which a busy shared machine inflates far less than wall
    time), wall time with more."""
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    leaves = [None if x is None else x.clone().requires_grad_(True) for x in inputs]
    start = clock()
    fn(*leaves).square().mean().backward()
    return clock() - start


def best_wall_seconds(fn, rounds: int) -> float:
    """Best wall time of `rounds` calls of `fn` after one warm-up call."""
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def best_seconds(reference, fast, inputs: list[torch.Tensor | None], rounds: int) -> tuple[float, float]:
    """(reference, fast): the best of `rounds` forward + backward passes of each, alternating in one run (so a
    drift of the machine's speed slows both alike), after one untimed pass of `fast` (allocations)."""
    forward_backward_seconds(fast, inputs)
    reference_s, fast_s = [], []
    for _ in range(rounds):
        reference_s.append(forward_backward_seconds(reference, inputs))
        fast_s.append(forward_backward_seconds(fast, inputs))
    return min(reference_s), min(fast_s)
