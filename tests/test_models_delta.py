"""Tests of the delta rule (models/scan.py), the deltanet and gated_deltanet families, and the `short_conv`
option of linear_attention and ssm.

The chunked delta rule and the per-token reference are compared in float64 on outputs AND gradients over a
shape table whose ids read B2-T64-H4-N16-P8 (batch, length, heads, key width, value width); the chunk is 16,
so lengths include T < C, T = k C and T = k C + r.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from membench.checks import ConfigError
from membench.models import build_model, family_params, list_models, model_class
from membench.models import scan as scan_module
from membench.models.families.deltanet import DeltaNet
from membench.models.families.gated_deltanet import GatedDeltaNet
from membench.models.scan import delta_rule_chunked, delta_rule_reference
from tests.helpers import DEVICES, assert_paths_agree, assert_same_outputs_and_grads, outputs_and_grads, run_cli

SHAPES = [(2, 64, 4, 16, 16), (1, 1, 2, 8, 8), (3, 37, 2, 8, 4), (2, 100, 1, 4, 8), (1, 130, 4, 8, 8), (2, 5, 3, 4, 4)]
SHAPE_IDS = [f"B{b}-T{t}-H{h}-N{n}-P{p}" for b, t, h, n, p in SHAPES]
CHUNK = 16
VOCAB = 16


def delta_inputs(batch, seq_len, heads, n, p, decay: bool, device="cpu"):
    """Random float64 q, unit-norm k, v, beta in (0, 1) and log-decays in [-1, 0], requiring grad."""
    gen = torch.Generator().manual_seed(batch * 1000 + seq_len)

    def leaf(x):
        return x.to(device).requires_grad_(True)

    q = leaf(torch.randn(batch, seq_len, heads, n, generator=gen, dtype=torch.float64))
    k = leaf(F.normalize(torch.randn(batch, seq_len, heads, n, generator=gen, dtype=torch.float64), dim=-1))
    v = leaf(torch.randn(batch, seq_len, heads, p, generator=gen, dtype=torch.float64))
    beta = leaf(torch.rand(batch, seq_len, heads, generator=gen, dtype=torch.float64))
    log_decay = leaf(-torch.rand(batch, seq_len, heads, generator=gen, dtype=torch.float64)) if decay else None
    return q, k, v, beta, log_decay


# --- the delta rule -----------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("decay", [False, True], ids=["deltanet", "gated"])
@pytest.mark.parametrize("batch,seq_len,heads,n,p", SHAPES, ids=SHAPE_IDS)
def test_chunked_delta_rule_matches_the_recurrence(batch, seq_len, heads, n, p, decay, device):
    inputs = delta_inputs(batch, seq_len, heads, n, p, decay, device)
    out = delta_rule_chunked(*inputs, chunk_size=CHUNK)
    assert out.shape == (batch, seq_len, heads, p) and out.dtype == torch.float64
    assert_same_outputs_and_grads(lambda *a: delta_rule_chunked(*a, chunk_size=CHUNK), delta_rule_reference, inputs)
    _, grads = outputs_and_grads(delta_rule_reference, inputs)
    assert len(grads) == (5 if decay else 4)
    # every input matters (the decay from the second token on: the first one decays the empty state)
    assert all(g.abs().sum() > 0 for g in grads[:4]) and (not decay or seq_len == 1 or grads[4].abs().sum() > 0)


@pytest.mark.parametrize("decay", [False, True], ids=["deltanet", "gated"])
@pytest.mark.parametrize("seq_len,chunk_size", [(11, 4), (3, 4), (8, 4)], ids=["T=2C+3", "T<C", "T=2C"])
def test_chunked_delta_rule_passes_gradcheck(decay, seq_len, chunk_size):
    """The hand-written backward pass of the chunked path against finite differences (float64, tiny shapes)."""
    inputs = delta_inputs(2, seq_len, 2, 3, 2, decay)
    assert torch.autograd.gradcheck(lambda *a: delta_rule_chunked(*a, chunk_size=chunk_size), inputs)


@pytest.mark.parametrize("decay", [False, True], ids=["deltanet", "gated"])
@pytest.mark.parametrize("per_block", [2, 100], ids=["blocks of 2 chunks", "all chunks in one block"])
def test_blocks_of_several_chunks_give_the_same_delta_rule(decay, per_block, monkeypatch):
    """The CPU batches one chunk at a time, other devices all of them at once (`_chunks_per_block`): the same
    outputs and gradients either way, here on the CPU, with a last block shorter than the others."""
    from membench.models import scan

    inputs = delta_inputs(2, 45, 3, 4, 5, decay)  # 12 chunks of 4, the last one padded

    def outputs_and_grads():
        leaves = [None if x is None else x.detach().clone().requires_grad_(True) for x in inputs]
        out = delta_rule_chunked(*leaves, chunk_size=4)
        out.square().sum().backward()
        return [out.detach()] + [x.grad for x in leaves if x is not None]

    one_at_a_time = outputs_and_grads()
    monkeypatch.setattr(scan, "_chunks_per_block", lambda device, chunks: min(per_block, chunks))
    for got, expected in zip(outputs_and_grads(), one_at_a_time):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_blocks_follow_the_device_and_the_cpu_threads():
    """One chunk a block on a CPU with one torch thread, CPU_THREADED_BLOCK with more, all chunks elsewhere;
    with two threads (blocks of 8) the outputs are those of one (blocks of 1)."""
    from membench.models import scan

    before = torch.get_num_threads()
    inputs = delta_inputs(2, 45, 3, 4, 5, True)  # 12 chunks of 4
    try:
        torch.set_num_threads(1)
        one = [scan._chunks_per_block(torch.device("cpu"), n) for n in (3, 100)]
        single = delta_rule_chunked(*inputs, chunk_size=4)
        torch.set_num_threads(2)
        two = [scan._chunks_per_block(torch.device("cpu"), n) for n in (3, 100)]
        threaded = delta_rule_chunked(*inputs, chunk_size=4)
    finally:
        torch.set_num_threads(before)
    assert one == [1, 1] and two == [3, scan.CPU_THREADED_BLOCK]
    assert scan._chunks_per_block(torch.device("cuda"), 100) == 100
    torch.testing.assert_close(threaded, single, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("decay", [False, True], ids=["deltanet", "gated"])
def test_chunk_size_does_not_change_the_delta_rule(decay):
    q, k, v, beta, log_decay = delta_inputs(2, 45, 3, 4, 5, decay)
    expected = delta_rule_reference(q, k, v, beta, log_decay)
    for chunk_size in (1, 2, 7, 16, 64, 1000):
        torch.testing.assert_close(delta_rule_chunked(q, k, v, beta, log_decay, chunk_size=chunk_size), expected)


def test_delta_rule_worked_examples():
    """The examples of delta_rule_reference's docstring, on both paths."""
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    keys = torch.tensor([e1, e2, e1], dtype=torch.float64).view(1, 3, 1, 2)
    values = torch.tensor([3.0, 5.0, 7.0], dtype=torch.float64).view(1, 3, 1, 1)
    ones = torch.ones(1, 3, 1, dtype=torch.float64)
    for fn in (delta_rule_reference, lambda *a: delta_rule_chunked(*a, chunk_size=2)):
        torch.testing.assert_close(fn(keys, keys, values, ones), values)  # the third write replaced the first
    # beta = 1/2: the memory moves halfway to the value at each step, y_t = 1 - 2^-t
    ones = torch.ones(1, 6, 1, 1, dtype=torch.float64)
    expected = 1 - 0.5 ** torch.arange(1, 7, dtype=torch.float64).view(1, 6, 1, 1)
    half = torch.full((1, 6, 1), 0.5, dtype=torch.float64)
    torch.testing.assert_close(delta_rule_reference(ones, ones, ones, half), expected)
    torch.testing.assert_close(delta_rule_chunked(ones, ones, ones, half, chunk_size=4), expected)
    # gated_deltanet's docstring: the same with a constant decay 1/2 gives S_t = S_{t-1} / 4 + 1/2
    log_half = torch.full((1, 6, 1), math.log(0.5), dtype=torch.float64)
    expected = [0.5]
    for _ in range(5):
        expected.append(expected[-1] / 4 + 0.5)
    expected = torch.tensor(expected, dtype=torch.float64).view(1, 6, 1, 1)
    torch.testing.assert_close(delta_rule_reference(ones, ones, ones, half, log_half), expected)
    torch.testing.assert_close(delta_rule_chunked(ones, ones, ones, half, log_half, chunk_size=4), expected)


