"""Tests of `allow_neg_eigval` (Grazzi et al., ICLR 2025): transitions with eigenvalues in (-1, 1] on deltanet,
gated_deltanet (beta = 2 sigmoid) and ssm (a = 2 exp(dt A) - 1).

The chunked forms are compared with the per-token loops in float64 on outputs AND gradients (ids read
B2-T64-H4-N16-P8: batch, length, heads, key width, value width; the chunk is 16, so lengths include T < C,
T = k C and T = k C + r); then the families' two paths, the params, and what the option is for: a one-layer
deltanet that tracks parity far beyond its training length, where the default one does not.
"""

from __future__ import annotations

import doctest
import math

import pytest
import torch
import torch.nn.functional as F

from membench.checks import ConfigError
from membench.models import build_model, family_params
from membench.models.families import ssm as ssm_module
from membench.models.families.deltanet import DeltaNet
from membench.models.families.gated_deltanet import GatedDeltaNet
from membench.models.families.ssm import SelectiveSSM, signed_decay
from membench.models.scan import delta_rule_chunked, delta_rule_reference, scan_chunked, scan_reference
from tests.helpers import DEVICES, assert_paths_agree, assert_same_outputs_and_grads

SHAPES = [(2, 64, 4, 16, 8), (1, 1, 2, 8, 8), (3, 37, 2, 8, 4), (1, 130, 4, 8, 8)]
SHAPE_IDS = [f"B{b}-T{t}-H{h}-N{n}-P{p}" for b, t, h, n, p in SHAPES]
CHUNK = 16
FAMILIES = ("deltanet", "gated_deltanet", "ssm")


def leaf(x: torch.Tensor, device: str = "cpu") -> torch.Tensor:
    return x.to(device).requires_grad_(True)


