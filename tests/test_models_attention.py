"""Tests of the attention families (transformer, sliding_window, memory_transformer, rnn_attention), the
shared layers (ShortConv, rotary embedding, attention helpers) and the recurrent reference path.

Fast and reference paths are compared in float64 on outputs AND gradients over a shape table whose
ids read B2-T64-H4-D16 (batch, length, heads, head width); lengths include ones that are not a
multiple of any block, window or segment size.
"""

from __future__ import annotations

import pytest
import torch

from membench.models import build_model
from membench.models.families.memory_transformer import MemoryTransformerModel
from membench.models.families.sliding_window import WindowAttention, band_mask
from membench.models.families.transformer import GatedConv
from membench.models.layers import (
    RotaryEmbedding,
    SelfAttention,
    ShortConv,
    attention_reference,
    causal_attention,
    causal_mask,
)
from tests.helpers import DEVICES, assert_paths_agree, counted_flops

SHAPES = [(2, 64, 4, 16), (1, 1, 2, 8), (3, 37, 2, 8), (2, 100, 1, 4), (1, 130, 4, 8)]
SHAPE_IDS = [f"B{b}-T{t}-H{h}-D{d}" for b, t, h, d in SHAPES]
VOCAB = 16


# --- layers ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel_size", [1, 3, 4])
@pytest.mark.parametrize("path", ["fast", "reference"])
def test_short_conv_is_the_explicit_shifted_sum(kernel_size, path):
    torch.manual_seed(0)
    conv = ShortConv(6, kernel_size).double()
    conv.path = path
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    w, b = conv.conv.weight[:, 0, :], conv.conv.bias  # (D, k), (D,)
    padded = torch.cat((x.new_zeros(2, kernel_size - 1, 6), x), dim=1)  # (B, k-1+T, D)
    expected = b + sum(w[:, j] * padded[:, j : j + 9] for j in range(kernel_size))
    torch.testing.assert_close(conv(x), expected)
    conv.path = "reference"  # conv1d, which FlopCounterMode counts (not the fast path's multiply-adds)
    assert counted_flops(conv, x) == conv.flops(2, 9)
    assert conv.state_size() == (kernel_size - 1) * 6


@pytest.mark.parametrize("kernel_size,seq_len", [(1, 7), (4, 32), (4, 2), (3, 1)])
def test_short_conv_fast_path_equals_conv1d_in_outputs_and_gradients(kernel_size, seq_len):
    """The CPU fast path (shifted multiply-adds) against the reference conv1d, in float32 as training runs
    it, for lengths above and below the kernel size: outputs and the gradients of input, taps and bias."""
    torch.manual_seed(0)
    conv = ShortConv(72, kernel_size)
    x = torch.randn(3, seq_len, 72)
    results = {}
    for path in ("fast", "reference"):
        conv.path = path
        conv.zero_grad(set_to_none=True)
        leaf = x.clone().requires_grad_(True)
        y = conv(leaf)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        results[path] = [y, leaf.grad, conv.conv.weight.grad, conv.conv.bias.grad]
    for fast, reference in zip(results["fast"], results["reference"]):
        torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-5)  # sums over B T in another order


def test_short_conv_is_causal_with_its_receptive_field():
    conv = ShortConv(4, kernel_size=4)
    x = torch.randn(1, 12, 4)
    changed = x.clone()
    changed[:, 5] += 1.0
    diff = (conv(changed) - conv(x)).abs().sum(-1)[0]  # (T,)
    assert (diff[:5] == 0).all() and (diff[5:9] > 0).all() and (diff[9:] == 0).all()


def test_short_conv_rejects_a_bad_kernel():
    with pytest.raises(ValueError, match="kernel_size"):
        ShortConv(4, kernel_size=0)


def test_rotary_scores_depend_on_relative_position_only():
    rotary = RotaryEmbedding(8).double()
    q, k = torch.randn(2, 3, 5, 8, dtype=torch.float64).unbind(0)
    scores = rotary(q) @ rotary(k).transpose(-2, -1)
    shifted = rotary(q, offset=11) @ rotary(k, offset=11).transpose(-2, -1)
    torch.testing.assert_close(scores, shifted)
    torch.testing.assert_close(rotary(q).norm(dim=-1), q.norm(dim=-1))  # a rotation
    assert not torch.allclose(rotary(q), q)
    with pytest.raises(ValueError, match="even head width"):
        RotaryEmbedding(5)


