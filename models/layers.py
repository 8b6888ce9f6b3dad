"""Pieces shared by several families: a causal short convolution, rotary position embeddings,
multi-head attention helpers (a fast SDPA path and the explicit reference it is tested against), the
head-count check and the causal self-attention mixer itself (transformer, memory_transformer and the
hybrids use it). A family file holds only its own mechanism.

Shapes: B batch, T length, D model width, H heads, hd = D / H head width, k kernel size.

ShortConv, a depthwise causal convolution of kernel size k (each channel d has its own k taps):

    y[b, t, d] = bias[d] + sum_{j=0}^{k-1} w[d, j] * x[b, t - (k-1) + j, d]     (x = 0 before t = 0)

Reference: torch's grouped conv1d. Fast path on the CPU: the sum above as k shifted multiply-adds (oneDNN's
depthwise convolution takes ~1.4 ms for the backward pass of a smoke model's 72 channels x 32 tokens, the k
multiply-adds ~0.5 ms); elsewhere conv1d (cuDNN) is the fast path too.

Rotary embedding (RoPE, half-split form): channel pairs (i, i + hd/2) of a query or key at position p
are rotated by the angle p * base^(-2i/hd), so that q_p . k_s depends on p - s only:

    [x1, x2] -> [x1 cos(p theta) - x2 sin(p theta),  x2 cos(p theta) + x1 sin(p theta)]

Attention, both paths: softmax(q k^T / sqrt(hd) + mask) v, with the mask -inf where a query may not
look. The reference spells it out with two matmuls (2*T*T*hd multiply-adds per head, so
4*B*T*T*D FLOPs over the H heads); the fast path is torch's scaled_dot_product_attention (flash or
memory-efficient kernels on GPU).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from membench.checks import ConfigError, check_int
from membench.models.base import PATHS, Mixer, TwoPaths, linear_flops


class ShortConv(TwoPaths, nn.Module):
    """Depthwise causal convolution (B, T, D) -> (B, T, D) with `kernel_size` taps per channel.

    The input is padded with k-1 zeros on the left only, so the output has exactly T positions and
    y_t reads x_{t-k+1..t}.

        >>> conv = ShortConv(8, kernel_size=4)
        >>> conv(torch.randn(2, 5, 8)).shape
        torch.Size([2, 5, 8])
    """

    def __init__(self, d_model: int, kernel_size: int = 4) -> None:
        super().__init__()
        self.d_model, self.kernel_size = d_model, check_int("kernel_size", kernel_size)
        self.conv = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        if self.path == "fast" and x.device.type == "cpu":
            return causal_taps(x, self.conv.weight, self.conv.bias)
        x = F.pad(x.transpose(1, 2), (self.kernel_size - 1, 0))  # (B, D, T + k - 1)
        return self.conv(x).transpose(1, 2)  # (B, T, D)

    def state_size(self) -> int:
        """Floats carried between steps: the last k-1 inputs of every channel."""
        return (self.kernel_size - 1) * self.d_model

    def flops(self, batch_size: int, seq_len: int) -> int:
        """k multiply-adds per output element, as torch's FlopCounterMode counts the convolution."""
        return 2 * batch_size * seq_len * self.d_model * self.kernel_size


