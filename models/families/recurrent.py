"""rnn, lstm, gru: torch's cuDNN-backed recurrent layers as sequence mixers, with a per-step reference.

Each block's mixer is a one-layer recurrence over time (Elman tanh RNN, LSTM or GRU):

    rnn:  h_t = tanh(W x_t + U h_{t-1} + b)
    lstm: i, f, g, o = split(W x_t + U h_{t-1} + b);  c_t = f*c_{t-1} + i*g;  h_t = o*tanh(c_t)
    gru:  r, z = sigma(...);  n = tanh(W_n x_t + r*(U_n h_{t-1}));  h_t = (1-z)*n + z*h_{t-1}

(sigma is the logistic sigmoid; W, U, b are the layer's weight_ih_l0, weight_hh_l0 and biases, gates
in torch's order: i, f, g, o for the LSTM, r, z, n for the GRU.)

The fast path is torch's fused layer (cuDNN on GPU); the reference path is `recurrent_reference`, a
plain loop over time with the same weights: one matmul for the input projections of all steps, then
h_{t-1} @ U^T + b_hh and the gate equations at each step.

Under autocast the fused layer runs in float32 with autocast switched off (`fused_recurrence`): ATen's
autocast casts cuDNN's RNN to fp16 whatever dtype autocast was asked for, so under bf16 autocast it would
train in fp16 with no gradient scaler. Outside autocast nothing changes.

Shapes: (B, T, D) -> (B, T, D). State: D floats per layer (2D for the LSTM's h and c), constant in
length. Cost: O(n) time, sequential in n.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from membench.models import MemoryModel, Mixer, linear_flops, register_model

_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
_STATES = {"rnn": 1, "lstm": 2, "gru": 1}
_MODULES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def recurrent_reference(kind: str, rnn: nn.RNNBase, x: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, T, D): the outputs h_1..h_T of one-layer `rnn` ("rnn", "lstm" or "gru",
    batch_first, zero initial state), computed step by step from its own weights."""
    inputs = F.linear(x, rnn.weight_ih_l0, rnn.bias_ih_l0)  # (B, T, G*D): W x_t + b_ih for every t
    h = x.new_zeros(x.shape[0], rnn.hidden_size)  # (B, D)
    c = h  # the LSTM's cell state
    outs = []
    for gx in inputs.unbind(1):  # (B, G*D)
        gh = F.linear(h, rnn.weight_hh_l0, rnn.bias_hh_l0)  # (B, G*D): U h_{t-1} + b_hh
        if kind == "rnn":
            h = torch.tanh(gx + gh)
        elif kind == "lstm":
            i, f, g, o = (gx + gh).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        else:  # gru: the reset gate scales the recurrent part of the candidate only
            r_x, z_x, n_x = gx.chunk(3, dim=-1)
            r_h, z_h, n_h = gh.chunk(3, dim=-1)
            r, z = torch.sigmoid(r_x + r_h), torch.sigmoid(z_x + z_h)
            n = torch.tanh(n_x + r * n_h)
            h = (1 - z) * n + z * h
        outs.append(h)
    return torch.stack(outs, dim=1)  # (B, T, D)


def fused_recurrence(rnn: nn.RNNBase, x: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, T, D): the outputs of torch's fused layer `rnn`; under autocast, in float32 with
    autocast off (see the module doc), so the layer never sees fp16 (nor bf16) inputs or weights."""
    kind = x.device.type
    if not torch.is_autocast_enabled(kind):
        return rnn(x)[0]
    with torch.autocast(kind, enabled=False):
        return rnn(x.float())[0]


def recurrent_flops(kind: str, batch_size: int, seq_len: int, d_model: int) -> int:
    """Input and recurrent projections of every gate, at every step."""
    gates = _GATES[kind] * d_model
    return 2 * linear_flops(batch_size * seq_len, d_model, gates)


def unit_forget_bias(lstm: nn.LSTM) -> None:
    """Start the LSTM's forget gate at bias 1 (gate order i, f, g, o), so the cell holds its content by
    default (Jozefowicz et al., 2015); without it a small LSTM can fail to learn even to copy 16 tokens."""
    d = lstm.hidden_size
    with torch.no_grad():
        for name, bias in lstm.named_parameters():
            if name.startswith("bias_"):
                bias[d : 2 * d] = 1.0 if name.startswith("bias_ih") else 0.0


class RecurrentMixer(Mixer):
    """One recurrent layer over the sequence (batch_first): torch's fused layer, or the reference loop."""

    def __init__(self, kind: str, d_model: int) -> None:
        super().__init__()
        self.kind, self.d_model = kind, d_model
        self.rnn = _MODULES[kind](d_model, d_model, batch_first=True)
        if kind == "lstm":
            unit_forget_bias(self.rnn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        if self.path == "reference":
            return recurrent_reference(self.kind, self.rnn, x)
        return fused_recurrence(self.rnn, x)

    def state_size(self, seq_len: int) -> int:
        return _STATES[self.kind] * self.d_model

    def flops(self, batch_size: int, seq_len: int) -> int:
        return recurrent_flops(self.kind, batch_size, seq_len, self.d_model)


class _RecurrentModel(MemoryModel):
    kind = "lstm"
    cost_class = "O(n)"
    has_reference_path = True
    compile_friendly = False  # the cuDNN RNN call is a graph break: capture gains nothing
    token_latency = 5e-6  # cuDNN steps through the tokens

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, mlp_ratio: int = 4) -> None:
        kind = self.kind
        super().__init__(vocab_size, d_model, n_layers, lambda i: RecurrentMixer(kind, d_model), mlp_ratio=mlp_ratio)


@register_model("rnn", order=10)
class RNNModel(_RecurrentModel):
    kind = "rnn"
    memory_mechanism = "hidden state h (Elman tanh RNN)"


@register_model("lstm", order=11)
class LSTMModel(_RecurrentModel):
    kind = "lstm"
    memory_mechanism = "gated cell state c and hidden state h"


@register_model("gru", order=12)
class GRUModel(_RecurrentModel):
    kind = "gru"
    memory_mechanism = "gated hidden state h"