@pytest.mark.parametrize("batch,seq_len,heads,head_dim", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("device", DEVICES)
def test_causal_attention_sdpa_matches_explicit(batch, seq_len, heads, head_dim, device):
    q, k, v = torch.randn(3, batch, heads, seq_len, head_dim, dtype=torch.float64, device=device).unbind(0)
    torch.testing.assert_close(causal_attention(q, k, v, "fast"), causal_attention(q, k, v, "reference"))
    with pytest.raises(ValueError, match="path"):
        causal_attention(q, k, v, "quick")


# --- transformer -----------------------------------------------------------------------------------
@pytest.mark.parametrize("batch,seq_len,heads,head_dim", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("rope", [True, False], ids=["rope", "none"])
def test_self_attention_paths_agree(batch, seq_len, heads, head_dim, rope):
    torch.manual_seed(0)
    mixer = SelfAttention(heads * head_dim, heads, rope=rope).double()
    assert_paths_agree(mixer, torch.randn(batch, seq_len, heads * head_dim, dtype=torch.float64))


def test_conv_attention_hybrid_is_built_from_the_pattern():
    model = build_model("transformer", VOCAB, d_model=32, n_layers=4, mixer_pattern="conv,attention",
                        mlp_ratio=0, position="none")
    kinds = [type(b.mixer) for b in model.blocks]
    assert kinds == [GatedConv, SelfAttention, GatedConv, SelfAttention]
    assert all(b.mlp is None for b in model.blocks)
    assert all(b.mixer.rotary is None for b in model.blocks if isinstance(b.mixer, SelfAttention))
    tokens = torch.randint(0, VOCAB, (2, 21))
    model.set_path("reference")
    assert abs(counted_flops(model, tokens) - model.flops(2, 21)) <= 0.01 * model.flops(2, 21)
    assert model.state_size(100) == 2 * (2 * 100 * 32) + 2 * (3 * 32)


def test_conv_residual_adds_the_mixer_input_back():
    torch.manual_seed(0)
    gated = GatedConv(16, kernel_size=3)
    with_residual = GatedConv(16, kernel_size=3, residual=True)
    with_residual.load_state_dict(gated.state_dict())
    x = torch.randn(2, 9, 16)
    assert torch.allclose(with_residual(x), gated(x) + x)
    assert not torch.allclose(gated(x) + x, gated(x))


@pytest.mark.parametrize(
    "params,message",
    [
        ({"n_heads": 3}, "divisible by n_heads"),
        ({"n_heads": 0}, "n_heads"),
        ({"position": "absolute"}, "position must be one of rope, none"),
        ({"mixer_pattern": "attention,mamba"}, "mixer_pattern must be a comma list"),
        ({"mixer_pattern": "conv"}, "no attention layer"),
        ({"conv_residual": 1}, "conv_residual must be true or false"),
        ({"mlp_ratio": -1}, "mlp_ratio"),
    ],
)
def test_transformer_rejects_bad_params(params, message):
    with pytest.raises(ValueError, match=message):
        build_model("transformer", VOCAB, d_model=32, **params)


def test_rope_head_width_must_be_even():
    with pytest.raises(ValueError, match="even head width"):
        build_model("transformer", VOCAB, d_model=12, n_heads=4)
    build_model("transformer", VOCAB, d_model=12, n_heads=4, position="none")


# --- sliding_window --------------------------------------------------------------------------------
@pytest.mark.parametrize("batch,seq_len,heads,head_dim", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("window", [5, 16, 200])
def test_window_attention_paths_agree(batch, seq_len, heads, head_dim, window):
    torch.manual_seed(0)
    mixer = WindowAttention(heads * head_dim, heads, window).double()
    assert_paths_agree(mixer, torch.randn(batch, seq_len, heads * head_dim, dtype=torch.float64))


def test_window_of_one_reads_only_the_current_token():
    mixer = WindowAttention(8, 2, 1).double()
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    assert_paths_agree(mixer, x)
    _, _, v = mixer.qkv(x).chunk(3, dim=-1)  # a single key: the weights are 1, the output is W_o v_t
    torch.testing.assert_close(mixer(x), mixer.out(v))


@pytest.mark.parametrize("seq_len,window", [(23, 5), (32, 8), (7, 3), (5, 9)])
def test_both_window_paths_equal_the_full_banded_mask(seq_len, window):
    """The blocked forms equal attention over the whole T x T matrix under the band 0 <= t - s < w."""
    mixer = WindowAttention(8, 2, window)
    q, k, v = torch.randn(3, 2, 2, seq_len, 4, dtype=torch.float64).unbind(0)
    pos = torch.arange(seq_len)
    full = attention_reference(q, k, v, band_mask(pos, pos, window))
    torch.testing.assert_close(mixer._fast(q, k, v), full)
    torch.testing.assert_close(mixer._reference(q, k, v), full)


def test_band_mask_worked_example():
    pos = torch.arange(7)
    assert band_mask(pos, pos, 3)[4].nonzero().flatten().tolist() == [2, 3, 4]
    assert torch.equal(band_mask(pos, pos, 7), causal_mask(7, "cpu"))


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_the_window_limits_the_horizon(path):
    """One layer: a change at position s reaches s .. s+w-1 and nothing else."""
    window, s = 6, 9
    mixer = WindowAttention(16, 2, window).double()
    mixer.path = path
    x = torch.randn(1, 40, 16, dtype=torch.float64)
    changed = x.clone()
    changed[:, s] += 1.0
    reached = ((mixer(changed) - mixer(x)).abs().amax(-1)[0] > 1e-12).nonzero().flatten().tolist()
    assert reached == list(range(s, s + window))


def test_window_attention_flops_and_state_are_linear_in_length():
    mixer = WindowAttention(16, 2, 8).double()
    mixer.path = "reference"
    for seq_len in (1, 8, 13, 50):
        assert counted_flops(mixer, torch.randn(2, seq_len, 16, dtype=torch.float64)) == mixer.flops(2, seq_len)
    # n full blocks of w queries read 2w-1 keys each, except the first (w keys): 4*D*(n*w*(2w-1) - w*(w-1))
    assert mixer.attention_flops(1, 8000) == 4 * 16 * (1000 * 8 * 15 - 8 * 7)
    assert mixer.state_size(5) == 2 * 5 * 16 and mixer.state_size(4096) == mixer.state_size(8192) == 2 * 8 * 16


# --- memory_transformer ----------------------------------------------------------------------------
def small_rmt(**params) -> MemoryTransformerModel:
    torch.manual_seed(0)
    return build_model("memory_transformer", VOCAB, d_model=16, n_layers=2, n_heads=2, **params).double()


@pytest.mark.parametrize("seq_len", [1, 3, 4, 9, 16, 30])
def test_memory_transformer_paths_agree(seq_len):
    model = small_rmt(segment_len=4, num_memory=2)
    assert_paths_agree(model, torch.randint(0, VOCAB, (2, seq_len)), atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_memory_transformer_is_exactly_causal_across_segment_boundaries(path):
    model = small_rmt(segment_len=4, num_memory=2).set_path(path)
    tokens = torch.randint(0, VOCAB, (1, 18))
    base = model(tokens)
    for t in range(17):
        changed = tokens.clone()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 1) % VOCAB
        torch.testing.assert_close(model(changed)[:, : t + 1], base[:, : t + 1], atol=1e-12, rtol=0)


def test_memory_carries_information_across_segments():
    """A token in segment 0 reaches segment 3 only through the memory: with no memory path (each
    segment alone) it could not."""
    model = small_rmt(segment_len=4, num_memory=2)
    tokens = torch.randint(0, VOCAB, (1, 16))
    changed = tokens.clone()
    changed[:, 1] = (changed[:, 1] + 1) % VOCAB
    assert not torch.allclose(model(changed)[:, 12:], model(tokens)[:, 12:])
    # and the gradient of the last segment's output reaches the first memory through all segments
    model.zero_grad()
    model(tokens)[:, 12:].sum().backward()
    assert model.memory.grad.abs().sum() > 0


def test_memory_transformer_cost_accounting():
    model = small_rmt(segment_len=4, num_memory=2).set_path("reference")
    assert model.stack_lengths(10) == [8, 8, 4]  # segments of 4, 4, 2: [m; x; m], [m; x; m], [m; x]
    assert model.stack_lengths(4) == [6] and model.stack_lengths(5) == [8, 3]
    for seq_len in (3, 10, 17):
        tokens = torch.randint(0, VOCAB, (2, seq_len))
        assert counted_flops(model, tokens) == model.flops(2, seq_len)
    d = 16
    assert model.state_size(4096) == model.state_size(8192) == 2 * d + 2 * (2 * (2 + 4) * d)
    # 999 stacks of 8 vectors and a last one of 6, in each of the 2 layers: linear in length
    assert model.attention_flops(1, 4000) == 2 * 4 * d * (999 * 8 * 8 + 6 * 6)


@pytest.mark.parametrize("param", ["segment_len", "num_memory", "n_heads"])
def test_memory_transformer_rejects_bad_params(param):
    with pytest.raises(ValueError, match=param):
        build_model("memory_transformer", VOCAB, **{param: 0})


