"""hyena: the Hyena operator (Poli et al., 2023): long implicit convolutions gated by the input.

Order N (default 2). With D channels, the projections of x pass through a short causal convolution:

    v, x_1, ..., x_N = split(ShortConv_k(W_in x))          # (B, T, D) each
    z_0 = v
    z_n = x_n * (h_n * z_{n-1} + beta_n z_{n-1})            # n = 1..N, * = causal convolution over time
    y   = W_out z_N                                         # (B, T, D)

where (h_n * z)_t[d] = sum_{s <= t} h_n[d, t - s] z_s[d] is a depthwise convolution as long as the
sequence. Its filters are implicit: a small MLP over positional features of the lag l, times a fixed
exponential-decay window per channel,

    h_n[d, l] = MLP(phi(l))[n, d] * exp(-r_d l)             # phi(l) = sin, cos(l w_j), w_j = 10000^(-j/J)

with rates r_d such that the window falls to 1e-2 at lags log-spaced over [4, 4096] across channels, so
every length is defined (nothing is tied to a maximum length) and some channels reach far.

Fast path: the convolution by FFT, irfft(rfft(z, 2T) rfft(h, 2T))[:T], O(T log T) in float32 at least.
Reference path: the explicit causal convolution, every lag's product evaluated (the Toeplitz sum, torch's
direct depthwise conv1d with a kernel of T taps), O(T^2).

Worked example (D = 1, T = 3, h = [1, 0.5, 0.25], z = [1, 0, 0]): h * z = [1, 0.5, 0.25], an impulse
at t = 0 is remembered with weight h[t] at every later t.

Shapes: (B, T, D) -> (B, T, D).
State per layer: a long convolution has to keep all of its input: N * T * D floats (the T inputs of
each of the N convolutions) + (k - 1) * (N + 1) * D (the short convolution's last inputs); it grows with T.
FLOPs per layer (reference): 2*B*T*D*(N+1)D (W_in) + 2*B*T*(N+1)D*k (short conv) + 2*T*(2J*F + F*F + F*N*D)
(the filter MLP, once per forward) + N * 2*B*D*T*T (the direct convolutions, T taps at every output)
+ 2*B*T*D*D (W_out). The FFT path replaces the T*T term by O(T log T). Cost: O(n log n).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from membench.models import MemoryModel, Mixer, linear_flops, register_model
from membench.models.layers import ShortConv
from membench.models.scan import carry_dtype

BANDS = 8  # J: sin and cos at J frequencies -> 2J positional features
HIDDEN = 32  # F: width of the filter MLP
WINDOW_REACH = (4.0, 4096.0)  # lags at which the decay windows reach 1e-2, log-spaced over the channels


def causal_conv_reference(z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """(B, T, D) inputs, (D, T) filters -> (B, T, D): y_t = sum_{s <= t} h[:, t - s] z_s, directly.

    The input is left-padded with T - 1 zeros and convolved with the reversed filter: output t reads
    z_{t-T+1..t} with taps h[T-1..0], i.e. every lag 0..T-1 (lags before the start multiply zeros).
    """
    seq_len, width = z.shape[1], z.shape[2]
    x = F.pad(z.transpose(1, 2), (seq_len - 1, 0))  # (B, D, 2T - 1)
    return F.conv1d(x, h.flip(-1).unsqueeze(1).to(x.dtype), groups=width).transpose(1, 2)  # (B, T, D)


def causal_conv_fft(z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The same convolution by FFT: zero-padding to 2T makes the circular convolution a linear one."""
    seq_len = z.shape[1]
    n = 2 * seq_len
    dtype = carry_dtype(z)
    z_f = torch.fft.rfft(z.to(dtype).transpose(1, 2), n=n)  # (B, D, T + 1) complex
    h_f = torch.fft.rfft(h.to(dtype), n=n)  # (D, T + 1)
    return torch.fft.irfft(z_f * h_f, n=n)[..., :seq_len].transpose(1, 2)  # (B, T, D)


