"""rnn, lstm, gru: torch's cuDNN-backed recurrent layers as sequence mixers.

Each block's mixer is a one-layer recurrence over time (Elman tanh RNN, LSTM or GRU):

    rnn:  h_t = tanh(W x_t + U h_{t-1} + b)
    lstm: i, f, g, o = split(W x_t + U h_{t-1} + b);  c_t = f*c_{t-1} + i*g;  h_t = o*tanh(c_t)
    gru:  r, z = sigma(...);  n = tanh(W_n x_t + r*(U_n h_{t-1}));  h_t = (1-z)*n + z*h_{t-1}

Shapes: (B, T, D) -> (B, T, D). State: D floats per layer (2D for the LSTM's h and c), constant in
length. Cost: O(n) time, sequential in n.
"""

from __future__ import annotations

from torch import nn

from models import MemoryModel, Mixer, linear_flops, register_model

_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
_STATES = {"rnn": 1, "lstm": 2, "gru": 1}
_MODULES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentMixer(Mixer):
    """One cuDNN recurrent layer over the sequence (batch_first)."""

    def __init__(self, kind: str, d_model: int) -> None:
        super().__init__()
        self.kind, self.d_model = kind, d_model
        self.rnn = _MODULES[kind](d_model, d_model, batch_first=True)

    def forward(self, x):  # (B, T, D) -> (B, T, D)
        out, _ = self.rnn(x)
        return out

    def state_size(self, seq_len: int) -> int:
        return _STATES[self.kind] * self.d_model

    def flops(self, batch_size: int, seq_len: int) -> int:
        # input and recurrent projections of every gate, at every step
        gates = _GATES[self.kind] * self.d_model
        return 2 * linear_flops(batch_size * seq_len, self.d_model, gates)


class _RecurrentModel(MemoryModel):
    kind = "lstm"
    cost_class = "O(n)"

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, mlp_ratio: int = 4) -> None:
        super().__init__(
            vocab_size, d_model, n_layers, make_mixer=lambda i: RecurrentMixer(self.kind, d_model), mlp_ratio=mlp_ratio
        )


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
