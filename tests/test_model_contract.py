"""Contract tests run over every registered model family: a family registered with @register_model is
tested here with no new test written."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from membench.checks import ConfigError
from membench.models import UnknownNameError, build_model, family_params, list_models, model_class, params_matched
from tests.helpers import DEVICES, assert_paths_agree

MODELS = list_models()
FAMILIES = {
    "mlp", "rnn", "lstm", "gru", "transformer", "rnn_attention", "external_memory", "linear_attention", "ssm",
    "sliding_window", "memory_transformer",
}
VOCAB = 16
COST_CLASSES = ("O(n)", "O(n*w)", "O(n log n)", "O(n^2)")
GROWING_STATE = ("O(n log n)", "O(n^2)")  # attention keeps every key, a long convolution every input


def small(name: str, device="cpu", d_model: int = 32, **kw):
    torch.manual_seed(0)
    return build_model(name, VOCAB, d_model=d_model, n_layers=2, **kw).to(device)


def test_all_eleven_families_are_registered():
    assert FAMILIES <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("device", DEVICES)
def test_shape_dtype_and_interface(name, device):
    model = small(name, device)
    for batch, seq_len in ((2, 1), (3, 17), (2, 64)):
        tokens = torch.randint(0, VOCAB, (batch, seq_len), device=device)
        logits = model(tokens)
        assert logits.shape == (batch, seq_len, VOCAB) and logits.dtype == torch.float32
        assert torch.isfinite(logits).all()
        assert model.features(tokens).shape == (batch, seq_len, model.d_model)
    assert model.name == name
    assert model.num_params() == sum(p.numel() for p in model.parameters()) > 0
    assert model.cost_class in COST_CLASSES and model.memory_mechanism


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("path", ["fast", "reference"])
def test_causality(name, path):
    """Changing tokens after position t never changes the logits at or before t."""
    model = small(name).set_path(path).eval()
    seq_len = 40
    tokens = torch.randint(0, VOCAB, (2, seq_len))
    base = model(tokens)
    for t in (0, 7, 23, 38):
        changed = tokens.clone()
        changed[:, t + 1 :] = torch.randint(0, VOCAB, (2, seq_len - t - 1))
        out = model(changed)
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], atol=1e-5, rtol=1e-5)
    # and the future does matter somewhere, for every family but the memoryless control
    if name != "mlp":
        changed = tokens.clone()
        changed[:, :20] = (changed[:, :20] + 1) % VOCAB
        assert not torch.allclose(model(changed)[:, 30:], base[:, 30:])


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_parameter(name):
    model = small(name)
    tokens = torch.randint(0, VOCAB, (3, 24))
    model(tokens).logsumexp(-1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, f"{name}: no gradient reaches {missing}"


@pytest.mark.parametrize("name", MODELS)
def test_overfits_a_tiny_fixed_batch(name):
    model = small(name)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (8, 16), generator=gen)
    targets = torch.randint(0, VOCAB, (8, 16), generator=gen)
    # the memoryless control can only fit targets that are a function of the current token
    if name == "mlp":
        targets = (tokens * 3 + 1) % VOCAB
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        loss = torch.nn.functional.cross_entropy(model(tokens).flatten(0, 1), targets.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if loss.item() < 0.1 * losses[0]:
            break
    assert losses[-1] < 0.1 * losses[0], f"{name}: loss {losses[0]:.3f} -> {losses[-1]:.3f} in {len(losses)} steps"


@pytest.mark.parametrize("name", MODELS)
def test_state_size_follows_the_cost_class(name):
    model = small(name)
    sizes = {n: model.state_size(n) for n in (64, 256, 4096, 8192)}
    assert all(isinstance(s, int) and s >= 0 for s in sizes.values())
    if model.cost_class in GROWING_STATE:
        assert sizes[64] < sizes[256] < sizes[4096] < sizes[8192]
    else:
        assert sizes[4096] == sizes[8192], f"{name}: a bounded-memory family's state grows: {sizes}"
    if name == "mlp":
        assert sizes[64] == 0
    else:
        assert sizes[64] > 0


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("batch,seq_len", [(2, 32), (3, 96)])
def test_flops_match_flop_counter_on_the_reference_path(name, batch, seq_len):
    model = small(name).set_path("reference")
    tokens = torch.randint(0, VOCAB, (batch, seq_len))
    with FlopCounterMode(display=False) as counter:
        model(tokens)
    counted, analytic = counter.get_total_flops(), model.flops(batch, seq_len)
    assert abs(analytic - counted) <= 0.05 * counted, f"{name}: analytic {analytic} vs counted {counted}"
    attention, memory = model.attention_flops(batch, seq_len), model.memory_flops(batch, seq_len)
    assert attention >= 0 and memory >= 0 and attention + memory <= analytic
    if model.cost_class == "O(n^2)":
        assert attention > 0


@pytest.mark.parametrize("name", ["linear_attention", "ssm", "external_memory"])
def test_a_scan_or_external_memory_is_memory_flops_not_attention(name):
    """Token-to-token attention FLOPs are attention's alone: a scan or a memory read/write is memory FLOPs."""
    model = small(name)
    assert model.attention_flops(2, 64) == 0
    assert model.memory_flops(2, 64) > 0


