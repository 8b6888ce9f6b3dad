"""The precision and capture decisions per device, with CUDA capabilities mocked (no GPU needed)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from membench.checks import ConfigError
from membench.runners import metrics, precision
from membench.runners.executors import make_executor
from membench.runners.precision import check_compile, choose_precision, graphs_supported, precision_name
from membench.runners.step_loss import loss_fn

GPUS = {  # name -> (compute capability, bf16 in hardware)
    "Tesla T4": ((7, 5), False),
    "Tesla V100-SXM2-16GB": ((7, 0), False),
    "NVIDIA A100-SXM4-80GB": ((8, 0), True),
    "NVIDIA H100 80GB HBM3": ((9, 0), True),
}


@pytest.fixture
def fake_gpu(monkeypatch):
    """fake_gpu(name): torch.cuda reports one GPU with that name's capabilities."""

    def install(name: str) -> None:
        capability, bf16 = GPUS[name]
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "device", lambda index: contextlib.nullcontext())
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                            lambda including_emulation=True: bf16 or including_emulation)  # emulation: always

    return install


def test_the_cpu_computes_in_fp32_without_autocast():
    cpu = torch.device("cpu")
    assert choose_precision(cpu) is None and precision_name(cpu) == "fp32"
    assert isinstance(metrics.autocast(cpu), contextlib.nullcontext)
    assert not graphs_supported(cpu)


@pytest.mark.parametrize("name,expected", [("Tesla T4", None), ("Tesla V100-SXM2-16GB", None),
                                           ("NVIDIA A100-SXM4-80GB", torch.bfloat16),
                                           ("NVIDIA H100 80GB HBM3", torch.bfloat16)])
def test_bf16_only_where_the_hardware_has_it(fake_gpu, name, expected):
    fake_gpu(name)
    cuda = torch.device("cuda")
    assert choose_precision(cuda) is expected
    assert precision_name(torch.device("cuda:0")) == ("bf16" if expected else "fp32")
    region = metrics.autocast(cuda)
    if expected is None:
        assert isinstance(region, contextlib.nullcontext)  # fp32, not fp16: there is no GradScaler
    else:
        assert isinstance(region, torch.autocast) and region.fast_dtype == torch.bfloat16


def test_cuda_graphs_are_refused_on_the_cpu_and_before_ampere(fake_gpu):
    with pytest.raises(ConfigError, match="needs a CUDA device, got cpu"):
        check_compile("cuda_graphs", torch.device("cpu"))
    fake_gpu("Tesla T4")
    with pytest.raises(ConfigError, match=r"compute capability >= 8\.0, cuda:0 has 7\.5 \(Tesla T4\)"):
        check_compile("cuda_graphs", torch.device("cuda:0"))
    with pytest.raises(ConfigError, match="compute capability"):
        make_executor("local", "cuda", "cuda_graphs")  # before any output directory exists
    assert check_compile("torch_compile", torch.device("cuda")) == "torch_compile"
    assert check_compile("none", torch.device("cpu")) == "none"


def test_auto_compile_follows_the_hardware(fake_gpu, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: calls.append(kwargs) or fn)
    from membench.models import build_model

    model = build_model("mlp", 16, d_model=8, n_layers=1)
    fake_gpu("Tesla T4")
    loss_fn(model, "auto", torch.device("cuda"))
    assert calls == []  # eager on a T4
    with pytest.raises(ConfigError, match="compute capability"):
        loss_fn(model, "cuda_graphs", torch.device("cuda"))
    fake_gpu("NVIDIA H100 80GB HBM3")
    assert check_compile("cuda_graphs", torch.device("cuda")) == "cuda_graphs"
    loss_fn(model, "auto", torch.device("cuda"))
    assert calls == [{"mode": "reduce-overhead"}]


def test_the_training_forward_chooses_its_precision_before_any_capture(fake_gpu, monkeypatch):
    """loss_fn asks for the precision once, when it builds the forward, never inside it: inside, torch.compile
    would capture the question to the CUDA driver (a graph break, or torch._dynamo imported at start-up to
    declare it a constant)."""
    from membench.models import build_model

    fake_gpu("NVIDIA H100 80GB HBM3")
    asked = []
    for module in (precision, metrics):
        monkeypatch.setattr(module, "choose_precision", lambda device: asked.append(device))
    forward = loss_fn(build_model("mlp", 16, d_model=8, n_layers=1), "none", torch.device("cuda"))
    assert len(asked) == 1
    inputs = torch.randint(0, 16, (2, 8))
    index, picked = torch.tensor([3, 11]), torch.tensor([5, 7])
    for _ in range(2):
        assert torch.isfinite(forward(inputs, index, picked))
    assert len(asked) == 1
