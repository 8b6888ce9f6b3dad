"""Tests of the scan families (linear_attention, ssm), their shared scan and the external memory.

The chunked scan and the per-token reference are compared in float64 on outputs AND gradients over a
shape table whose ids read B2-T64-H4-D16 (batch, length, heads, head width); lengths include ones
shorter than a chunk and ones that are not a multiple of it. The external memory's addressing and
write are checked against hand-computed values.
"""

from __future__ import annotations

import math

import pytest
import torch

from membench.models import build_model
from membench.models.families.linear_attention import LinearAttention
from membench.models.families.ssm import SelectiveSSM
from membench.models.scan import scan_chunked, scan_reference
from tests.helpers import DEVICES, assert_paths_agree, assert_same_outputs_and_grads

SHAPES = [(2, 64, 4, 16), (1, 1, 2, 8), (3, 37, 2, 8), (2, 100, 1, 4), (1, 130, 4, 8), (2, 5, 3, 4)]
SHAPE_IDS = [f"B{b}-T{t}-H{h}-D{d}" for b, t, h, d in SHAPES]
CHUNK = 16  # so that the table has T < C, T = k C and T = k C + r


def scan_inputs(batch, seq_len, heads, dim, shared_qk: bool, decay: bool, device="cpu"):
    """Random float64 q, k (shared by all heads when `shared_qk`), v and log-decays, requiring grad."""
    gen = torch.Generator().manual_seed(batch * 1000 + seq_len)
    qk_heads = 1 if shared_qk else heads

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device).requires_grad_(True)

    q, k, v = rand(batch, seq_len, qk_heads, dim), rand(batch, seq_len, qk_heads, dim), rand(batch, seq_len, heads, dim)
    log_decay = None
    if decay:
        log_decay = (-2 * torch.rand(batch, seq_len, heads, generator=gen, dtype=torch.float64)).to(device)
        log_decay.requires_grad_(True)
    return q, k, v, log_decay


# --- the scan ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("decay,shared_qk", [(False, False), (True, True), (True, False)],
                         ids=["linear-attention", "ssd-shared-BC", "decay-per-head-qk"])
@pytest.mark.parametrize("batch,seq_len,heads,dim", SHAPES, ids=SHAPE_IDS)
def test_chunked_scan_matches_the_recurrence(batch, seq_len, heads, dim, decay, shared_qk, device):
    inputs = scan_inputs(batch, seq_len, heads, dim, shared_qk, decay, device)
    assert scan_chunked(*inputs, chunk_size=CHUNK).shape == (batch, seq_len, heads, dim)
    assert_same_outputs_and_grads(lambda *a: scan_chunked(*a, chunk_size=CHUNK), scan_reference, inputs)


@pytest.mark.parametrize("decay", [False, True], ids=["no-decay", "decay"])
def test_chunk_size_does_not_change_the_scan(decay):
    q, k, v, log_decay = scan_inputs(2, 45, 3, 4, shared_qk=False, decay=decay)
    expected = scan_chunked(q, k, v, log_decay, chunk_size=45)
    for chunk_size in (1, 2, 7, 16, 64, 1000):
        torch.testing.assert_close(scan_chunked(q, k, v, log_decay, chunk_size=chunk_size), expected)


def test_scan_worked_examples():
    ones = torch.ones(1, 6, 1, 1, dtype=torch.float64)
    steps = torch.arange(1, 7, dtype=torch.float64).view(1, 6, 1, 1)
    # no decay: S_t = t, y_t = t
    torch.testing.assert_close(scan_chunked(ones, ones, ones, chunk_size=4), steps)
    # constant decay a: y_t = sum_{j<=t} a^(t-j) = (1 - a^t) / (1 - a)
    a = 0.5
    log_decay = torch.full((1, 6, 1), math.log(a), dtype=torch.float64)
    expected = (1 - a**steps) / (1 - a)
    torch.testing.assert_close(scan_reference(ones, ones, ones, log_decay), expected)
    torch.testing.assert_close(scan_chunked(ones, ones, ones, log_decay, chunk_size=4), expected)


