"""Tests of the kda, gated_deltaproduct and rwkv7 families and of models/scan_vector_decay.py.

Each recurrence is checked three ways: the chunked form against membench's per-token reference (float64,
outputs and gradients, ids B2-T37-H3-N8-P4), membench's reference against an independent re-derivation from
the paper's equation (an explicit (d, d) transition matrix per token built with torch.eye / torch.diag / outer
products, not the delta-rule step), and the worked examples of the docstrings.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from membench.checks import ConfigError
from membench.models import build_model, family_params, list_models, model_class, scan_vector_decay
from membench.models.families.gated_deltanet import GatedDeltaNet
from membench.models.families.gated_deltaproduct import GatedDeltaProduct
from membench.models.families.kda import KimiDeltaAttention
from membench.models.families.rwkv7 import rwkv7_reference
from membench.models.scan_vector_decay import (
    MAX_CHUNK,
    MIN_LOG_DECAY,
    vector_decay_delta_chunked,
    vector_decay_delta_reference,
)
from tests.helpers import DEVICES, assert_paths_agree, assert_same_outputs_and_grads, outputs_and_grads, run_cli

SHAPES = [(2, 37, 3, 8, 4), (1, 1, 2, 4, 4), (2, 64, 2, 8, 8), (1, 70, 1, 4, 6)]
SHAPE_IDS = [f"B{b}-T{t}-H{h}-N{n}-P{p}" for b, t, h, n, p in SHAPES]
NAMES = ["kda", "gated_deltaproduct", "rwkv7"]
VOCAB = 16
f64 = torch.float64


def leaves(*tensors):
    return [t.detach().requires_grad_(True) for t in tensors]


def kda_inputs(batch, seq_len, heads, n, p, seed=0, floor=MIN_LOG_DECAY):
    """q, unit k, v, beta in (0, 2), log-decays in [floor, 0] (float64, requiring grad)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, seq_len, heads, n, generator=gen, dtype=f64)
    k = F.normalize(torch.randn(batch, seq_len, heads, n, generator=gen, dtype=f64), dim=-1)
    v = torch.randn(batch, seq_len, heads, p, generator=gen, dtype=f64)
    beta = 2 * torch.rand(batch, seq_len, heads, generator=gen, dtype=f64)
    log_decay = floor * torch.rand(batch, seq_len, heads, n, generator=gen, dtype=f64)
    return leaves(q, k, v, beta, log_decay)


# --- KDA's recurrence ----------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("chunk_size", [MAX_CHUNK, 12, 5])
@pytest.mark.parametrize("batch,seq_len,heads,n,p", SHAPES, ids=SHAPE_IDS)
def test_chunked_kda_matches_the_recurrence(batch, seq_len, heads, n, p, chunk_size, device):
    """Chunks of 16 (the most), 12 and 5 (T = 37, 64, 70 leave a padded tail): outputs and gradients agree."""
    inputs = [t.detach().to(device).requires_grad_(True) for t in kda_inputs(batch, seq_len, heads, n, p)]
    assert_same_outputs_and_grads(lambda *a: vector_decay_delta_chunked(*a, chunk_size=chunk_size),
                                  vector_decay_delta_reference, inputs)


@pytest.mark.parametrize("block_tokens", [4, 12, 10**6], ids=["chunk-by-chunk", "3-chunks-a-block", "all-at-once"])
def test_chunked_kda_does_not_depend_on_its_blocks(monkeypatch, block_tokens):
    """The chunks taken together on the CPU (every block, the last one shorter, and all of them at once as on a
    GPU): the same outputs and gradients as the token loop, over 10 chunks of 4."""
    monkeypatch.setattr(scan_vector_decay, "CPU_BLOCK_TOKENS", block_tokens)
    assert_same_outputs_and_grads(lambda *a: vector_decay_delta_chunked(*a, chunk_size=4),
                                  vector_decay_delta_reference, kda_inputs(2, 39, 2, 4, 3))