def test_delta_rule_with_a_tiny_beta_is_linear_attention():
    """beta -> 0 with v scaled by 1/beta is linear attention: S_t = S_{t-1} + k v^T (to first order in beta)."""
    q, k, v, _, _ = delta_inputs(1, 20, 2, 4, 3, decay=False)
    beta = torch.full((1, 20, 2), 1e-7, dtype=torch.float64)
    linear = scan_module.scan_reference(q, k, v)
    torch.testing.assert_close(delta_rule_chunked(q, k, v / 1e-7, beta, chunk_size=8), linear, atol=1e-4, rtol=1e-4)


def test_chunked_delta_rule_is_stable_under_strong_decay():
    """Cumulative log-decays reach -10^4 inside a chunk; only causal differences are exponentiated."""
    q, k, v, beta, _ = delta_inputs(1, 300, 2, 4, 4, decay=False)
    log_decay = torch.full((1, 300, 2), -80.0, dtype=torch.float64)
    out = delta_rule_chunked(q, k, v, beta, log_decay, chunk_size=128)
    assert torch.isfinite(out).all()
    # with such a decay only the current write survives: S_t = beta_t k_t v_t^T, y_t = beta_t (q_t . k_t) v_t
    torch.testing.assert_close(out, beta.unsqueeze(-1) * (q * k).sum(-1, keepdim=True) * v)
    torch.testing.assert_close(out, delta_rule_reference(q, k, v, beta, log_decay))