def test_chunked_scan_is_stable_under_strong_decay():
    """Cumulative log-decays reach -10^4 inside a chunk; only causal differences are exponentiated."""
    q, k, v, _ = scan_inputs(1, 300, 2, 4, shared_qk=False, decay=False)
    log_decay = torch.full((1, 300, 2), -80.0, dtype=torch.float64)
    out = scan_chunked(q, k, v, log_decay, chunk_size=128)
    assert torch.isfinite(out).all()
    # with such a decay only the current token survives: y_t = (q_t . k_t) v_t
    torch.testing.assert_close(out, (q * k).sum(-1, keepdim=True) * v)
    torch.testing.assert_close(out, scan_reference(q, k, v, log_decay))


def test_scan_rejects_a_bad_chunk_size():
    q, k, v, _ = scan_inputs(1, 4, 1, 2, shared_qk=False, decay=False)
    with pytest.raises(ValueError, match="chunk_size"):
        scan_chunked(q, k, v, chunk_size=0)


# --- the mixers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch,seq_len,heads,dim", SHAPES, ids=SHAPE_IDS)
def test_linear_attention_paths_agree(batch, seq_len, heads, dim):
    torch.manual_seed(0)
    mixer = LinearAttention(heads * dim, heads, chunk_size=CHUNK).double()
    assert_paths_agree(mixer, torch.randn(batch, seq_len, heads * dim, dtype=torch.float64))


@pytest.mark.parametrize("batch,seq_len,heads,dim", SHAPES, ids=SHAPE_IDS)
def test_ssm_paths_agree(batch, seq_len, heads, dim):
    """Here D is the SSM head width (d_inner / n_heads), with expand 2 and d_state 8."""
    torch.manual_seed(0)
    mixer = SelectiveSSM(heads * dim // 2, d_state=8, expand=2, n_heads=heads, short_conv=4, chunk_size=CHUNK)
    mixer = mixer.double()
    assert_paths_agree(mixer, torch.randn(batch, seq_len, heads * dim // 2, dtype=torch.float64))


@pytest.mark.parametrize("name", ["linear_attention", "ssm"])
def test_model_output_does_not_depend_on_the_chunk_size(name):
    tokens = torch.randint(0, 16, (2, 77))
    outputs = []
    for chunk_size in (1, 8, 64, 128):
        torch.manual_seed(0)
        outputs.append(build_model(name, 16, d_model=32, chunk_size=chunk_size).double()(tokens))
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0], atol=1e-10, rtol=1e-8)


def test_linear_attention_output_is_a_convex_combination_of_the_values():
    """With v = x and an identity output projection, every output channel lies between the smallest
    and the largest value seen so far: the normaliser keeps the scale of one value at any length."""
    torch.manual_seed(0)
    d_model, seq_len = 8, 500
    mixer = LinearAttention(d_model, n_heads=2, chunk_size=64).double()
    with torch.no_grad():
        mixer.qkv.weight[2 * d_model :] = torch.eye(d_model)
        mixer.out.weight.copy_(torch.eye(d_model))
    x = 3 * torch.randn(1, seq_len, d_model, dtype=torch.float64)
    out = mixer(x)
    assert (out <= x.cummax(dim=1).values + 1e-6).all()
    assert (out >= x.cummin(dim=1).values - 1e-6).all()


def test_ssm_state_size_and_validation():
    model = build_model("ssm", 16, d_model=64, n_layers=2, d_state=16, expand=2, short_conv=4)
    # per layer: d_inner * N = 128 * 16 SSM states + (K - 1) * (d_inner + 2N) = 3 * 160 conv inputs
    assert model.state_size(100) == 2 * (128 * 16 + 3 * 160)
    with pytest.raises(ValueError, match="n_heads"):
        build_model("ssm", 16, d_model=64, n_heads=3)
    with pytest.raises(ValueError, match="d_state"):
        build_model("ssm", 16, d_state=0)
    with pytest.raises(ValueError, match="n_heads"):
        build_model("linear_attention", 16, d_model=64, n_heads=5)