@pytest.mark.parametrize("max_beta", [1.0, 2.0], ids=["beta-below-1", "allow_neg_eigval"])
def test_chunked_kda_backward_passes_gradcheck(max_beta):
    """The hand-written backward pass against finite differences (float64): 11 tokens in chunks of 4 (a padded
    tail), beta in (0, 1) and in (0, 2)."""
    q, k, v, beta, log_decay = kda_inputs(1, 11, 2, 3, 2)
    inputs = (q, k, v, (max_beta / 2 * beta).detach().requires_grad_(True), log_decay)
    assert torch.autograd.gradcheck(lambda *a: vector_decay_delta_chunked(*a, chunk_size=4), inputs)


@pytest.mark.parametrize("decay_scale", [1.0, 0.1], ids=["decays-to-the-floor", "mild-decays"])
@pytest.mark.parametrize("max_beta", [1.0, 2.0], ids=["beta-below-1", "allow_neg_eigval"])
def test_chunked_kda_float32_gradients_match_the_recurrence(max_beta, decay_scale):
    """At the benchmark's head width (N = P = 32) over 300 tokens, in float32 as kda runs it: the chunked
    form's output and gradients are within 1e-5 (of the largest entry) of the float64 reference's."""
    q, k, v, beta, log_decay = kda_inputs(2, 300, 2, 32, 32)
    exact = leaves(F.normalize(q, dim=-1), k, v, max_beta / 2 * beta, decay_scale * log_decay)
    out, grads = outputs_and_grads(vector_decay_delta_chunked, leaves(*(x.float() for x in exact)))
    expected, expected_grads = outputs_and_grads(vector_decay_delta_reference, exact)
    for got, want in zip([out, *grads], [expected, *expected_grads]):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5 * want.abs().max().item())


def test_chunked_kda_rejects_chunks_past_the_floor_s_range():
    """Chunks of more than MAX_CHUNK tokens could decay past float range at the floor: a one-line error."""
    with pytest.raises(ConfigError, match="chunk_size must be an integer in"):
        vector_decay_delta_chunked(*kda_inputs(1, 40, 1, 4, 4), chunk_size=MAX_CHUNK + 1)
    with pytest.raises(ConfigError, match="chunk_size"):
        small("kda", chunk_size=32)


def kimi_linear_equation(q, k, v, beta, log_decay):
    """Kimi Linear (Kimi Team 2025, arXiv 2510.26692), the KDA state update and output as written there:
    S_t = (I - beta_t k_t k_t^T) Diag(alpha_t) S_{t-1} + beta_t k_t v_t^T,  o_t = S_t^T q_t, as explicit matrices."""
    batch, seq_len, heads, n = k.shape
    eye = torch.eye(n, dtype=f64)
    state = torch.zeros(batch, heads, n, v.shape[-1], dtype=f64)
    out = []
    for t in range(seq_len):
        kk = torch.einsum("bhi,bhj->bhij", k[:, t], k[:, t])
        transition = (eye - beta[:, t, :, None, None] * kk) @ torch.diag_embed(log_decay[:, t].exp())
        write = beta[:, t, :, None, None] * torch.einsum("bhi,bhj->bhij", k[:, t], v[:, t])
        state = transition @ state + write
        out.append(torch.einsum("bhij,bhi->bhj", state, q[:, t]))
    return torch.stack(out, 1)


def test_kda_reference_agrees_with_the_kimi_linear_equation():
    assert_same_outputs_and_grads(vector_decay_delta_reference, kimi_linear_equation, kda_inputs(2, 23, 2, 5, 3))


