"""memory_transformer: a recurrent memory transformer (RMT); its memory is M vectors passed between
segments, plus attention within the current segment.

The sequence is cut into segments of L tokens. Segment s is processed by the whole stack of causal
attention blocks as one sequence [m_s; x_s; m_s] of M + L + M vectors (RMT's decoder layout):

    h = Blocks([m_s; x_s; m_s])                 # (B, M+L+M, D), causal attention inside
    y_s = h[:, M : M+L]                         # the segment's outputs
    m_{s+1} = LayerNorm(h[:, M+L :])            # "write" positions: they have read the whole segment

The read copy of m_s comes first, so every segment token sees it; segment tokens see each other
causally; the write copy comes last, so it sees the whole segment, and it is read only by later
segments. Hence causality is exact. m_0 is learned; gradients flow through every m_s (backpropagation
through the segments). The hand-over norm has no parameters: it only keeps the size of m_s from
drifting over many segments. The last segment has no write copy (nothing reads it). Segments run
one after another (each needs the previous memory); inside a segment all work is batched. The
attention paths are the transformer's: SDPA (is_causal) on the fast path, explicit on the reference.

Shapes: tokens (B, T) int64 -> logits (B, T, V). Worked example, L = 4, M = 2, T = 10: segments of
4, 4, 2 tokens run as stacks over 10, 10 and 6 vectors.
State size: the memory M*D plus, per layer, keys and values of the read memory and the current
segment, 2*(M + min(T, L))*D: bounded in T.
Cost: O(n*w) with w = L + 2M: attention is quadratic only within a segment.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from membench.models import MemoryModel, linear_flops, register_model
from membench.models.layers import SelfAttention, check_heads


@register_model("memory_transformer", order=60)
class MemoryTransformerModel(MemoryModel):
    """Params: `segment_len` L (tokens per segment), `num_memory` M (memory vectors handed on),
    `n_heads` of the attention inside a segment."""

    memory_mechanism = "M memory vectors carried from segment to segment (RMT), attention within a segment"
    cost_class = "O(n*w)"
    has_reference_path = True
    token_latency = 1e-5  # a loop over the segments, each handing its memory to the next

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, *,
                 segment_len: int = 32, num_memory: int = 8, n_heads: int = 4, mlp_ratio: int = 4) -> None:
        check_heads(d_model, n_heads, rope=True)
        attention = functools.partial(SelfAttention, d_model, n_heads, rope=True)
        super().__init__(vocab_size, d_model, n_layers, lambda i: attention(), mlp_ratio=mlp_ratio)
        self.segment_len, self.num_memory = segment_len, num_memory
        # m_0, (M, D): small at init so the memory slots do not swamp attention before they are learnt
        # (unit-normal slots slowed associative recall several-fold in the smoke sweep)
        self.memory = nn.Parameter(0.02 * torch.randn(num_memory, d_model))

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 -> (B, T, D), one segment at a time."""
        x = self.embed(tokens)  # (B, T, D)
        n_mem = self.num_memory
        memory = self.memory.expand(x.shape[0], -1, -1)  # (B, M, D)
        segments = x.split(self.segment_len, dim=1)  # each (B, L, D), the last possibly shorter
        outs = []
        for index, segment in enumerate(segments):
            last = index == len(segments) - 1
            h = torch.cat((memory, segment) if last else (memory, segment, memory), dim=1)  # (B, M+L(+M), D)
            for block in self.blocks:
                h = block(h)
            seg_len = segment.shape[1]
            outs.append(h[:, n_mem : n_mem + seg_len])  # (B, L, D)
            if not last:
                memory = F.layer_norm(h[:, n_mem + seg_len :], (self.d_model,))  # (B, M, D)
        return self.norm(torch.cat(outs, dim=1))  # (B, T, D)

    def stack_lengths(self, seq_len: int) -> list[int]:
        """How many vectors the stack processes for each segment of a length-`seq_len` sequence."""
        n_seg = math.ceil(seq_len / self.segment_len)
        lengths = [self.segment_len + 2 * self.num_memory] * (n_seg - 1)
        return [*lengths, seq_len - (n_seg - 1) * self.segment_len + self.num_memory]

    def state_size(self, seq_len: int) -> int:
        window = self.num_memory + min(seq_len, self.segment_len)
        return self.num_memory * self.d_model + sum(m.state_size(window) for m in self.mixers())

    def flops(self, batch_size: int, seq_len: int) -> int:
        total = linear_flops(batch_size * seq_len, self.d_model, self.vocab_size)
        for n in self.stack_lengths(seq_len):
            total += sum(m.flops(batch_size, n) for m in self.mixers())
            total += sum(b.mlp.flops(batch_size, n) for b in self.blocks if b.mlp is not None)
        return total

    def attention_flops(self, batch_size: int, seq_len: int) -> int:
        return sum(m.attention_flops(batch_size, n) for n in self.stack_lengths(seq_len) for m in self.mixers())
