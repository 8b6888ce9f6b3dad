"""Which number format a trial computes in, and whether its training step may be replayed as CUDA graphs.

One rule for every place that opens an autocast region (training, evaluation, the cost curves):

    device                                   precision   why
    cpu                                      fp32        CPU autocast gives tiny models no speed, only noise
    cuda, bf16 in hardware (sm_80+: A100,    bf16        same range as fp32, so no loss scaling is needed
      H100, L4, RTX 30xx/40xx)
    cuda, no bf16 in hardware (T4, V100)     fp32        bf16 would be emulated (slow) and Triton refuses it
                                                         (".bf16 requires sm_80"); fp16 would fit the
                                                         hardware but overflows without a GradScaler,
                                                         which the training loop does not have

`choose_precision` returns the autocast dtype, or None for plain fp32 (no autocast at all, so fp32 results
are bit-for-bit what they were before autocast existed). `precision_name` is the label stored with results.

    >>> choose_precision(torch.device("cpu")) is None
    True
    >>> precision_name(torch.device("cpu"))
    'fp32'

`compile = "cuda_graphs"` (torch.compile's reduce-overhead mode) needs a CUDA device of compute capability
8.0 or newer: `check_compile` refuses it elsewhere with a one-line ConfigError, and `graphs_supported` is
what `compile = "auto"` asks before choosing it. Below sm_80 the captured step goes through Triton kernels
that membench has never run there (and the bf16 ones cannot compile); eager or torch_compile still work.
"""

from __future__ import annotations

import torch

from membench.checks import ConfigError

GRAPHS_MIN_CAPABILITY = (8, 0)  # the oldest compute capability on which membench replays CUDA graphs


def _has_bf16(index: int) -> bool:
    """True when CUDA device `index` computes bf16 in hardware (asked of the driver: call it outside what
    torch.compile captures, as runners.step_loss.loss_fn does)."""
    with torch.cuda.device(index):
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def choose_precision(device: torch.device) -> torch.dtype | None:
    """The autocast dtype for work on `device`: bf16 on a CUDA device with bf16 in hardware, else None (fp32).

    fp16 is never chosen: it would need a GradScaler (see the module doc).
    """
    if device.type == "cuda" and _has_bf16(_index(device)):
        return torch.bfloat16
    return None


def precision_name(device: torch.device) -> str:
    """'bf16' or 'fp32': the precision `choose_precision` picks for `device`, as recorded with results."""
    return "bf16" if choose_precision(device) == torch.bfloat16 else "fp32"


def graphs_supported(device: torch.device) -> bool:
    """True when `compile = "cuda_graphs"` can run on `device` (CUDA, compute capability >= 8.0)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return tuple(torch.cuda.get_device_capability(_index(device))) >= GRAPHS_MIN_CAPABILITY


def check_compile(compile: str, device: torch.device) -> str:
    """`compile` if it can run on `device`; ConfigError for cuda_graphs where it cannot (see the module doc)."""
    if compile != "cuda_graphs" or graphs_supported(device):
        return compile
    if device.type != "cuda":
        raise ConfigError(f"compile cuda_graphs needs a CUDA device, got {device}; use none, auto or torch_compile")
    major, minor = torch.cuda.get_device_capability(_index(device))
    low, high = GRAPHS_MIN_CAPABILITY
    raise ConfigError(f"compile cuda_graphs needs a CUDA device of compute capability >= {low}.{high}, "
                      f"{device} has {major}.{minor} ({torch.cuda.get_device_name(device)}); "
                      f"use none, auto or torch_compile")