def test_kda_chunked_is_finite_at_the_decay_floor():
    """Every log-decay at MIN_LOG_DECAY for chunks of MAX_CHUNK tokens (a chunk's decay e^-80, its keys grown
    back by e^80): finite in float32, and the same as the reference in float64."""
    inputs = kda_inputs(1, 150, 2, 8, 4)
    inputs[4] = torch.full_like(inputs[4], MIN_LOG_DECAY).requires_grad_(True)
    assert_same_outputs_and_grads(lambda *a: vector_decay_delta_chunked(*a, chunk_size=MAX_CHUNK),
                                  vector_decay_delta_reference, inputs)
    as_float = leaves(*(x.float() for x in inputs))
    out = vector_decay_delta_chunked(*as_float, chunk_size=MAX_CHUNK)
    out.square().sum().backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(x.grad).all() for x in as_float)


def test_kda_worked_example():
    """scan_vector_decay's docstring: alpha = (1/2, 1); writes 1 under e1, 5 under e2, then nothing."""
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    k = torch.tensor([e1, e2, e1], dtype=f64).view(1, 3, 1, 2)
    v = torch.tensor([1.0, 5.0, 0.0], dtype=f64).view(1, 3, 1, 1)
    beta = torch.tensor([1.0, 1.0, 0.0], dtype=f64).view(1, 3, 1)
    log_decay = torch.tensor([0.5, 1.0], dtype=f64).log().expand(1, 3, 1, 2)
    for q, expected in ((e1, [1.0, 0.5, 0.25]), (e2, [0.0, 5.0, 5.0])):
        queries = torch.tensor([q] * 3, dtype=f64).view(1, 3, 1, 2)
        for fn in (vector_decay_delta_reference, lambda *a: vector_decay_delta_chunked(*a, chunk_size=2)):
            torch.testing.assert_close(fn(queries, k, v, beta, log_decay).flatten(), torch.tensor(expected, dtype=f64))


def test_kda_with_one_decay_per_head_is_gated_deltanet():
    """alpha_t = a_t 1 (every channel alike) is gated_deltanet's scalar decay."""
    from membench.models.scan import delta_rule_reference

    q, k, v, beta, log_decay = kda_inputs(2, 20, 2, 4, 3)
    scalar = log_decay[..., 0]
    torch.testing.assert_close(vector_decay_delta_chunked(q, k, v, beta, scalar.unsqueeze(-1).expand_as(q)),
                               delta_rule_reference(q, k, v, beta, scalar))


# --- DeltaProduct ----------------------------------------------------------------------------------------
def deltaproduct_equation(q, k, v, beta, log_decay):
    """DeltaProduct (Siems et al. 2025), the Gated DeltaProduct recurrence: with H_t = prod_{j=1}^{n_h}
    (I - beta_t,j k_t,j k_t,j^T) (the last factor leftmost), S_t = a_t H_t S_{t-1} + sum_j (prod_{l > j}
    (I - beta_t,l k_t,l k_t,l^T)) beta_t,j k_t,j v_t,j^T and o_t = S_t^T q_t. k, v (B, T, n_h, H, d)."""
    batch, seq_len, steps, heads, n = k.shape
    eye = torch.eye(n, dtype=f64)
    state = torch.zeros(batch, heads, n, v.shape[-1], dtype=f64)
    out = []
    for t in range(seq_len):
        factors = [eye - beta[:, t, j, :, None, None] * torch.einsum("bhi,bhj->bhij", k[:, t, j], k[:, t, j])
                   for j in range(steps)]
        product, writes = eye.expand(batch, heads, n, n), 0
        for j in reversed(range(steps)):
            write = beta[:, t, j, :, None, None] * torch.einsum("bhi,bhj->bhij", k[:, t, j], v[:, t, j])
            writes = writes + product @ write
            product = product @ factors[j]
        state = log_decay[:, t, :, None, None].exp() * (product @ state) + writes
        out.append(torch.einsum("bhij,bhi->bhj", state, q[:, t]))
    return torch.stack(out, 1)


