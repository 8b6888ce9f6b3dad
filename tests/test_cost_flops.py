"""The FLOPs a cost row reports against torch's FlopCounterMode on every family's explicit path.

A cost row holds 3x the analytic forward FLOPs (forward + backward). The length is twice the width, so
the T^2 terms of attention weigh as much as the linear ones and a wrong one shows. (The model contract
tests check `model.flops` itself at other shapes.)
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from membench.models import build_model, list_models
from membench.runners.cost.measure import VOCAB_SIZE, CostConfig, measure_point


@pytest.mark.parametrize("name", list_models())
def test_cost_row_flops_match_the_reference_path(name, monkeypatch):
    batch, seq_len = 2, 32
    torch.manual_seed(0)
    model = build_model(name, VOCAB_SIZE, d_model=16, n_layers=2).set_path("reference")
    with FlopCounterMode(display=False) as counter:
        model(torch.randint(0, VOCAB_SIZE, (batch, seq_len)))
    counted = counter.get_total_flops()
    # FLOPs only: no step is run
    monkeypatch.setattr("membench.runners.cost.measure.make_step", lambda *args: lambda: None)
    config = CostConfig(models=(name,), lengths=(seq_len,), batch_tokens=batch * seq_len)
    row, _ = measure_point(model, name, seq_len, config, torch.device("cpu"))
    assert row["batch_size"] == batch
    assert abs(row["flops"] - 3 * counted) <= 0.05 * 3 * counted, f"{name}: {row['flops']} vs 3 x {counted}"
    assert 0 <= row["attention_flops"] <= row["flops"]
    if model.cost_class == "O(n^2)":
        assert row["attention_flops"] > 0
