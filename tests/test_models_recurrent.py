"""The recurrent families: rnn_attention's paths, the per-step reference against torch's RNN/LSTM/GRU, FLOPs and
initialisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from membench.models import build_model
from membench.models.families.recurrent import recurrent_reference
from membench.models.families.rnn_attention import LSTMAttention
from tests.helpers import assert_paths_agree, assert_same_outputs_and_grads, counted_flops

SHAPES = [(2, 64, 4, 16), (1, 1, 2, 8), (3, 37, 2, 8), (2, 100, 1, 4), (1, 130, 4, 8)]
SHAPE_IDS = [f"B{b}-T{t}-H{h}-D{d}" for b, t, h, d in SHAPES]
VOCAB = 16


# --- rnn_attention and the recurrent reference -----------------------------------------------------
@pytest.mark.parametrize("batch,seq_len,heads,head_dim", SHAPES, ids=SHAPE_IDS)
def test_lstm_attention_paths_agree(batch, seq_len, heads, head_dim):
    torch.manual_seed(0)
    mixer = LSTMAttention(heads * head_dim, heads).double()
    assert_paths_agree(mixer, torch.randn(batch, seq_len, heads * head_dim, dtype=torch.float64))


def test_lstm_attention_state_and_flops():
    mixer = LSTMAttention(16, 2).double()
    mixer.path = "reference"
    assert counted_flops(mixer, torch.randn(2, 11, 16, dtype=torch.float64)) == mixer.flops(2, 11)
    assert mixer.state_size(100) == 2 * 100 * 16 + 2 * 16


@pytest.mark.parametrize("kind,module", [("rnn", nn.RNN), ("lstm", nn.LSTM), ("gru", nn.GRU)])
@pytest.mark.parametrize("batch,seq_len,width", [(2, 1, 8), (3, 17, 16), (1, 64, 4)], ids=lambda v: str(v))
def test_recurrent_reference_equals_torch_layer(kind, module, batch, seq_len, width):
    torch.manual_seed(0)
    rnn = module(width, width, batch_first=True).double()
    x = torch.randn(batch, seq_len, width, dtype=torch.float64)
    assert_same_outputs_and_grads(lambda t: rnn(t)[0], lambda t: recurrent_reference(kind, rnn, t),
                                  [x.requires_grad_(True)], list(rnn.parameters()), atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_recurrent_flops_match_the_reference_exactly(name):
    model = build_model(name, VOCAB, d_model=16).set_path("reference")
    tokens = torch.randint(0, VOCAB, (2, 13))
    assert counted_flops(model, tokens) == model.flops(2, 13)


def test_lstm_layers_start_with_a_unit_forget_bias():
    """i, f, g, o gate order: the forget gate's two biases sum to 1 at init, the others are untouched."""
    for name in ("lstm", "rnn_attention"):
        model = build_model(name, 16, d_model=8)
        lstms = [m for m in model.modules() if isinstance(m, torch.nn.LSTM)]
        assert lstms
        for lstm in lstms:
            total = lstm.bias_ih_l0 + lstm.bias_hh_l0  # (4D,)
            assert torch.equal(total[8:16], torch.ones(8))
            assert not torch.equal(total[:8], torch.ones(8))