@pytest.mark.parametrize("steps", [1, 3])
def test_deltaproduct_mixer_agrees_with_the_householder_product(steps):
    """The mixer's interleaved delta rule, on both paths, against the product of generalised Householder
    matrices; inputs taken from the mixer's own projections."""
    torch.manual_seed(0)
    mixer = GatedDeltaProduct(8, 2, short_conv=0, chunk_size=4, n_householder=steps, allow_neg_eigval=True).double()
    x = torch.randn(2, 11, 8, dtype=f64)
    captured = {}
    mixer.norm.register_forward_hook(lambda m, args, out: captured.setdefault("o_in", args[0]))  # the read S_t^T q_t
    qkv = F.silu(mixer.qkv(x)).view(2, 11, 1 + 2 * steps, 2, 4)
    q, k, v = qkv.split([1, steps, steps], dim=2)
    q, k = F.normalize(q[:, :, 0], dim=-1, eps=1e-6), F.normalize(k, dim=-1, eps=1e-6)
    beta = 2 * torch.sigmoid(mixer.beta(x)).view(2, 11, steps, 2)
    log_decay = -mixer.A_log.exp() * F.softplus(mixer.dt(x) + mixer.dt_bias)
    expected = deltaproduct_equation(q, k, v, beta, log_decay)
    for path in ("fast", "reference"):
        mixer.path = path
        captured.clear()
        mixer(x)
        torch.testing.assert_close(captured["o_in"], expected)


def test_deltaproduct_recurrence_gradients_agree_with_the_equation():
    """The interleaving itself (delta_rule_chunked over T n_h steps) against the Householder product: outputs and
    gradients of random float64 inputs."""
    from membench.models.scan import delta_rule_chunked

    gen = torch.Generator().manual_seed(1)
    batch, seq_len, steps, heads, n = 2, 9, 2, 2, 4
    q = torch.randn(batch, seq_len, heads, n, generator=gen, dtype=f64)
    k = F.normalize(torch.randn(batch, seq_len, steps, heads, n, generator=gen, dtype=f64), dim=-1)
    v = torch.randn(batch, seq_len, steps, heads, n, generator=gen, dtype=f64)
    beta = 2 * torch.rand(batch, seq_len, steps, heads, generator=gen, dtype=f64)
    log_decay = -torch.rand(batch, seq_len, heads, generator=gen, dtype=f64)

    def interleaved(q, k, v, beta, log_decay):
        q_steps = F.pad(q.unsqueeze(2), (0, 0, 0, 0, steps - 1, 0))
        l_steps = F.pad(log_decay.unsqueeze(2), (0, 0, 0, steps - 1))
        out = delta_rule_chunked(*(t.flatten(1, 2) for t in (q_steps, k, v, beta, l_steps)), chunk_size=4)
        return out.view(batch, seq_len, steps, heads, n)[:, :, -1]

    assert_same_outputs_and_grads(interleaved, deltaproduct_equation, leaves(q, k, v, beta, log_decay))


def test_deltaproduct_worked_example():
    """The module docstring: d = 1, beta = 2, values 3 then 5 in one token give S_1 = -(2 * 3) + 2 * 5 = 4."""
    ones = torch.ones(1, 1, 1, 1, dtype=f64)
    k = torch.ones(1, 1, 2, 1, 1, dtype=f64)
    v = torch.tensor([3.0, 5.0], dtype=f64).view(1, 1, 2, 1, 1)
    beta = torch.full((1, 1, 2, 1), 2.0, dtype=f64)
    assert deltaproduct_equation(ones, k, v, beta, torch.zeros(1, 1, 1, dtype=f64)).item() == 4.0


def test_one_householder_step_without_negative_eigenvalues_is_gated_deltanet():
    """n_householder = 1 and beta = sigmoid: gated_deltanet's layer, weight for weight."""
    torch.manual_seed(0)
    product = GatedDeltaProduct(16, 2, short_conv=4, chunk_size=8, n_householder=1, allow_neg_eigval=False).double()
    reference = GatedDeltaNet(16, 2, short_conv=4, chunk_size=8).double()
    reference.load_state_dict(product.state_dict())
    x = torch.randn(2, 21, 16, dtype=f64)
    torch.testing.assert_close(product(x), reference(x))


