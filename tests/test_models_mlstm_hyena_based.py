"""mlstm, hyena and based: each fast form against its reference, the state each reference actually carries
against `state_size`, the mLSTM stabiliser at T = 4096, and the worked examples of the docstrings.
(The contract tests cover causality, gradients, FLOPs, bf16 and fast = reference on whole models.)"""

from __future__ import annotations

import pytest
import torch

from membench.checks import ConfigError
from membench.models import build_model, list_models, model_class
from membench.models.families import based as based_module
from membench.models.families import hyena as hyena_module
from membench.models.families import mlstm as mlstm_module
from membench.models.families.hyena import causal_conv_fft, causal_conv_reference
from membench.models.families.mlstm import mlstm_chunked, mlstm_reference
from membench.models.families.sliding_window import WindowAttention
from membench.models.scan import scan_reference
from tests.helpers import assert_paths_agree, assert_same_outputs_and_grads

VOCAB = 16


def test_the_three_families_are_registered_with_reference_paths():
    for name in ("mlstm", "hyena", "based"):
        assert name in list_models() and model_class(name).has_reference_path


# --- mLSTM: chunked form = per-token recurrence ------------------------------------------------------------
MLSTM_SHAPES = [  # B, T, H, d, P, chunk
    (2, 37, 3, 4, 5, 8),  # T not a multiple of the chunk
    (1, 5, 2, 3, 3, 16),  # T < chunk
    (2, 64, 1, 6, 4, 16),  # T a multiple of the chunk
    (1, 1, 2, 4, 4, 64),  # one token
]


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("shape", MLSTM_SHAPES, ids=lambda s: "B{}-T{}-H{}-d{}-P{}-C{}".format(*s))
def test_mlstm_chunked_equals_the_recurrence_in_outputs_and_gradients(shape, forget_gate):
    batch, seq_len, heads, d, p, chunk = shape
    gen = torch.Generator().manual_seed(seq_len)
    q, k = (torch.randn(batch, seq_len, heads, d, generator=gen, dtype=torch.double) for _ in range(2))
    v = torch.randn(batch, seq_len, heads, p, generator=gen, dtype=torch.double)
    i_pre = 3 * torch.randn(batch, seq_len, heads, generator=gen, dtype=torch.double)
    f_pre = 2 * torch.randn(batch, seq_len, heads, generator=gen, dtype=torch.double)
    inputs = [t.requires_grad_() for t in (q, k, v, i_pre, f_pre)]
    assert_same_outputs_and_grads(lambda *a: mlstm_chunked(*a, forget_gate, chunk_size=chunk),
                                  lambda *a: mlstm_reference(*a, forget_gate), inputs, atol=1e-9, rtol=1e-8)