@pytest.mark.parametrize("decay", [False, True], ids=["deltanet", "gated"])
def test_chunked_delta_rule_under_bf16_autocast(decay):
    """Under bf16 autocast, on bf16 inputs, the chunked path computes in float32 and returns bf16: close to the
    float32 truth."""
    q, k, v, beta, log_decay = (None if t is None else t.detach().float() for t in delta_inputs(2, 200, 2, 8, 8, decay))
    expected = delta_rule_reference(q, k, v, beta, log_decay)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = delta_rule_chunked(q.bfloat16(), k.bfloat16(), v.bfloat16(), beta, log_decay, chunk_size=64)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    torch.testing.assert_close(out.float(), expected, atol=0.1, rtol=0.05)


def test_delta_rule_rejects_a_bad_chunk_size():
    q, k, v, beta, _ = delta_inputs(1, 4, 1, 2, 2, decay=False)
    with pytest.raises(ConfigError, match="chunk_size"):
        delta_rule_chunked(q, k, v, beta, chunk_size=0)


# --- the families ---------------------------------------------------------------------------------------
def test_the_delta_families_are_registered_with_reference_paths(capsys):
    for name in ("deltanet", "gated_deltanet"):
        assert name in list_models() and model_class(name).has_reference_path
    code, out, _ = run_cli(capsys, "models")
    assert code == 0 and "deltanet" in out and "gated_deltanet" in out


def small(name, **params):
    torch.manual_seed(0)
    return build_model(name, VOCAB, d_model=32, n_layers=2, **params)


def carried_floats(model, monkeypatch, seq_len: int = 9) -> int:
    """Floats per sequence the reference path carries from one token to the next: the delta-rule states that
    `delta_rule_step` hands on, plus the last k - 1 inputs of every short convolution (its window)."""
    handed_on = []
    step = scan_module.delta_rule_step

    def counting_step(state, *args):
        state, y = step(state, *args)
        handed_on.append(state.numel() // state.shape[0])
        return state, y

    monkeypatch.setattr(scan_module, "delta_rule_step", counting_step)
    model.set_path("reference")(torch.randint(0, VOCAB, (3, seq_len)))
    assert len(handed_on) == seq_len * model.n_layers  # one step per token and layer
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv1d)]
    window = sum((conv.kernel_size[0] - 1) * conv.in_channels for conv in convs)
    return sum(handed_on) // seq_len + window