# --- RWKV-7 -------------------------------------------------------------------------------------------------
def rwkv7_equation(r, w, erase, rate, write, v):
    """RWKV-7 (Peng et al. 2025), the wkv state update in the paper's row-vector form,
    wkv_t = wkv_{t-1} (diag(w_t) - kappa_hat_t^T (a_t * kappa_hat_t)) + v_t^T k~_t, read out as wkv_t r_t:
    the state here is (P, N), the transpose of membench's."""
    batch, seq_len, heads, n = r.shape
    wkv = torch.zeros(batch, heads, v.shape[-1], n, dtype=f64)
    out = []
    for t in range(seq_len):
        transition = torch.diag_embed(w[:, t]) - torch.einsum("bhi,bhj->bhij", erase[:, t], rate[:, t] * erase[:, t])
        wkv = wkv @ transition + torch.einsum("bhi,bhj->bhij", v[:, t], write[:, t])
        out.append(torch.einsum("bhij,bhj->bhi", wkv, r[:, t]))
    return torch.stack(out, 1)


def rwkv7_inputs(batch=2, seq_len=19, heads=2, n=4, p=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, seq_len, heads, n)
    r, write = torch.randn(shape, generator=gen, dtype=f64), torch.randn(shape, generator=gen, dtype=f64)
    w = torch.rand(shape, generator=gen, dtype=f64) * 0.45 + 0.545
    erase = F.normalize(torch.randn(shape, generator=gen, dtype=f64), dim=-1)
    rate = 2 * torch.rand(shape, generator=gen, dtype=f64)
    v = torch.randn(batch, seq_len, heads, p, generator=gen, dtype=f64)
    return leaves(r, w, erase, rate, write, v)


def test_rwkv7_reference_agrees_with_the_paper_equation():
    assert_same_outputs_and_grads(rwkv7_reference, rwkv7_equation, rwkv7_inputs())


def test_rwkv7_worked_example():
    """The module docstring: w = 1, kappa_hat = k~ = e1; a = 1 replaces (3, 5), a = 1/2 keeps half (3, 6.5)."""
    e1 = torch.tensor([1.0, 0.0], dtype=f64).expand(1, 2, 1, 2)
    v = torch.tensor([3.0, 5.0], dtype=f64).view(1, 2, 1, 1)
    for rate, expected in ((1.0, [3.0, 5.0]), (0.5, [3.0, 6.5])):
        out = rwkv7_reference(e1, torch.ones_like(e1), e1, torch.full_like(e1, rate), e1, v)
        assert out.flatten().tolist() == expected


def test_rwkv7_with_equal_erase_and_write_keys_is_the_delta_rule():
    """w = 1, kappa_hat = k, a = beta 1 and k~ = beta k is DeltaNet's rule, S_t = (I - beta k k^T) S + beta k v^T."""
    from membench.models.scan import delta_rule_reference

    r, _, erase, _, _, v = rwkv7_inputs(p=4)
    beta = torch.rand(erase.shape[:-1], dtype=f64)
    rate = beta.unsqueeze(-1).expand_as(erase)
    out = rwkv7_reference(r, torch.ones_like(r), erase, rate, beta.unsqueeze(-1) * erase, v)
    torch.testing.assert_close(out, delta_rule_reference(r, erase, v, beta))


# --- the families ----------------------------------------------------------------------------------------
def small(name, **params):
    torch.manual_seed(0)
    return build_model(name, VOCAB, d_model=32, n_layers=2, **params)