@pytest.mark.parametrize("name", MODELS)
def test_runs_under_bf16_autocast(name):
    model = small(name)
    tokens = torch.randint(0, VOCAB, (2, 33))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(tokens)
    assert logits.shape == (2, 33, VOCAB) and torch.isfinite(logits.float()).all()


def test_the_named_fast_paths_have_references():
    for name in ("transformer", "linear_attention", "ssm"):
        assert model_class(name).has_reference_path, f"{name} needs a reference path"


@pytest.mark.parametrize("name", [m for m in MODELS if model_class(m).has_reference_path])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch,seq_len", [(2, 1), (2, 37), (1, 130)], ids=lambda v: str(v))
def test_fast_and_reference_paths_agree(name, device, batch, seq_len):
    model = small(name, device).double()
    assert_paths_agree(model, torch.randint(0, VOCAB, (batch, seq_len), device=device), atol=1e-6, rtol=1e-5)


def test_unknown_names_and_params_are_rejected():
    with pytest.raises(UnknownNameError, match="did you mean 'transformer'"):
        build_model("transfomer", VOCAB)
    with pytest.raises(ValueError, match="no_such_param"):
        build_model("lstm", VOCAB, no_such_param=3)
    with pytest.raises(ValueError, match="d_model"):
        build_model("lstm", VOCAB, d_model=0)
    with pytest.raises(ValueError, match="mlp_ratio"):
        build_model("lstm", VOCAB, mlp_ratio=-1)


@pytest.mark.parametrize("name", MODELS)
def test_params_matched_lands_within_ten_percent(name):
    target = 60_000
    model = params_matched(name, target, vocab_size=VOCAB, n_layers=2)
    assert abs(model.num_params() - target) <= 0.10 * target


@pytest.mark.parametrize("name", MODELS)
def test_family_params_are_the_constructors_own_and_build_as_given(name):
    """What `membench models` lists and a spec may set: every keyword of the family's constructor beyond the
    three base arguments, with its default; building with every default given explicitly changes nothing."""
    params = family_params(name)
    assert not {"self", "vocab_size", "d_model", "n_layers"} & set(params)
    torch.manual_seed(0)
    explicit = build_model(name, VOCAB, d_model=32, n_layers=2, **params)
    torch.manual_seed(0)
    implicit = build_model(name, VOCAB, d_model=32, n_layers=2)
    tokens = torch.randint(0, VOCAB, (2, 9))
    torch.testing.assert_close(explicit(tokens), implicit(tokens))


@pytest.mark.parametrize("name", MODELS)
def test_every_int_and_bool_param_is_checked_before_the_family_builds(name):
    """The one rule of models/base.py: an int param below its minimum (1, or 0 where 0 switches a part off), a
    float where an int belongs, or a number where a bool belongs is a one-line ConfigError naming the param."""
    from membench.models.base import ZERO_MEANS_OFF

    for param, default in family_params(name).items():
        if isinstance(default, bool):
            bad_values = [1]
        elif isinstance(default, int):
            bad_values = [(-1 if param in ZERO_MEANS_OFF else 0), 2.5, True]
        else:
            continue
        for bad in bad_values:
            with pytest.raises(ConfigError, match=f"^{param} must be"):
                small(name, **{param: bad})
