"""Tests of the gla, fox and log_linear families and their kernels (models/families/gla.py, fox.py, log_linear.py,
models/scan_log_linear.py).

Each recurrence is checked three ways in float64, outputs AND gradients: membench's fast path against its per-token
reference over a shape table whose ids read B2-T64-H4-N16-P8 (batch, length, heads, key width, value width), and
membench's reference against an independent re-derivation from the paper's own equations, written here from the
paper and not from membench's code:

    gla         Yang et al. 2024, "Gated Linear Attention Transformers with Hardware-Efficient Training", the
                recurrent form S_t = Diag(alpha_t) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t, with Diag(alpha_t) a matrix
    fox         Lin et al. 2025, "Forgetting Transformer", Forgetting Attention: o_i = sum_j softmax_j(q_i . k_j
                / sqrt(d) + D_ij) v_j with D_ij = sum_{l=j+1}^{i} log f_l, summed term by term
    log_linear  Guo et al. 2025, "Log-Linear Attention", the masked form O = (Q K^T (.) M^S (.) M^H) V with the
                hierarchical mask M^H built from the Fenwick partition of each prefix (peel the lowest set bit)
"""

from __future__ import annotations

import doctest
import math
import sys

import pytest
import torch
import torch.nn.functional as F

from membench.checks import ConfigError
from membench.models import build_model, model_class, scan_log_linear, width_step
from membench.models.families import fox as fox_module
from membench.models.families import gla as gla_module
from membench.models.families.fox import ForgettingAttention, forgetting_attention_reference
from membench.models.families.gla import GatedLinearAttention, gated_scan_chunked, gated_scan_reference
from membench.models.families.log_linear import LogLinearMamba2
from membench.models.layers import SelfAttention
from membench.models.scan_log_linear import levels, log_linear_chunked, log_linear_reference
from tests.helpers import DEVICES, assert_paths_agree, assert_same_outputs_and_grads, run_cli

SHAPES = [(2, 64, 4, 16, 8), (1, 1, 2, 8, 8), (3, 37, 2, 8, 4), (1, 130, 1, 4, 8), (2, 5, 3, 4, 4)]
SHAPE_IDS = [f"B{b}-T{t}-H{h}-N{n}-P{p}" for b, t, h, n, p in SHAPES]
VOCAB = 16


def leaves(*shapes, seed: int = 0, low: float = -1.0, high: float = 1.0) -> list[torch.Tensor]:
    """Uniform float64 tensors in [low, high) that require grad, one per shape."""
    gen = torch.Generator().manual_seed(seed)
    return [(low + (high - low) * torch.rand(s, generator=gen, dtype=torch.float64)).requires_grad_(True)
            for s in shapes]


def small(name: str, **params):
    torch.manual_seed(0)
    return build_model(name, VOCAB, d_model=32, n_layers=2, **params)


# --- gla ------------------------------------------------------------------------------------------------
def gla_inputs(batch, seq_len, heads, n, p, floor: float = -1.0):
    q, k, v, log_gate = leaves((batch, seq_len, heads, n), (batch, seq_len, heads, n), (batch, seq_len, heads, p),
                               (batch, seq_len, heads, n), seed=seq_len)
    return q, k, v, (log_gate.detach() * -floor / 2 + floor / 2).requires_grad_(True)  # in [floor, 0)


def gla_paper_recurrence(q, k, v, log_gate):
    """GLA's recurrent form as the paper writes it: S_t = Diag(alpha_t) S_{t-1} + k_t v_t^T, a diagonal matrix
    product, one (batch, head) at a time; o_t = S_t^T q_t."""
    batch, seq_len, heads, n = q.shape
    out = torch.zeros(batch, seq_len, heads, v.shape[-1], dtype=v.dtype)
    for b in range(batch):
        for h in range(heads):
            state = torch.zeros(n, v.shape[-1], dtype=v.dtype)
            for t in range(seq_len):
                state = torch.diag(log_gate[b, t, h].exp()) @ state + torch.outer(k[b, t, h], v[b, t, h])
                out = out.index_put((torch.tensor(b), torch.tensor(t), torch.tensor(h)), state.T @ q[b, t, h])
    return out