def causal_taps(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The depthwise causal convolution as k shifted multiply-adds: x (B, T, D), weight (D, 1, k) and bias (D,)
    as nn.Conv1d(D, D, k, groups=D) holds them -> (B, T, D), y_t = bias + sum_j w_j * x_{t-(k-1)+j}.

        >>> x = torch.arange(1.0, 5.0).view(1, 4, 1)                   # 1, 2, 3, 4
        >>> causal_taps(x, torch.tensor([[[1.0, 10.0]]]), torch.zeros(1)).flatten()  # 10 x_t + x_{t-1}
        tensor([10., 21., 32., 43.])
    """
    k, seq_len = weight.shape[-1], x.shape[1]
    taps = weight[:, 0].t()  # (k, D): tap j of every channel
    padded = F.pad(x, (0, 0, k - 1, 0))  # (B, T + k - 1, D): k - 1 zeros before t = 0
    y = torch.addcmul(bias, padded[:, k - 1:], taps[k - 1])  # (B, T, D): the newest input's tap
    for j in range(k - 1):  # the older inputs, x_{t-(k-1)+j}
        y = torch.addcmul(y, padded[:, j:j + seq_len], taps[j])
    return y


def optional_short_conv(channels: int, kernel_size: object) -> ShortConv | None:
    """The `short_conv` param of a family: a ShortConv of `kernel_size` taps over `channels`, or None when
    it is 0 (off). Callers count `conv.state_size()` and `conv.flops(...)` only when it is not None.

        >>> optional_short_conv(8, 0) is None, optional_short_conv(8, 4).kernel_size
        (True, 4)
    """
    return ShortConv(channels, kernel_size) if check_int("short_conv", kernel_size, 0) else None


class ConvQKVMixer(Mixer):
    """Base of the matrix-memory mixers over H heads (linear_attention, deltanet, gla, kda, rwkv7, ...) whose
    q, k and v come from one dense layer D -> 3D and the optional short convolution over those 3D channels:
        q, k, v = split_heads(act(conv_K(W_qkv x)))       # (B, T, H, d) each, d = D / H
    Subclasses add their memory and output layers after these (so the parameters are drawn in that order).

    Cost, shared: the state is H d x d memories plus the convolution's (`state_size`); the FLOPs are the
    dense layers a subclass lists in `projections()`, the convolution and the memory, `memory_products` d x d
    multiply-adds per head and token (`memory_flops`; gla's write k v^T and read S^T q are 2). A subclass whose
    memory is not H d x d matrices (linear_attention's normaliser, log_linear's levels) overrides `state_size`
    and `memory_flops`."""

    memory_products: ClassVar[int]  # d x d matrix-vector products per head and token (writes, reads, recalls)

    def __init__(self, d_model: int, n_heads: int, short_conv: int, chunk_size: int) -> None:
        super().__init__()
        self.d_model, self.n_heads, self.chunk_size = d_model, n_heads, chunk_size
        self.d_head = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.conv = optional_short_conv(3 * d_model, short_conv)  # on q, k, v together, or None

    def heads_qkv(self, x: torch.Tensor, activation=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, D) -> q, k, v (B, T, H, d), `activation` applied after the convolution when given."""
        batch, seq_len, _ = x.shape
        qkv = self.qkv(x)  # (B, T, 3D)
        qkv = qkv if self.conv is None else self.conv(qkv)
        qkv = qkv if activation is None else activation(qkv)
        return qkv.view(batch, seq_len, 3, self.n_heads, self.d_head).unbind(2)

    def conv_state_size(self) -> int:
        """Floats of the short convolution's last K - 1 inputs (0 when it is off)."""
        return 0 if self.conv is None else self.conv.state_size()

    def conv_flops(self, batch_size: int, seq_len: int) -> int:
        return 0 if self.conv is None else self.conv.flops(batch_size, seq_len)

    def projections(self) -> list[nn.Linear]:
        """Every dense layer applied to each token (for `flops`); subclasses list theirs."""
        raise NotImplementedError

    def state_size(self, seq_len: int) -> int:
        return self.n_heads * self.d_head * self.d_head + self.conv_state_size()

    def flops(self, batch_size: int, seq_len: int) -> int:
        tokens = batch_size * seq_len
        dense = sum(linear_flops(tokens, layer.in_features, layer.out_features) for layer in self.projections())
        return dense + self.conv_flops(batch_size, seq_len) + self.memory_flops(batch_size, seq_len)

    def memory_flops(self, batch_size: int, seq_len: int) -> int:
        return 2 * self.memory_products * batch_size * seq_len * self.n_heads * self.d_head * self.d_head


def mamba_decay_params(n_heads: int) -> tuple[nn.Parameter, nn.Parameter]:
    """Mamba-2's data-dependent decay per head, as (A_log, dt_bias) initialised as Mamba does: A_h =
    exp(A_log_h) uniform in [1, 16], softplus(dt_bias_h) log-uniform in [1e-3, 1e-1]. A token's decay is

        dt_t = softplus(dt_raw_t + dt_bias_h) > 0,    log a_t = -A_h dt_t <= 0,    a_t in (0, 1]

    with dt_raw_t a projection of the input (ssm, gated_deltanet).
    """
    a_log = nn.Parameter(torch.empty(n_heads).uniform_(1.0, 16.0).log())
    dt = torch.empty(n_heads).uniform_(math.log(1e-3), math.log(1e-1)).exp()
    return a_log, nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # dt_bias: the inverse softplus of dt


class RotaryEmbedding(nn.Module):
    """Rotates (..., T, hd) queries or keys by their positions offset, offset+1, ...; no parameters.

    Relative positions survive any length, so a model trained at length T can be evaluated beyond it.
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ConfigError(f"rotary embeddings need an even head width, got {head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (hd/2,)
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:  # (..., T, hd) -> same
        seq_len = x.shape[-2]
        pos = torch.arange(offset, offset + seq_len, device=x.device, dtype=torch.float32)  # (T,)
        angle = pos[:, None] * self.inv_freq[None, :]  # (T, hd/2); element-wise, not a matmul
        cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)  # (..., T, hd/2) each
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, D) -> (B, H, T, D/H)."""
    batch, seq_len, width = x.shape
    return x.view(batch, seq_len, n_heads, width // n_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, hd) -> (B, T, H*hd)."""
    batch, heads, seq_len, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, seq_len, heads * head_dim)


def causal_mask(seq_len: int, device: torch.device | str) -> torch.Tensor:
    """Bool (T, T), True where query t may read key s, i.e. s <= t."""
    return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Explicit masked attention: q (..., Tq, hd), k and v (..., Tk, hd), `allowed` bool broadcastable
    to (..., Tq, Tk) -> (..., Tq, hd). Every query must be allowed at least one key."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., Tq, Tk)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(dim=-1) @ v  # (..., Tq, hd)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, path: str) -> torch.Tensor:
    """Causal attention of (B, H, T, hd) queries, keys and values -> (B, H, T, hd).

    path "fast": scaled_dot_product_attention(is_causal=True); "reference": `attention_reference`
    with the explicit lower-triangular mask.
    """
    if path not in PATHS:
        raise ConfigError(f"path must be one of {', '.join(PATHS)}, got {path!r}")
    if path == "reference":
        return attention_reference(q, k, v, causal_mask(q.shape[-2], q.device))
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def attention_flops(batch_size: int, seq_len: int, d_model: int) -> int:
    """FLOPs of full-square attention over all heads: q k^T and (weights) v, 2*T*T*D multiply-adds."""
    return 4 * batch_size * seq_len * seq_len * d_model


def qkv_out_flops(tokens: int, d_model: int) -> int:
    """FLOPs of the q, k, v projection (D -> 3D) and the output projection (D -> D) of `tokens` vectors."""
    return linear_flops(tokens, d_model, 3 * d_model) + linear_flops(tokens, d_model, d_model)


def check_heads(d_model: int, n_heads: object, rope: bool) -> int:
    """Validate n_heads against d_model (and an even head width for rotary positions)."""
    check_int("n_heads", n_heads)
    if d_model % n_heads:
        raise ConfigError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
    if rope and (d_model // n_heads) % 2:
        raise ConfigError(
            f"rotary positions need an even head width, got d_model/n_heads = {d_model // n_heads}"
        )
    return n_heads


class SelfAttention(Mixer):
    """Causal multi-head self-attention (B, T, D) -> (B, T, D), rotary positions optional."""

    def __init__(self, d_model: int, n_heads: int, rope: bool) -> None:
        super().__init__()
        self.d_model, self.n_heads = d_model, n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.rotary = RotaryEmbedding(d_model // n_heads) if rope else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        q, k, v = (split_heads(t, self.n_heads) for t in self.qkv(x).chunk(3, dim=-1))  # (B, H, T, hd)
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        return self.out(merge_heads(causal_attention(q, k, v, self.path)))  # (B, T, D)

    def state_size(self, seq_len: int) -> int:
        return 2 * seq_len * self.d_model  # keys and values of every past position

    def flops(self, batch_size: int, seq_len: int) -> int:
        tokens = batch_size * seq_len
        projections = qkv_out_flops(tokens, self.d_model)
        return projections + self.attention_flops(batch_size, seq_len)

    def attention_flops(self, batch_size: int, seq_len: int) -> int:
        return attention_flops(batch_size, seq_len, self.d_model)


def writing_strength(logits: torch.Tensor, allow_neg_eigval: bool) -> torch.Tensor:
    """beta of a delta-rule write: sigmoid(logits) in (0, 1), or 2 sigmoid(logits) in (0, 2) with
    `allow_neg_eigval`, so that the eigenvalue 1 - beta of I - beta k k^T (|k| = 1) lies in (-1, 1).

        >>> writing_strength(torch.zeros(1), False), writing_strength(torch.zeros(1), True)
        (tensor([0.5000]), tensor([1.]))
    """
    return (2.0 if allow_neg_eigval else 1.0) * torch.sigmoid(logits)


def delta_rule_inputs(mixer: ConvQKVMixer, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(B, T, D) -> the delta rule's q, k, v (B, T, H, d) and beta (B, T, H), as deltanet, gated_deltanet and kda
    read them: q, k, v SiLU'd after the short convolution, q and k of unit length; beta the writing strength of
    `mixer.beta(x)`, in (0, 1), or (0, 2) with `mixer.allow_neg_eigval`."""
    q, k, v = mixer.heads_qkv(x, F.silu)  # (B, T, H, d) each
    q, k = F.normalize(q, dim=-1, eps=1e-6), F.normalize(k, dim=-1, eps=1e-6)
    beta = writing_strength(mixer.beta(x), mixer.allow_neg_eigval)  # (B, T, H)
    return q, k, v, beta