@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet"])
@pytest.mark.parametrize("short_conv,n_heads", [(4, 4), (0, 2), (3, 1)])
def test_state_size_is_what_the_reference_path_carries(name, short_conv, n_heads, monkeypatch):
    model = small(name, short_conv=short_conv, n_heads=n_heads)
    d = 32 // n_heads
    conv_window = (short_conv - 1) * 3 * 32 if short_conv else 0  # the last k - 1 inputs of q, k, v
    assert model.state_size(100) == model.state_size(10_000) == carried_floats(model, monkeypatch)
    assert model.state_size(100) == 2 * (n_heads * d * d + conv_window)  # 2 layers


@pytest.mark.parametrize("mixer_class", [DeltaNet, GatedDeltaNet])
@pytest.mark.parametrize("batch,seq_len,heads,n,p", SHAPES, ids=SHAPE_IDS)
def test_delta_mixer_paths_agree(batch, seq_len, heads, n, p, mixer_class):
    """Here N is the head width (keys and values alike): the mixer's width is H * N."""
    torch.manual_seed(0)
    mixer = mixer_class(heads * n, heads, short_conv=4, chunk_size=CHUNK).double()
    assert_paths_agree(mixer, torch.randn(batch, seq_len, heads * n, dtype=torch.float64))


@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet"])
def test_the_delta_rule_is_memory_flops(name):
    """The delta rule is a memory (recall, write, read: 6 B T D d), not token-to-token attention."""
    model = small(name)
    assert model.attention_flops(2, 64) == 0
    assert model.memory_flops(2, 64) == 2 * 6 * 2 * 64 * 32 * 8  # 2 layers, D = 32, d = 8


@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet"])
def test_delta_families_do_not_depend_on_the_chunk_size(name):
    tokens = torch.randint(0, VOCAB, (2, 77))
    outputs = [small(name, chunk_size=c).double()(tokens) for c in (1, 8, 64, 128)]
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0], atol=1e-10, rtol=1e-8)


def test_gated_deltanet_decay_is_data_dependent_and_in_range():
    mixer = small("gated_deltanet").mixers()[0]
    x = 3 * torch.randn(2, 50, 32)
    a = mixer.log_decay(x).exp()  # (B, T, H)
    assert a.shape == (2, 50, 4) and (a > 0).all() and (a <= 1).all()
    assert a.std(dim=1).min() > 0  # varies along the sequence, per head
    assert small("deltanet").mixers()[0].log_decay(x) is None


@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet"])
def test_delta_family_params_are_validated(name):
    with pytest.raises(ConfigError, match="short_conv"):
        build_model(name, VOCAB, short_conv=-1)
    with pytest.raises(ConfigError, match="n_heads"):
        build_model(name, VOCAB, d_model=30, n_heads=4)
    with pytest.raises(ConfigError, match="chunk_size"):
        build_model(name, VOCAB, chunk_size=0)


# --- short_conv on linear_attention and ssm ----------------------------------------------------------
@pytest.mark.parametrize("name,default", [("linear_attention", 0), ("ssm", 4), ("deltanet", 4), ("gated_deltanet", 4)])
def test_short_conv_is_causal_and_changes_the_output(name, default):
    """With every other weight equal, an identity convolution (last tap 1) gives the model without it; other taps
    change the output, causally. The default is each family's own (off for linear_attention)."""
    assert family_params(name)["short_conv"] == default
    off, on = small(name, short_conv=0), small(name, short_conv=4)
    on.load_state_dict(off.state_dict(), strict=False)  # everything but the convolutions
    convs = [m for m in on.modules() if isinstance(m, torch.nn.Conv1d)]
    assert len(convs) == 2 and not any(isinstance(m, torch.nn.Conv1d) for m in off.modules())
    with torch.no_grad():
        for conv in convs:
            conv.weight.zero_()
            conv.weight[..., -1] = 1.0
            conv.bias.zero_()
    tokens = torch.randint(0, VOCAB, (2, 30))
    torch.testing.assert_close(on(tokens), off(tokens))
    with torch.no_grad():
        for conv in convs:
            conv.weight.normal_()
    base = on(tokens)
    assert not torch.allclose(base, off(tokens), atol=1e-3)
    changed = tokens.clone()
    changed[:, 20:] = (changed[:, 20:] + 1) % VOCAB
    torch.testing.assert_close(on(changed)[:, :20], base[:, :20])
    assert on.state_size(30) - off.state_size(30) == sum(3 * c.in_channels for c in convs)  # k - 1 = 3 inputs each
