"""torch's fused RNN layers never run in reduced precision under autocast (ATen would cast cuDNN's to fp16
even under bf16 autocast): checked on the CPU through what the layer sees and what it returns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from membench.models import build_model
from membench.models.families.recurrent import RecurrentMixer

RECURRENT = ["rnn", "lstm", "gru", "rnn_attention"]


def seen_by_rnns(model, tokens) -> list[tuple]:
    """(input dtype, autocast on?, output dtype) of every fused RNN layer in one forward under bf16 autocast."""
    seen = []
    hooks = []
    for module in model.modules():
        if isinstance(module, nn.RNNBase):
            hooks.append(module.register_forward_pre_hook(
                lambda m, args: seen.append([args[0].dtype, torch.is_autocast_enabled("cpu")])))
            hooks.append(module.register_forward_hook(lambda m, args, out: seen[-1].append(out[0].dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(tokens)
    for hook in hooks:
        hook.remove()
    return [tuple(s) for s in seen]


@pytest.mark.parametrize("name", RECURRENT)
def test_the_fused_rnn_runs_in_float32_under_autocast(name):
    torch.manual_seed(0)
    model = build_model(name, 16, d_model=32, n_layers=2)
    seen = seen_by_rnns(model, torch.randint(0, 16, (2, 12)))
    assert seen == [(torch.float32, False, torch.float32)] * 2


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_the_mixer_under_autocast_matches_fp32_with_its_gradients(kind):
    torch.manual_seed(0)
    mixer = RecurrentMixer(kind, 16)
    x = torch.randn(3, 20, 16)
    results = []
    for enabled in (False, True):
        mixer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            out = mixer(x)
        out.pow(2).sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in mixer.parameters()]))
    (out32, grads32), (out_ac, grads_ac) = results
    torch.testing.assert_close(out_ac, out32)
    for g_ac, g32 in zip(grads_ac, grads32):
        torch.testing.assert_close(g_ac, g32)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_fp32_results_are_unchanged_outside_autocast(kind):
    """Outside autocast the fast path is torch's layer called as before (bit for bit)."""
    torch.manual_seed(0)
    mixer = RecurrentMixer(kind, 16)
    x = torch.randn(2, 9, 16)
    assert torch.equal(mixer(x), mixer.rnn(x)[0])