def test_gla_reference_is_the_papers_recurrence():
    """Yang et al. 2024, the recurrent form S_t = Diag(alpha_t) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t."""
    inputs = gla_inputs(2, 11, 2, 3, 4)
    assert_same_outputs_and_grads(gated_scan_reference, gla_paper_recurrence, inputs)
    assert_same_outputs_and_grads(lambda *a: gated_scan_chunked(*a, chunk_size=4), gla_paper_recurrence, inputs)


def test_chunked_gated_scan_is_stable_at_the_floor():
    """Every gate at the floor, e^-5 per token: within a chunk of 16 exp(-B) reaches e^80, still in float32 range,
    and the chunked form stays finite and equal to the recurrence."""
    q, k, v, _ = (t.detach().float() for t in gla_inputs(2, 300, 2, 8, 8))
    log_gate = torch.full_like(q, gla_module.LOG_GATE_FLOOR)
    out = gated_scan_chunked(q, k, v, log_gate, chunk_size=gla_module.MAX_CHUNK)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, gated_scan_reference(q, k, v, log_gate), atol=1e-5, rtol=1e-4)


def test_gla_gate_is_per_key_channel_and_floored():
    """The decay differs between the channels of one head (a scalar decay per head would not) and is >= e^-5."""
    mixer = small("gla").mixers()[0]
    x = 3 * torch.randn(2, 20, 32)
    log_gate = (F.logsigmoid(mixer.gate_up(mixer.gate_down(x))) / gla_module.GATE_TEMPERATURE).view(2, 20, 4, 8)
    assert (log_gate.std(dim=-1) > 0).all()  # channels of a head differ, at every token
    assert (log_gate <= 0).all()
    with torch.no_grad():
        mixer.gate_up.bias.fill_(-1e3)  # logsigmoid(-1000) / 16 = -62.5, floored to -5
    y = mixer(x)
    assert torch.isfinite(y).all()
    mixer.path = "reference"
    torch.testing.assert_close(mixer(x), y, atol=1e-5, rtol=1e-4)


def test_gla_rejects_a_chunk_longer_than_its_floor_allows():
    with pytest.raises(ConfigError, match=r"chunk_size must be an integer in \[1, 16\]"):
        build_model("gla", VOCAB, chunk_size=32)


# --- fox ------------------------------------------------------------------------------------------------
def fox_paper_attention(q, k, v, log_forget):
    """Lin et al. 2025, Forgetting Attention: D_ij = sum_{l=j+1}^{i} log f_l added to the scaled scores of every
    j <= i (a term-by-term sum, no cumulative sums), then an ordinary softmax over j <= i."""
    seq_len = q.shape[-2]
    out = torch.zeros_like(v)
    for i in range(seq_len):
        logits = []
        for j in range(i + 1):
            bias = sum((log_forget[..., step] for step in range(j + 1, i + 1)), torch.zeros_like(log_forget[..., 0]))
            logits.append((q[..., i, :] * k[..., j, :]).sum(-1) / math.sqrt(q.shape[-1]) + bias)
        weights = torch.stack(logits, dim=-1).softmax(-1)  # (B, H, i + 1)
        out = out.index_copy(-2, torch.tensor([i]), (weights.unsqueeze(-2) @ v[..., : i + 1, :]))
    return out