def unstabilised_mlstm(q, k, v, i_pre, f_pre, forget_gate):
    """The textbook recurrence without m_t: C_t = f C + i v k^T, h = C q / max(|n . q|, 1)."""
    batch, _, heads, d = k.shape
    C, n, out = q.new_zeros(batch, heads, d, v.shape[-1]), q.new_zeros(batch, heads, d), []
    f = torch.sigmoid(f_pre) if forget_gate == "sigmoid" else f_pre.exp()
    for t in range(q.shape[1]):
        C = f[:, t, :, None, None] * C + i_pre[:, t].exp()[..., None, None] * k[:, t, ..., None] * v[:, t, :, None]
        n = f[:, t, :, None] * n + i_pre[:, t].exp()[..., None] * k[:, t]
        den = (q[:, t] * n).sum(-1, keepdim=True).abs().clamp(min=1.0)
        out.append((q[:, t, :, :, None] * C).sum(-2) / den)
    return torch.stack(out, 1)


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
def test_mlstm_stabilised_forms_equal_the_textbook_recurrence_where_it_does_not_overflow(forget_gate):
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 20, 2, 3, generator=gen, dtype=torch.double) for _ in range(3))
    i_pre, f_pre = (torch.randn(2, 20, 2, generator=gen, dtype=torch.double) for _ in range(2))
    expected = unstabilised_mlstm(q, k, v, i_pre, f_pre, forget_gate)
    # eps is added in the stabilised space, where it weighs exp(m) times more: tolerances reflect it
    torch.testing.assert_close(mlstm_reference(q, k, v, i_pre, f_pre, forget_gate), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mlstm_chunked(q, k, v, i_pre, f_pre, forget_gate, chunk_size=8), expected,
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("i_pre", [0.0, 1000.0])
def test_mlstm_worked_example(i_pre):
    """d = 1, f = 1, k = v = q = 1: C_t = n_t = t and h_t = t / max(t, 1) = 1, whatever the input gate."""
    ones = torch.ones(1, 6, 1, 1)
    gates = torch.full((1, 6, 1), i_pre)
    f_pre = torch.full((1, 6, 1), 1e4)  # logsigmoid(1e4) = 0: f = 1
    for h in (mlstm_reference(ones, ones, ones, gates, f_pre), mlstm_chunked(ones, ones, ones, gates, f_pre,
                                                                             chunk_size=4)):
        torch.testing.assert_close(h, torch.ones_like(h), atol=1e-5, rtol=0)


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
def test_mlstm_is_stable_at_4096_tokens_with_large_gate_preactivations(forget_gate):
    gen = torch.Generator().manual_seed(0)
    batch, seq_len, heads, d = 1, 4096, 2, 4
    q, k, v = (torch.randn(batch, seq_len, heads, d, generator=gen) for _ in range(3))
    i_pre = 60 * torch.randn(batch, seq_len, heads, generator=gen)
    f_pre = 60 * torch.randn(batch, seq_len, heads, generator=gen)
    assert torch.isinf(i_pre.exp()).any()  # the unstabilised gates overflow float32 here
    inputs = [t.requires_grad_() for t in (q, k, v, i_pre, f_pre)]
    fast = mlstm_chunked(*inputs, forget_gate, chunk_size=64)
    grads = torch.autograd.grad(fast.sum(), inputs)
    assert torch.isfinite(fast).all() and all(torch.isfinite(g).all() for g in grads)
    with torch.no_grad():  # and it is still the recurrence: the float64 per-token loop agrees
        ref = mlstm_reference(*(t.double() for t in inputs), forget_gate)
    torch.testing.assert_close(fast.double(), ref, atol=1e-3, rtol=1e-3)


# --- Hyena: FFT convolution = the explicit causal convolution ----------------------------------------------
@pytest.mark.parametrize("batch,seq_len,width", [(2, 1, 3), (2, 7, 4), (1, 64, 5), (3, 130, 2)],
                         ids=lambda v: str(v))
def test_fft_convolution_equals_the_direct_one_in_outputs_and_gradients(batch, seq_len, width):
    gen = torch.Generator().manual_seed(seq_len)
    z = torch.randn(batch, seq_len, width, generator=gen, dtype=torch.double, requires_grad=True)
    h = torch.randn(width, seq_len, generator=gen, dtype=torch.double, requires_grad=True)
    assert_same_outputs_and_grads(causal_conv_fft, causal_conv_reference, [z, h], atol=1e-10, rtol=1e-9)
    ref = causal_conv_reference(z, h).detach()
    # and both are the Toeplitz sum itself, y_t = sum_{s <= t} h[t - s] z_s
    lag = torch.arange(seq_len)[:, None] - torch.arange(seq_len)[None, :]  # (T, T): t - s
    toeplitz = torch.where(lag >= 0, h.detach()[:, lag.clamp(min=0)], 0.0)  # (D, T, T)
    torch.testing.assert_close(ref, torch.einsum("dts,bsd->btd", toeplitz, z.detach()))


def test_hyena_convolution_worked_example():
    z = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1)
    h = torch.tensor([[1.0, 0.5, 0.25]])
    for conv in (causal_conv_reference, causal_conv_fft):
        torch.testing.assert_close(conv(z, h).flatten(), torch.tensor([1.0, 0.5, 0.25]))


def test_hyena_filters_decay_and_do_not_depend_on_the_length():
    model = build_model("hyena", VOCAB, d_model=8, n_layers=1)
    filt = model.blocks[0].mixer.filter
    short, long = filt(16), filt(512)  # (N, D, T)
    torch.testing.assert_close(long[..., :16], short)  # lag l has one filter value at every length
    window = (-filt.rates[:, None] * torch.arange(512.0)).exp()  # (D, T)
    assert window[0, 4].item() == pytest.approx(1e-2, rel=1e-4)  # the fastest channel: 1e-2 at lag 4
    assert window[-1, -1].item() > 0.3  # the slowest still reaches past 512 lags


# --- Based: the Taylor feature map ---------------------------------------------------------------------------
def test_taylor_features_give_the_second_order_expansion_of_exp():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(50, 16, generator=gen, dtype=torch.double), torch.randn(50, 16, generator=gen,
                                                                               dtype=torch.double)
    fq, fk = based_module.taylor_features(q), based_module.taylor_features(k)
    assert fq.shape == (50, 1 + 16 + 256)
    s = (q * k).sum(-1) / 4.0  # q . k / sqrt(d')
    torch.testing.assert_close((fq * fk).sum(-1), 1 + s + s**2 / 2)
    assert ((fq * fk).sum(-1) > 0).all()
    one = torch.ones(1, 1, dtype=torch.double)  # the docstring's example: s = 1 -> 2.5, s = -1 -> 0.5
    assert (based_module.taylor_features(one) * based_module.taylor_features(one)).sum().item() == pytest.approx(2.5)
    assert (based_module.taylor_features(one) * based_module.taylor_features(-one)).sum().item() == pytest.approx(0.5)


def test_based_window_layers_are_the_sliding_window_mixer():
    model = build_model("based", VOCAB, d_model=16, n_layers=4, window=8, mixer_pattern="linear,window")
    kinds = [type(b.mixer) for b in model.blocks]
    assert kinds == [based_module.TaylorLinearAttention, WindowAttention] * 2
    assert all(b.mixer.window == 8 for b in model.blocks[1::2])


