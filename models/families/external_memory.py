"""external_memory: an LSTM controller with a content-addressed slot memory (NTM / DNC style).

Per layer, a memory M of N slots of W floats, an LSTM controller (h, c) of size D, and R read heads.
At every step t, with r_{t-1} the R read vectors of the previous step:

    i, f, o, g = split(W_x x_t + W_s [h_{t-1}, r_{t-1}] + b)         # input projected for all t at once
    c_t = sig(f) c_{t-1} + sig(i) tanh(g);   h_t = sig(o) tanh(c_t)
    k_0..k_R, s_0..s_R, e, a = W_heads h_t + b_heads                  # every head parameter, one matmul
    w_i = softmax_n( beta_i cos(k_i, M_{t-1}[n]) ),  beta_i = 1 + softplus(s_i) >= 1   # all heads at once
    r_t,i = w_i^T M_{t-1}                                             # (W,) for read heads i = 1..R
    M_t = M_{t-1} * (1 - w_0 sig(e)^T) + w_0 a^T                      # head 0 writes: erase, then add
    y_t = W_out [h_t, r_t]                                            # the mixer's output

All heads address the same memory M_{t-1} (reads happen before this step's write, as in the NTM),
so one normalisation, one matmul and one softmax serve them all; what is written at t is readable
from t + 1 on. Every weight vector w_i is a distribution over the N slots (sums to 1).

Worked example (N = 2, W = 1): M = [[1], [0]], w = [1, 0], e = 1, a = 5 gives M = [[5], [0]]:
slot 0 is erased and overwritten, slot 1 untouched.

Shapes: (B, T, D) -> (B, T, D). Sequential by nature: one Python step per token, iterating over
`unbind(1)` of the precomputed input gates; `compile=True` wraps the step in `torch.compile`.
There is no separate reference path (the loop is both). State per layer: N * W (memory) + 2 D
(controller h, c) + R * W (read vectors), constant in length. Cost: O(n), sequential in n.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from membench.models import MemoryModel, Mixer, linear_flops, register_model


def content_addressing(memory: torch.Tensor, keys: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Weights over slots: softmax_n(beta * cos(key, M_n)).  memory (B, N, W), keys (B, R, W),
    beta (B, R) > 0 -> (B, R, N), each row summing to 1. An all-zero slot has similarity 0."""
    sim = F.normalize(keys, dim=-1) @ F.normalize(memory, dim=-1).transpose(1, 2)  # (B, R, N)
    return torch.softmax(beta.unsqueeze(-1) * sim, dim=-1)


