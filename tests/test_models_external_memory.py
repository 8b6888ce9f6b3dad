"""external_memory (NTM-style): addressing weights, hand-computed reads and writes, state size, and a compiled
step that matches eager."""

from __future__ import annotations

import math

import pytest
import torch

from membench.models import build_model
from membench.models.families.external_memory import content_addressing, write_memory

SHAPES = [(2, 64, 4, 16), (1, 1, 2, 8), (3, 37, 2, 8), (2, 100, 1, 4), (1, 130, 4, 8), (2, 5, 3, 4)]
SHAPE_IDS = [f"B{b}-T{t}-H{h}-D{d}" for b, t, h, d in SHAPES]
CHUNK = 16  # so that the table has T < C, T = k C and T = k C + r



# --- external memory ------------------------------------------------------------------------------
def test_addressing_weights_are_distributions():
    torch.manual_seed(0)
    memory, keys = torch.randn(3, 7, 5), torch.randn(3, 2, 5)
    beta = 1 + torch.rand(3, 2) * 10
    weights = content_addressing(memory, keys, beta)
    assert weights.shape == (3, 2, 7) and (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2))
    # an empty memory is addressed uniformly, with finite gradients
    empty = torch.zeros(1, 4, 5, requires_grad=True)
    weights = content_addressing(empty, keys[:1], beta[:1])
    torch.testing.assert_close(weights, torch.full((1, 2, 4), 0.25))
    weights[0, 0, 0].backward()
    assert torch.isfinite(empty.grad).all()


def test_addressing_hand_computed():
    memory = torch.tensor([[[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]]])  # (1, N=3, W=2)
    key, beta = torch.tensor([[[5.0, 0.0]]]), torch.tensor([[2.0]])
    # cosine similarities 1, 0, 1/sqrt(2); weights softmax(2 * sims)
    logits = torch.tensor([2.0, 0.0, 2 / math.sqrt(2)])
    expected = logits.exp() / logits.exp().sum()
    torch.testing.assert_close(content_addressing(memory, key, beta)[0, 0], expected)


def test_write_hand_computed():
    memory = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (1, N=2, W=2)
    weights, erase, add = torch.tensor([[0.25, 0.75]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, -1.0]])
    # M * (1 - w e^T) = [[0.75, 2], [0.75, 4]];  w a^T = [[0.5, -0.25], [1.5, -0.75]]
    expected = torch.tensor([[[1.25, 1.75], [2.25, 3.25]]])
    torch.testing.assert_close(write_memory(memory, weights, erase, add), expected)
    # the docstring's worked example: slot 0 fully erased and overwritten, slot 1 untouched
    torch.testing.assert_close(
        write_memory(
            torch.tensor([[[1.0], [0.0]]]), torch.tensor([[1.0, 0.0]]), torch.ones(1, 1), torch.full((1, 1), 5.0)
        ),
        torch.tensor([[[5.0], [0.0]]]),
    )


def test_external_memory_state_size():
    model = build_model("external_memory", 16, d_model=64, n_layers=2, num_slots=32, slot_size=16, num_reads=2)
    # per layer: memory 32 * 16 + controller h, c 2 * 64 + reads 2 * 16
    assert model.state_size(10) == model.state_size(10_000) == 2 * (32 * 16 + 2 * 64 + 2 * 16)
    with pytest.raises(ValueError, match="num_slots"):
        build_model("external_memory", 16, num_slots=0)
    with pytest.raises(ValueError, match="compile"):
        build_model("external_memory", 16, compile="yes")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiling the step takes tens of seconds on CPU; CUDA only")
def test_compiled_step_matches_eager():
    tokens = torch.randint(0, 16, (4, 20), device="cuda")
    outputs = []
    for compile_step in (False, True):
        torch.manual_seed(0)
        model = build_model("external_memory", 16, d_model=32, compile=compile_step).to("cuda")
        outputs.append(model(tokens))
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-4, rtol=1e-4)