# --- state_size = the floats each reference path carries ------------------------------------------------------
def conv_carry(mixer) -> int:
    """The last k - 1 inputs of every channel of a short convolution, read off its weight (D, 1, k)."""
    if mixer.conv is None:
        return 0
    channels, _, kernel = mixer.conv.conv.weight.shape
    return (kernel - 1) * channels


@pytest.mark.parametrize("params", [{}, {"short_conv": 0, "forget_gate": "exp"}], ids=["default", "no-conv"])
def test_mlstm_state_size_is_what_the_recurrence_carries(monkeypatch, params):
    carried = []

    def recording(*args, **kwargs):
        h, state = mlstm_reference(*args, **kwargs, return_state=True)
        carried.append(sum(t[0].numel() for t in state))  # one sequence's C, n and m
        return h

    monkeypatch.setattr(mlstm_module, "mlstm_reference", recording)
    model = build_model("mlstm", VOCAB, d_model=24, n_layers=2, n_heads=3, **params).set_path("reference")
    model(torch.randint(0, VOCAB, (2, 11)))
    assert carried == [3 * (8 * 8 + 8 + 1)] * 2
    expected = sum(c + conv_carry(b.mixer) for c, b in zip(carried, model.blocks))
    assert model.state_size(11) == model.state_size(4096) == expected


@pytest.mark.parametrize("order", [1, 2, 3])
def test_hyena_state_size_is_every_input_of_every_long_convolution(monkeypatch, order):
    seen = []

    def recording(z, h):
        seen.append(z[0].numel())  # one sequence's whole input to this convolution
        return causal_conv_reference(z, h)

    monkeypatch.setattr(hyena_module, "causal_conv_reference", recording)
    model = build_model("hyena", VOCAB, d_model=8, n_layers=2, order=order).set_path("reference")
    seq_len = 13
    model(torch.randint(0, VOCAB, (2, seq_len)))
    assert seen == [seq_len * 8] * (order * 2)
    expected = sum(seen) + sum(conv_carry(b.mixer) for b in model.blocks)
    assert model.state_size(seq_len) == expected


def test_based_state_size_is_what_its_scan_and_window_carry(monkeypatch):
    scan_states = []

    def recording(q, k, v, log_decay=None):
        scan_states.append(k.shape[2] * k.shape[3] * v.shape[3])  # scan_reference's state (B, H, N, P), one sequence
        return scan_reference(q, k, v, log_decay)

    monkeypatch.setattr(based_module, "scan_reference", recording)
    model = build_model("based", VOCAB, d_model=16, n_layers=2, n_heads=2, feature_dim=4, window=8)
    model.set_path("reference")(torch.randint(0, VOCAB, (2, 20)))
    assert scan_states == [2 * (1 + 4 + 16) * (8 + 1)]
    linear, window = (b.mixer for b in model.blocks)
    for seq_len, keys in ((5, 5), (20, 8), (4096, 8)):  # the window holds min(T, w) keys and values
        assert model.state_size(seq_len) == scan_states[0] + conv_carry(linear) + 2 * keys * 16


# --- bad params ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,params,match", [
    ("mlstm", {"forget_gate": "tanh"}, "forget_gate"),
    ("mlstm", {"short_conv": -1}, "short_conv"),
    ("mlstm", {"n_heads": 5}, "divisible"),
    ("hyena", {"order": 0}, "order"),
    ("based", {"mixer_pattern": "linear,attention"}, "mixer_pattern"),
    ("based", {"feature_dim": 0}, "feature_dim"),
    ("based", {"window_heads": 3}, "divisible"),
])
def test_bad_params_are_rejected(name, params, match):
    with pytest.raises(ConfigError, match=match):
        build_model(name, VOCAB, d_model=16, **params)


# --- which FLOPs are attention -----------------------------------------------------------------------------------
def test_memory_and_attention_flops_are_split_by_mechanism():
    """A matrix memory or a long convolution is memory FLOPs; Based's window layers are attention."""
    for name in ("mlstm", "hyena"):
        model = build_model(name, VOCAB, d_model=16)
        assert model.attention_flops(2, 64) == 0 and model.memory_flops(2, 64) > 0
    model = build_model("based", VOCAB, d_model=16, window=8)
    linear, window = (b.mixer for b in model.blocks)
    assert model.attention_flops(2, 64) == window.attention_flops(2, 64) > 0
    assert model.memory_flops(2, 64) == linear.memory_flops(2, 64) > 0


@pytest.mark.parametrize("name,params", [
    ("mlstm", {"forget_gate": "exp", "short_conv": 0, "chunk_size": 8}),
    ("mlstm", {"n_heads": 2, "chunk_size": 16}),
    ("hyena", {"order": 3, "short_conv": 0}),
    ("based", {"mixer_pattern": "window,linear", "feature_dim": 4, "n_heads": 2, "window": 8, "chunk_size": 8}),
], ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={x}" for k, x in v.items()))
def test_fast_and_reference_paths_agree_beyond_the_defaults(name, params):
    torch.manual_seed(0)
    model = build_model(name, VOCAB, d_model=16, n_layers=2, **params).double()
    assert_paths_agree(model, torch.randint(0, VOCAB, (2, 29)), atol=1e-8, rtol=1e-6)