def test_the_families_are_registered_after_gated_deltanet(capsys):
    order = list_models()
    assert all(order.index(name) > order.index("gated_deltanet") for name in NAMES)
    assert model_class("kda").has_reference_path and model_class("gated_deltaproduct").has_reference_path
    assert not model_class("rwkv7").has_reference_path  # one path: the loop over tokens
    code, out, _ = run_cli(capsys, "models")
    assert code == 0 and all(name in out for name in NAMES)


@pytest.mark.parametrize("name,conv_inputs", [("kda", 3), ("gated_deltaproduct", 5), ("rwkv7", 3)])
@pytest.mark.parametrize("short_conv,n_heads", [(4, 4), (0, 2)])
def test_state_size_is_the_memories_and_the_convolution_window(name, conv_inputs, short_conv, n_heads):
    """H d^2 per layer plus the last K - 1 inputs of the convolved channels (q, k, v; DeltaProduct's n_h = 2
    keys and values), constant in length."""
    model = small(name, short_conv=short_conv, n_heads=n_heads)
    d = 32 // n_heads
    window = (short_conv - 1) * conv_inputs * 32 if short_conv else 0
    assert model.state_size(100) == model.state_size(10_000) == 2 * (n_heads * d * d + window)


@pytest.mark.parametrize("name,per_token", [("kda", 6), ("gated_deltaproduct", 12), ("rwkv7", 8)])
def test_the_recurrence_is_memory_flops(name, per_token):
    """d x d multiply-adds per head and token: 3 for KDA, 3 n_h for DeltaProduct, 4 for RWKV-7 (x 2 FLOPs)."""
    model = small(name)
    assert model.attention_flops(2, 64) == 0
    assert model.memory_flops(2, 64) == 2 * per_token * 2 * 64 * 32 * 8  # 2 layers, D = 32, d = 8


@pytest.mark.parametrize("mixer", [
    lambda: KimiDeltaAttention(8, 2, short_conv=4, chunk_size=16, allow_neg_eigval=True),
    lambda: GatedDeltaProduct(8, 2, short_conv=4, chunk_size=5, n_householder=3, allow_neg_eigval=True),
], ids=["kda", "gated_deltaproduct"])
def test_mixer_paths_agree(mixer):
    torch.manual_seed(0)
    assert_paths_agree(mixer().double(), torch.randn(2, 45, 8, dtype=f64))


@pytest.mark.parametrize("name", ["kda", "gated_deltaproduct", "rwkv7"])
def test_allow_neg_eigval_doubles_the_writing_strength(name):
    """The same weights with and without allow_neg_eigval: beta (a for RWKV-7) doubles, and the output changes."""
    default = family_params(name)["allow_neg_eigval"]
    assert default is (name == "gated_deltaproduct")  # on by default only where the paper has it
    off, on = small(name, allow_neg_eigval=False), small(name, allow_neg_eigval=True)
    on.load_state_dict(off.state_dict())
    tokens = torch.randint(0, VOCAB, (2, 12))
    assert not torch.allclose(off(tokens), on(tokens))


def test_kda_decay_is_per_channel_and_above_the_floor():
    mixer = small("kda").mixers()[0]
    log_decay = mixer.log_decay(3 * torch.randn(2, 30, 32))  # (B, T, H, d)
    assert log_decay.shape == (2, 30, 4, 8)
    assert (log_decay > MIN_LOG_DECAY).all() and (log_decay <= 0).all() and log_decay.mean() < 0
    with torch.no_grad():
        mixer.dt_bias.fill_(1e4)  # dt far past what the floor allows: the decay saturates at it, not below
    torch.testing.assert_close(mixer.log_decay(torch.zeros(1, 1, 32)), torch.full((1, 1, 4, 8), MIN_LOG_DECAY))
    assert log_decay.std(dim=-1).min() > 0  # channels of a head differ


def test_kda_does_not_depend_on_the_chunk_size():
    tokens = torch.randint(0, VOCAB, (2, 77))
    outputs = [small("kda", chunk_size=c).double()(tokens) for c in (1, 5, 16)]
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0], atol=1e-10, rtol=1e-8)
