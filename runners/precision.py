"""Which number format a trial computes in: one rule for every place that opens an autocast region.

    device                                   precision   why
    cpu                                      fp32        CPU autocast gives tiny models no speed, only noise
    cuda with bf16 in hardware (sm_80+)      bf16        fp32's range, so no loss scaling is needed
    cuda without (T4, V100)                  fp32        bf16 would be emulated (slow) and Triton refuses it;
                                                         fp16 would overflow without a GradScaler

`choose_precision` returns the autocast dtype, or None for plain fp32 (no autocast at all);
`precision_name` is the label stored with results (runs.csv `precision`).

    >>> choose_precision(torch.device("cpu")) is None
    True
    >>> precision_name(torch.device("cpu"))
    'fp32'
"""

from __future__ import annotations

import torch


def choose_precision(device: torch.device) -> torch.dtype | None:
    """bf16 on a CUDA device that computes bf16 in hardware, else None (fp32)."""
    if device.type != "cuda":
        return None
    with torch.cuda.device(device):
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else None


def precision_name(device: torch.device) -> str:
    """'bf16' or 'fp32': the precision `choose_precision` picks for `device`, as recorded with results."""
    return "bf16" if choose_precision(device) == torch.bfloat16 else "fp32"