def write_memory(memory: torch.Tensor, weights: torch.Tensor, erase: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    """M * (1 - w e^T) + w a^T.  memory (B, N, W), weights (B, N), erase in [0, 1] and add (B, W).

    The outer products are broadcast element-wise products (on CPU their backward is about twice as
    fast as a K = 1 batched matmul's), so FLOP counts leave them out like any element-wise work."""
    w = weights.unsqueeze(-1)  # (B, N, 1)
    return memory * (1.0 - w * erase.unsqueeze(-2)) + w * add.unsqueeze(-2)  # (B, N, W)


class ExternalMemory(Mixer):
    """LSTM controller + one content-addressed write head + R read heads; see the module docstring."""

    def __init__(self, d_model: int, num_slots: int, slot_size: int, num_reads: int, compile: bool) -> None:
        super().__init__()
        self.d_model, self.num_slots, self.slot_size, self.num_reads = d_model, num_slots, slot_size, num_reads
        read_width = num_reads * slot_size
        # head parameters: 1 + R keys (head 0 writes), 1 + R strengths, erase, add
        self.head_sizes = [(1 + num_reads) * slot_size, 1 + num_reads, slot_size, slot_size]
        self.x_to_gates = nn.Linear(d_model, 4 * d_model)
        self.state_to_gates = nn.Linear(d_model + read_width, 4 * d_model, bias=False)
        self.heads = nn.Linear(d_model, sum(self.head_sizes))
        self.out = nn.Linear(d_model + read_width, d_model)
        self.step = torch.compile(self._step, dynamic=False) if compile else self._step

    def _step(
        self, gates_x: torch.Tensor, state: torch.Tensor, c: torch.Tensor, memory: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One token. gates_x (B, 4D); state = [h, r] (B, D + R W); c (B, D); memory (B, N, W)."""
        d, batch = self.d_model, gates_x.shape[0]
        gates = gates_x + self.state_to_gates(state)  # (B, 4D)
        sig = torch.sigmoid(gates[:, : 3 * d])  # (B, 3D): input, forget, output gates
        c = sig[:, d : 2 * d] * c + sig[:, :d] * torch.tanh(gates[:, 3 * d :])  # (B, D)
        h = sig[:, 2 * d :] * torch.tanh(c)  # (B, D)
        keys, strengths, erase, add = self.heads(h).split(self.head_sizes, dim=-1)
        keys = keys.view(batch, 1 + self.num_reads, self.slot_size)  # (B, 1 + R, W)
        weights = content_addressing(memory, keys, 1.0 + F.softplus(strengths))  # (B, 1 + R, N)
        reads = (weights[:, 1:] @ memory).view(batch, -1)  # (B, R, N) @ (B, N, W) -> (B, R W)
        memory = write_memory(memory, weights[:, 0], torch.sigmoid(erase), add)  # (B, N, W)
        return torch.cat([h, reads], dim=-1), c, memory

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        batch = x.shape[0]
        gates_x = self.x_to_gates(x)  # (B, T, 4D): the input part of every step, one matmul
        # the carried state starts at zero in x's dtype (float32 under autocast too, where gates are bf16)
        state = x.new_zeros(batch, self.d_model + self.num_reads * self.slot_size)  # [h, r]
        c = x.new_zeros(batch, self.d_model)
        memory = x.new_zeros(batch, self.num_slots, self.slot_size)
        states = []
        for gates_t in gates_x.unbind(1):
            state, c, memory = self.step(gates_t, state, c, memory)
            states.append(state)
        return self.out(torch.stack(states, dim=1))  # (B, T, D + R W) -> (B, T, D)

    def state_size(self, seq_len: int) -> int:
        return self.num_slots * self.slot_size + 2 * self.d_model + self.num_reads * self.slot_size

    def flops(self, batch_size: int, seq_len: int) -> int:
        tokens, d, read_width = batch_size * seq_len, self.d_model, self.num_reads * self.slot_size
        return (
            linear_flops(tokens, d, 4 * d)  # input gates
            + linear_flops(tokens, d + read_width, 4 * d)  # recurrent gates
            + linear_flops(tokens, d, sum(self.head_sizes))  # head parameters
            + self.memory_flops(batch_size, seq_len)
            + linear_flops(tokens, d + read_width, d)  # output
        )

    def memory_flops(self, batch_size: int, seq_len: int) -> int:
        # memory access per token: similarities of 1 + R keys to N slots, and R reads (the write is element-wise)
        return 2 * batch_size * seq_len * self.num_slots * self.slot_size * (1 + 2 * self.num_reads)


@register_model("external_memory", order=35)
class ExternalMemoryModel(MemoryModel):
    """Params: `num_slots` N and `slot_size` W of the memory, `num_reads` R read heads, and
    `compile` (wrap the per-token step in torch.compile)."""

    memory_mechanism = "LSTM controller writing to and reading from content-addressed memory slots (NTM/DNC)"
    cost_class = "O(n)"
    compile_friendly = False  # a trace unrolls T steps per layer: minutes of compile at long lengths
    token_latency = 1e-4  # a read and a write of the memory per token

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, *, num_slots: int = 32,
                 slot_size: int = 32, num_reads: int = 1, compile: bool = False, mlp_ratio: int = 4) -> None:
        memory = functools.partial(ExternalMemory, d_model, num_slots, slot_size, num_reads, compile)
        super().__init__(vocab_size, d_model, n_layers, lambda i: memory(), mlp_ratio=mlp_ratio)