def test_fox_reference_is_the_papers_forgetting_attention():
    q, k, v = leaves((2, 3, 9, 4), (2, 3, 9, 4), (2, 3, 9, 4), seed=1)
    (raw,) = leaves((2, 3, 9), seed=2, low=-3.0, high=3.0)
    log_forget = lambda f: F.logsigmoid(f)  # noqa: E731
    paper = lambda q, k, v, f: fox_paper_attention(q, k, v, log_forget(f))  # noqa: E731
    ours = lambda q, k, v, f: forgetting_attention_reference(q, k, v, log_forget(f))  # noqa: E731
    assert_same_outputs_and_grads(ours, paper, [q, k, v, raw])


@pytest.mark.parametrize("batch,seq_len,heads,n,_p", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("rope", [False, True], ids=["none", "rope"])
def test_forgetting_attention_paths_agree(batch, seq_len, heads, n, _p, rope):
    torch.manual_seed(0)
    mixer = ForgettingAttention(heads * n, heads, rope=rope).double()
    assert_paths_agree(mixer, torch.randn(batch, seq_len, heads * n, dtype=torch.float64))


def test_fox_without_forgetting_is_the_transformer():
    """With every forget gate 1 (log f = 0) Forgetting Attention is the transformer's attention: same weights, same
    logits; and the transformer still builds its own SelfAttention (the shared constructor is unchanged)."""
    fox, transformer = small("fox"), small("transformer", position="none")
    assert all(type(m) is SelfAttention for m in transformer.mixers())
    assert all(type(m) is ForgettingAttention for m in fox.mixers())
    missing, unexpected = fox.load_state_dict(transformer.state_dict(), strict=False)
    assert not unexpected and all(".forget." in name for name in missing)
    tokens = torch.randint(0, VOCAB, (2, 19))
    assert not torch.allclose(fox(tokens), transformer(tokens), atol=1e-3)  # the default gates forget
    with torch.no_grad():
        for mixer in fox.mixers():
            mixer.forget.weight.zero_()
            mixer.forget.bias.fill_(1e4)  # sigmoid = 1: log f = 0
    for path in ("fast", "reference"):
        torch.testing.assert_close(fox.set_path(path)(tokens), transformer.set_path(path)(tokens))


def test_fox_forgets_the_distant_past():
    """With f = 1/2 everywhere and equal scores, the last of three queries weighs its keys 1 : 2 : 4."""
    q = torch.zeros(1, 1, 3, 2, dtype=torch.float64)
    v = torch.eye(3, dtype=torch.float64).view(1, 1, 3, 3)
    out = forgetting_attention_reference(q, q, v, torch.full((1, 1, 3), math.log(0.5), dtype=torch.float64))
    torch.testing.assert_close(out[0, 0, 2], torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64) / 7)


def test_fox_state_is_the_kv_cache_and_its_gates():
    model = small("fox", n_heads=2)
    assert model.state_size(100) == 2 * 100 * (2 * 32 + 2)  # 2 layers: keys, values and c per head and token
    assert model_class("fox").cost_class == "O(n^2)" and model.attention_flops(2, 64) > 0
    with pytest.raises(ConfigError, match="position must be one of rope, none"):
        build_model("fox", VOCAB, position="alibi")


# --- log_linear -----------------------------------------------------------------------------------------
def fenwick_buckets(t: int) -> list[tuple[int, list[int]]]:
    """The paper's partition of the prefix 0..t of query t: level 0 is t itself; then, peeling the lowest set bit
    of t off one at a time, each bit 2^b of t is a bucket of the 2^b tokens just below what is left, at level b+1.

        >>> fenwick_buckets(6)
        [(0, [6]), (2, [4, 5]), (3, [0, 1, 2, 3])]
    """
    buckets, rest = [(0, [t])], t
    while rest:
        low = rest & -rest  # the lowest set bit
        buckets.append((low.bit_length(), list(range(rest - low, rest))))
        rest -= low
    return buckets