class ImplicitFilter(nn.Module):
    """The N long filters (N, D, T) for the current length: MLP(positional features) * decay window."""

    def __init__(self, d_model: int, order: int) -> None:
        super().__init__()
        self.d_model, self.order = d_model, order
        self.register_buffer("freqs", 10000.0 ** (-torch.arange(BANDS) / BANDS), persistent=False)  # (J,)
        reach = torch.logspace(math.log10(WINDOW_REACH[0]), math.log10(WINDOW_REACH[1]), d_model)  # (D,)
        self.register_buffer("rates", math.log(100.0) / reach, persistent=False)  # exp(-r * reach) = 1e-2
        self.mlp = nn.ModuleList([nn.Linear(2 * BANDS, HIDDEN), nn.Linear(HIDDEN, HIDDEN),
                                  nn.Linear(HIDDEN, order * d_model)])

    def forward(self, seq_len: int) -> torch.Tensor:  # -> (N, D, T)
        lags = torch.arange(seq_len, device=self.freqs.device, dtype=self.freqs.dtype)  # (T,)
        angle = lags[:, None] * self.freqs  # (T, J)
        x = torch.cat([angle.sin(), angle.cos()], dim=-1).to(self.mlp[0].weight.dtype)  # (T, 2J)
        x = torch.sin(self.mlp[0](x))
        x = torch.sin(self.mlp[1](x))
        h = self.mlp[2](x).view(seq_len, self.order, self.d_model).permute(1, 2, 0)  # (N, D, T)
        return h * (-self.rates[:, None] * lags).exp()  # (N, D, T)

    def flops(self, seq_len: int) -> int:
        return sum(linear_flops(seq_len, layer.in_features, layer.out_features) for layer in self.mlp)


class HyenaOperator(Mixer):
    """One order-N Hyena operator; see the module docstring."""

    def __init__(self, d_model: int, order: int, short_conv: int) -> None:
        super().__init__()
        self.d_model, self.order = d_model, order
        self.in_proj = nn.Linear(d_model, (order + 1) * d_model)
        self.conv = ShortConv((order + 1) * d_model, short_conv) if short_conv else None
        self.filter = ImplicitFilter(d_model, order)
        self.beta = nn.Parameter(torch.randn(order, d_model))  # the filters' skip term
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        u = self.in_proj(x)  # (B, T, (N + 1) D)
        if self.conv is not None:
            u = self.conv(u)
        z, *gates = u.split(self.d_model, dim=-1)  # (B, T, D) each
        h = self.filter(x.shape[1])  # (N, D, T)
        convolve = causal_conv_reference if self.path == "reference" else causal_conv_fft
        for n, gate in enumerate(gates):
            z = gate * (convolve(z, h[n]) + self.beta[n] * z)  # (B, T, D)
        return self.out(z)

    def state_size(self, seq_len: int) -> int:
        conv = self.conv.state_size() if self.conv is not None else 0
        return self.order * seq_len * self.d_model + conv

    def flops(self, batch_size: int, seq_len: int) -> int:
        tokens = batch_size * seq_len
        conv = self.conv.flops(batch_size, seq_len) if self.conv is not None else 0
        return (
            linear_flops(tokens, self.d_model, (self.order + 1) * self.d_model)
            + conv
            + self.filter.flops(seq_len)
            + self.memory_flops(batch_size, seq_len)
            + linear_flops(tokens, self.d_model, self.d_model)
        )

    def memory_flops(self, batch_size: int, seq_len: int) -> int:
        # the long convolutions as the reference computes them: T taps at each of the B*T*D outputs
        return self.order * 2 * batch_size * self.d_model * seq_len * seq_len

    def fast_path_flops(self, batch_size: int, seq_len: int) -> int:
        """The long convolutions by FFT instead: per convolution and channel, a real FFT of length n = 2T of
        z and its inverse (~2.5 n log2 n FLOPs each, per sequence), one of the filter (shared by the batch)
        and T + 1 complex products (6 FLOPs each)."""
        n = 2 * seq_len
        fft = 2.5 * n * math.log2(n)
        per_conv = self.d_model * (batch_size * (2 * fft + 6 * (seq_len + 1)) + fft)
        return self.flops(batch_size, seq_len) - self.memory_flops(batch_size, seq_len) + int(self.order * per_conv)


@register_model("hyena", order=75)
class HyenaModel(MemoryModel):
    """Params: `order` N (the number of gated long convolutions, 2 in the paper) and `short_conv` k
    (the short filter on the projections, 3 in the paper; 0 = off)."""

    memory_mechanism = "long implicit convolutions (MLP filters, decay windows) gated by the input, by FFT"
    cost_class = "O(n log n)"
    has_reference_path = True

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, *, order: int = 2,
                 short_conv: int = 3, mlp_ratio: int = 4) -> None:
        operator = functools.partial(HyenaOperator, d_model, order, short_conv)
        super().__init__(vocab_size, d_model, n_layers, lambda i: operator(), mlp_ratio=mlp_ratio)
