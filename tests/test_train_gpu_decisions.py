"""The decisions the training loop makes for a GPU, tested on the CPU (CUDA capabilities mocked where needed).

Each test checks a choice rather than a kernel: which precision the state readout keeps, which device the
evaluation sets are drawn on, which compile mode a family gets, what peak memory is measured from, and
that dynamo's cache is reset between trials.
"""

from __future__ import annotations

import pytest
import torch

from membench.models.scan import scan_chunked, scan_reference


# --- the scan's state readout under bf16 autocast --------------------------------------------
@pytest.mark.parametrize("scan", [scan_chunked, scan_reference], ids=["chunked", "reference"])
def test_scan_readout_keeps_float32_under_bf16_autocast(scan):
    """Linear attention's normaliser (the last value column, v = 1) sums every earlier token; read out in
    bf16 it is off by ~1% at T = 4096, in float32 by ~0.03%."""
    torch.manual_seed(0)
    batch, seq_len, heads, n, p = 1, 4096, 1, 8, 4
    q, k = torch.rand(batch, seq_len, heads, n), torch.rand(batch, seq_len, heads, n)  # positive features
    v = torch.randn(batch, seq_len, heads, p)
    v[..., -1] = 1.0  # the normaliser column
    exact = scan_reference(q.double(), k.double(), v.double())  # (B, T, H, P) float64 ground truth
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = scan(q, k, v)  # (B, T, H, P)
    assert out.dtype == torch.float32
    late = slice(seq_len // 2, None)
    error = ((out.double() - exact).abs() / exact.abs())[:, late, :, -1].max()
    assert error < 2e-3, f"normaliser relative error {float(error):.2e} at T={seq_len}"