def log_linear_paper_form(q, k, v, log_decay, lam):
    """Guo et al. 2025, O = (Q K^T (.) M^S (.) M^H) V: M^S_tj = prod_{l=j+1}^{t} a_l (Mamba-2's semiseparable mask)
    and M^H_tj = lambda_t^(level of j's bucket), both built entry by entry from the Fenwick partition."""
    seq_len = q.shape[1]
    entries = {}  # (t, j) -> (B, H): the entries of M^S (.) M^H where j is in a bucket of t
    for t in range(seq_len):
        for level, keys in fenwick_buckets(t):
            for j in keys:
                decay = log_decay[:, j + 1: t + 1].sum(1).exp()  # (B, H): prod_{l=j+1}^{t} a_l
                entries[t, j] = decay * lam[:, t, :, level]
    zero = torch.zeros_like(log_decay[:, 0])
    mask = torch.stack([torch.stack([entries.get((t, j), zero) for j in range(seq_len)], -1)
                        for t in range(seq_len)], -2)  # (B, H, T, T)
    scores = torch.einsum("bthn,bjhn->bhtj", q, k) * mask
    return torch.einsum("bhtj,bjhp->bthp", scores, v)


def log_linear_inputs(batch, seq_len, heads, n, p, extra_levels: int = 1):
    q, k, v, log_decay, lam = leaves((batch, seq_len, heads, n), (batch, seq_len, heads, n), (batch, seq_len, heads, p),
                                     (batch, seq_len, heads), (batch, seq_len, heads, levels(seq_len) + extra_levels),
                                     seed=seq_len)
    return q, k, v, (log_decay.detach() / 2 - 0.5).requires_grad_(True), (lam.detach() + 1).requires_grad_(True)


def test_log_linear_reference_is_the_papers_masked_form():
    """Guo et al. 2025, the hierarchical-matrix form O = (Q K^T (.) M^S (.) M^H) V against the per-token carry."""
    inputs = log_linear_inputs(2, 13, 2, 3, 4)
    assert_same_outputs_and_grads(log_linear_reference, log_linear_paper_form, inputs)


