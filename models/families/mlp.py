"""mlp: a dense per-position network with no memory at all, the chance control.

    h_t = x_t + MLP(LayerNorm(x_t))   for each of n_layers blocks;  logits_t = W_out LayerNorm(h_t)

The prediction at position t is a function of token t alone, so any accuracy above the best
per-token guess would mean the task leaks its answer locally.

Shapes: tokens (B, T) int64 -> logits (B, T, V). State size: 0. Cost: O(n).
"""

from __future__ import annotations

from membench.models import MemoryModel, register_model


@register_model("mlp", order=0)
class MLPModel(MemoryModel):
    memory_mechanism = "none (per-position MLP; chance control)"
    cost_class = "O(n)"

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, mlp_ratio: int = 4) -> None:
        super().__init__(vocab_size, d_model, n_layers, make_mixer=lambda i: None, mlp_ratio=mlp_ratio)