# --- the delta rule with beta in (0, 2) ---------------------------------------------------------------
def delta_inputs(batch, seq_len, heads, n, p, decay: bool, device="cpu"):
    """Random float64 q, unit-norm k, v, beta uniform in (0, 2) and log-decays in [-1, 0], requiring grad."""
    gen = torch.Generator().manual_seed(batch * 1000 + seq_len)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    q, k = rand(batch, seq_len, heads, n), F.normalize(rand(batch, seq_len, heads, n), dim=-1)
    v = rand(batch, seq_len, heads, p)
    beta = 2 * torch.rand(batch, seq_len, heads, generator=gen, dtype=torch.float64)
    log_decay = -torch.rand(batch, seq_len, heads, generator=gen, dtype=torch.float64) if decay else None
    return [None if x is None else leaf(x, device) for x in (q, k, v, beta, log_decay)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("decay", [False, True], ids=["deltanet", "gated"])
@pytest.mark.parametrize("batch,seq_len,heads,n,p", SHAPES, ids=SHAPE_IDS)
def test_chunked_delta_rule_with_beta_up_to_two_matches_the_recurrence(batch, seq_len, heads, n, p, decay, device):
    inputs = delta_inputs(batch, seq_len, heads, n, p, decay, device)
    beta = inputs[3]
    assert seq_len < 10 or (beta > 1.5).float().mean() > 0.2  # eigenvalues 1 - beta well below 0, often
    assert_same_outputs_and_grads(lambda *a: delta_rule_chunked(*a, chunk_size=CHUNK), delta_rule_reference, inputs)


@pytest.mark.parametrize("decay", [False, True], ids=["deltanet", "gated"])
def test_chunked_delta_rule_with_beta_up_to_two_passes_gradcheck(decay):
    """The hand-written backward pass against finite differences, with beta in (0, 2) (float64, 3 chunks)."""
    inputs = delta_inputs(2, 11, 2, 3, 2, decay)
    assert torch.autograd.gradcheck(lambda *a: delta_rule_chunked(*a, chunk_size=4), inputs)


def test_beta_two_flips_the_sign_of_what_the_key_holds():
    """N = P = 1, k = q = 1: beta = 1 writes v = 1 (S = 1); then beta = 2 with v = 0 maps S to (1 - 2) S = -S,
    and beta = 0 keeps S. On both paths, across chunk boundaries."""
    beta = torch.tensor([1.0, 2.0, 0.0, 2.0, 2.0, 0.0, 2.0], dtype=torch.float64).view(1, 7, 1)
    v = torch.tensor([1.0, 0, 0, 0, 0, 0, 0], dtype=torch.float64).view(1, 7, 1, 1)
    ones = torch.ones(1, 7, 1, 1, dtype=torch.float64)
    expected = torch.tensor([1.0, -1, -1, 1, -1, -1, 1], dtype=torch.float64).view(1, 7, 1, 1)
    torch.testing.assert_close(delta_rule_reference(ones, ones, v, beta), expected)
    torch.testing.assert_close(delta_rule_chunked(ones, ones, v, beta, chunk_size=3), expected)


# --- the scan with signed decays -------------------------------------------------------------------------
def signed_scan_inputs(batch, seq_len, heads, dim, device="cpu"):
    """Random float64 q, k (shared by the heads, as the SSM's B and C), v, log|a| in [-1, 0] and signs +-1
    (half of them negative); all but the signs require grad."""
    gen = torch.Generator().manual_seed(batch * 1000 + seq_len)
    q, k = (torch.randn(batch, seq_len, 1, dim, generator=gen, dtype=torch.float64) for _ in range(2))
    v = torch.randn(batch, seq_len, heads, dim, generator=gen, dtype=torch.float64)
    log_abs = -torch.rand(batch, seq_len, heads, generator=gen, dtype=torch.float64)
    sign = torch.where(torch.rand(batch, seq_len, heads, generator=gen) < 0.5, -1.0, 1.0).to(torch.float64)
    return [leaf(x, device) for x in (q, k, v, log_abs)] + [sign.to(device)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch,seq_len,heads,n,p", SHAPES, ids=SHAPE_IDS)
def test_chunked_scan_with_signed_decays_matches_the_recurrence(batch, seq_len, heads, n, p, device):
    inputs = signed_scan_inputs(batch, seq_len, heads, n, device)
    assert_same_outputs_and_grads(lambda q, k, v, log_abs, sign: scan_chunked(q, k, v, log_abs, CHUNK, sign),
                                  scan_reference, inputs)


def token_loop(q, k, v, a):
    """S_t = a_t S_{t-1} + k_t v_t^T, y_t = S_t^T q_t with the decay a itself (no logs): the ground truth of
    `signed_decay` and the signed chunked scan together. q, k (B, T, 1, N), v (B, T, H, P), a (B, T, H)."""
    state, outputs = 0, []
    for q_t, k_t, v_t, a_t in zip(q.unbind(1), k.unbind(1), v.unbind(1), a.unbind(1)):
        state = a_t[..., None, None] * state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)  # (B, H, N, P)
        outputs.append((q_t.unsqueeze(-1) * state).sum(-2))  # (B, H, P)
    return torch.stack(outputs, dim=1)  # (B, T, H, P)


def test_the_ssm_decay_through_the_chunked_scan_matches_the_token_loop():
    """a = 2 exp(dt A) - 1, with dt A spread over [-3, 0] (a from -0.9 to 1, both signs), as log|a| and sign
    into the chunked scan: the outputs and the gradients (dt A included) of the loop over a itself."""
    q, k, v, _, _ = signed_scan_inputs(2, 50, 3, 4)
    dt_a = leaf(-3 * torch.rand(2, 50, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    a = 2 * dt_a.detach().exp() - 1
    assert (a < -0.5).any() and (a > 0.5).any()

    def chunked(q, k, v, dt_a):
        log_abs, sign = signed_decay(dt_a)
        return scan_chunked(q, k, v, log_abs, CHUNK, sign)

    def loop(q, k, v, dt_a):
        return token_loop(q, k, v, 2 * dt_a.exp() - 1)

    assert_same_outputs_and_grads(chunked, loop, [q, k, v, dt_a])


def test_a_decay_of_minus_one_alternates():
    """scan_chunked's worked example: a = -1 at every step, q = k = v = 1: y = 1, 0, 1, 0, ..."""
    ones = torch.ones(1, 7, 1, 1, dtype=torch.float64)
    minus = -torch.ones(1, 7, 1, dtype=torch.float64)
    expected = torch.tensor([1.0, 0, 1, 0, 1, 0, 1], dtype=torch.float64).view(1, 7, 1, 1)
    for log_abs in (None, torch.zeros(1, 7, 1, dtype=torch.float64)):
        torch.testing.assert_close(scan_reference(ones, ones, ones, log_abs, minus), expected)
        torch.testing.assert_close(scan_chunked(ones, ones, ones, log_abs, chunk_size=3, decay_sign=minus), expected)


def test_signed_decay_is_exact_near_one_and_finite_at_zero():
    """float32: a decay close to 1 keeps its precision (2 exp(x) - 1 would lose it to cancellation), and
    a = 0 (dt A = -log 2) gives a finite log and a finite gradient, not -inf and NaN."""
    dt_a = torch.tensor([-1e-6, -1e-4, -0.1], dtype=torch.float32)
    truth = torch.log1p(2 * torch.expm1(dt_a.double()))  # log a, a > 0 here
    log_abs, sign = signed_decay(dt_a)
    assert (sign == 1).all()
    torch.testing.assert_close(log_abs.double(), truth, rtol=1e-6, atol=0)
    for dtype in (torch.float32, torch.float64):
        at_zero = torch.tensor([-math.log(2)], dtype=dtype).requires_grad_(True)
        log_abs, _ = signed_decay(at_zero)
        log_abs.sum().backward()
        assert torch.isfinite(log_abs).all() and torch.isfinite(at_zero.grad).all()
        assert log_abs.item() <= math.log(torch.finfo(dtype).eps) + 1e-3  # |a| is at most eps: forget


def test_signed_decay_worked_example():
    assert doctest.testmod(ssm_module, optionflags=doctest.ELLIPSIS).failed == 0


# --- the families ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mixer_class", [DeltaNet, GatedDeltaNet])
@pytest.mark.parametrize("batch,seq_len,heads,n,p", SHAPES, ids=SHAPE_IDS)
def test_delta_mixer_paths_agree_with_neg_eigval(batch, seq_len, heads, n, p, mixer_class):
    torch.manual_seed(0)
    mixer = mixer_class(heads * n, heads, short_conv=4, chunk_size=CHUNK, allow_neg_eigval=True).double()
    assert_paths_agree(mixer, torch.randn(batch, seq_len, heads * n, dtype=torch.float64))


@pytest.mark.parametrize("batch,seq_len,heads,n,p", SHAPES, ids=SHAPE_IDS)
def test_ssm_paths_agree_with_neg_eigval(batch, seq_len, heads, n, p):
    torch.manual_seed(0)
    mixer = SelectiveSSM(heads * n // 2, d_state=8, expand=2, n_heads=heads, short_conv=4, chunk_size=CHUNK,
                         allow_neg_eigval=True).double()
    with torch.no_grad():
        mixer.A_log.fill_(math.log(30))  # A = -30: dt A spread around -log 2, so a takes both signs
    x = torch.randn(batch, seq_len, heads * n // 2, dtype=torch.float64)
    dt = F.softplus(mixer.in_proj(x)[..., -heads:] + mixer.dt_bias)  # (B, T, H)
    assert seq_len < 10 or ((-30 * dt < -math.log(2)).any() and (-30 * dt > -math.log(2)).any())
    assert_paths_agree(mixer, x)


def two_models(name: str):
    """The family with allow_neg_eigval off (the default) and on, with the same weights."""
    torch.manual_seed(0)
    off = build_model(name, 8, d_model=32, n_layers=1)
    on = build_model(name, 8, d_model=32, n_layers=1, allow_neg_eigval=True)
    on.load_state_dict(off.state_dict())
    return off, on


@pytest.mark.parametrize("name", FAMILIES)
def test_allow_neg_eigval_is_a_param_off_by_default(name):
    """Off by default (so trial ids and results made before it stay valid: params enter a trial id only when
    a spec sets them); validated as a bool; on, it changes what the model computes with the same weights."""
    assert family_params(name)["allow_neg_eigval"] is False
    torch.manual_seed(0)
    default = build_model(name, 8, d_model=32, n_layers=1)
    torch.manual_seed(0)
    explicit = build_model(name, 8, d_model=32, n_layers=1, allow_neg_eigval=False)
    off, on = two_models(name)
    tokens = torch.randint(0, 8, (2, 20))
    torch.testing.assert_close(default(tokens), explicit(tokens))
    assert not torch.allclose(off(tokens), on(tokens), atol=1e-4)
    assert on.state_size(100) == off.state_size(100) and on.flops(2, 64) == off.flops(2, 64)
    with pytest.raises(ConfigError, match="allow_neg_eigval"):
        build_model(name, 8, allow_neg_eigval="yes")


@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet"])
def test_neg_eigval_doubles_the_writing_strength(name, monkeypatch):
    """The beta that reaches the delta rule, with the same weights: 2 sigmoid(.) instead of sigmoid(.)."""
    from membench.models.families import deltanet

    seen = []

    def recording(q, k, v, beta, log_decay):
        seen.append(beta)
        return delta_rule_reference(q, k, v, beta, log_decay)

    monkeypatch.setattr(deltanet, "delta_rule_reference", recording)
    tokens = torch.randint(0, 8, (2, 20))
    for model in two_models(name):
        model.set_path("reference")(tokens)
    beta_off, beta_on = seen
    torch.testing.assert_close(beta_on, 2 * beta_off)
    assert (beta_off < 1).all() and (beta_on > 1).any() and (beta_on < 2).all()


# --- what it is for: parity beyond the training length ---------------------------------------------------
PARITY_RECIPE = dict(d_model=16, n_layers=1, train_len=40, lr=1e-2, batch_size=32, steps=300)
PARITY_PARAMS = {"n_heads": 2, "short_conv": 0}  # parity needs no convolution: the sign flip is the whole state


def parity_accuracy(allow_neg_eigval: bool) -> dict[str, float]:
    """A one-layer deltanet trained on parity (state_tracking, scored at every position) at length 40 by
    membench's own loop (AdamW, warm-up and cosine, weight decay 0.1, clip 1.0), seed 0, evaluated on 256
    held-out sequences at lengths 40 and 256: {"L40": accuracy, "L256": accuracy}."""
    from membench.runners.trial import EvalSlice, TrialConfig, run_trial

    params = {**PARITY_PARAMS, "allow_neg_eigval": True} if allow_neg_eigval else PARITY_PARAMS
    config = TrialConfig(task="state_tracking", task_params={"group": "parity"}, model="deltanet", model_params=params,
                         seed=0, eval_slices=(EvalSlice("L40", 40, 256), EvalSlice("L256", 256, 256)),
                         eval_every=PARITY_RECIPE["steps"], **PARITY_RECIPE)
    rows = run_trial(config, threads=1)["runs"]
    assert all(row["status"] == "ok" for row in rows), rows
    return {row["slice"]: row["accuracy"] for row in rows}


@pytest.mark.slow
def test_neg_eigval_deltanet_tracks_parity_beyond_its_training_length():
    """Grazzi et al.'s parity result at membench's scale. Measured with this recipe over seeds 0-4: with
    allow_neg_eigval 1.00 at length 40 and 0.93-1.00 at 256; without, 0.51-0.57 at 40 and 0.50-0.51 at 256
    (chance is 0.5: eigenvalues in (0, 1] cannot flip a sign). 7-20 s a side on one CPU thread."""
    neg, default = parity_accuracy(True), parity_accuracy(False)
    assert neg["L40"] >= 0.99 and neg["L256"] >= 0.85, neg
    assert default["L40"] <= 0.6 and default["L256"] <= 0.6, default