CHUNKED_FORMS = {  # name -> (random inputs, chunked form, per-token reference, chunk sizes)
    "gla": (gla_inputs, gated_scan_chunked, gated_scan_reference, [1, 4, 16]),
    "log_linear": (log_linear_inputs, log_linear_chunked, log_linear_reference, [1, 4, 16, 64]),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("form,chunk_size", [(form, c) for form, (*_, sizes) in CHUNKED_FORMS.items() for c in sizes])
@pytest.mark.parametrize("batch,seq_len,heads,n,p", SHAPES, ids=SHAPE_IDS)
def test_chunked_form_matches_the_recurrence(form, batch, seq_len, heads, n, p, chunk_size, device):
    make_inputs, chunked_form, reference, _ = CHUNKED_FORMS[form]
    inputs = [t.detach().to(device).requires_grad_(True) for t in make_inputs(batch, seq_len, heads, n, p)]
    chunked = lambda *a: chunked_form(*a, chunk_size=chunk_size)  # noqa: E731
    assert_same_outputs_and_grads(chunked, reference, inputs)


def test_log_linear_with_equal_lambdas_is_the_decayed_scan():
    """lambda = 1 at every level sums the buckets back into one state: Mamba-2's scan (models.scan)."""
    from membench.models.scan import scan_reference

    q, k, v, log_decay, lam = (t.detach() for t in log_linear_inputs(2, 45, 2, 4, 4))
    torch.testing.assert_close(log_linear_chunked(q, k, v, log_decay, torch.ones_like(lam), chunk_size=8),
                               scan_reference(q, k, v, log_decay))


@pytest.mark.parametrize("batch,seq_len,heads,n,_p", SHAPES, ids=SHAPE_IDS)
def test_log_linear_mixer_paths_agree(batch, seq_len, heads, n, _p):
    torch.manual_seed(0)
    mixer = LogLinearMamba2(heads * n, heads, short_conv=4, chunk_size=16).double()
    assert_paths_agree(mixer, torch.randn(batch, seq_len, heads * n, dtype=torch.float64))


def test_every_level_weight_is_trained_by_short_sequences():
    """The lambdas of a level are the sum of the increments of every level at or above it, so a sequence of 9
    tokens (levels 0..4) still trains the increments of all 21 levels, and the top levels get trained weights."""
    mixer = small("log_linear").mixers()[0]
    mixer(torch.randn(2, 9, 32)).square().sum().backward()
    assert (mixer.level_increments.weight.grad.view(21, 4, 32).abs().sum((1, 2)) > 0).all()
    x = torch.randn(1, 3, 32)
    increments = mixer.level_increments(x).view(1, 3, 21, 4)
    torch.testing.assert_close(mixer.level_weights(x)[..., 20], F.softplus(increments[:, :, 20]))
    torch.testing.assert_close(mixer.level_weights(x)[..., 19], F.softplus(increments[:, :, 19:].sum(2)))


def test_log_linear_state_grows_by_one_level_per_doubling():
    model = small("log_linear", n_heads=2)  # d = 16
    per_level, conv = 2 * 16 * 16, 3 * 3 * 32  # per layer: H d^2, and the last 3 inputs of q, k, v
    for seq_len in (1, 2, 64, 65, 1024, 4096):
        assert model.state_size(seq_len) == 2 * (levels(seq_len) * per_level + conv)
    assert model.state_size(128) - model.state_size(64) == 2 * per_level
    assert 10 * model.state_size(8192) < small("transformer").state_size(8192)  # far below a KV cache
    assert [levels(t) for t in (1, 2, 1024, 1025, 2**20)] == [1, 2, 11, 12, 21]


def test_log_linear_reference_carries_levels_states(monkeypatch):
    """The reference's state tensor has levels(T) slots of d x d per head (what state_size counts)."""
    shapes = []
    real_cat = torch.cat

    def watching_cat(tensors, dim=0):
        out = real_cat(tensors, dim=dim)
        if out.dim() == 5:
            shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(scan_log_linear.torch, "cat", watching_cat)
    q, k, v, log_decay, lam = (t.detach() for t in log_linear_inputs(1, 20, 2, 4, 4))
    log_linear_reference(q, k, v, log_decay, lam)
    assert set(shapes) == {(1, 2, levels(20), 4, 4)}


@pytest.mark.parametrize("chunk_size", [0, 48])
def test_log_linear_rejects_a_chunk_that_is_not_a_power_of_two(chunk_size):
    with pytest.raises(ConfigError, match="chunk_size"):
        build_model("log_linear", VOCAB, chunk_size=chunk_size)


# --- the three together ---------------------------------------------------------------------------------
def test_the_families_are_registered_where_they_belong(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()[2:] if line.strip()]
    assert names.index("transformer") < names.index("fox") < names.index("linear_attention")
    assert names.index("linear_attention") < names.index("gla") < names.index("ssm")
    assert names.index("gated_deltanet") < names.index("log_linear")
    assert {name: model_class(name).cost_class for name in ("gla", "fox", "log_linear")} == {
        "gla": "O(n)", "fox": "O(n^2)", "log_linear": "O(n log n)"}
    # parameter matching: fox keeps to the softmax-attention grid (head width a multiple of 8), the others do not
    assert (width_step("fox"), width_step("gla"), width_step("log_linear")) == (32, 8, 8)


@pytest.mark.parametrize("module", [gla_module, fox_module, scan_log_linear, sys.modules[__name__]])
def test_worked_examples_in_docstrings_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize("mixer_class", [GatedLinearAttention, LogLinearMamba2])
def test_the_memory_is_memory_flops_not_attention(mixer_class):
    mixer = mixer_class(32, 4, short_conv=0, chunk_size=16)
    assert mixer.attention_flops(2, 64) == 0 and mixer.memory_flops(2, 64) > 0
