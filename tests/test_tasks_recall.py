"""Task-specific tests of `copy` and `associative_recall` (the generic ones are in test_task_contract.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from membench.memtasks import IGNORE, get_task, make_generator
from membench.memtasks.recall_blocks import distinct_randint, distinct_randint_reference, power_law_slots
from membench.memtasks.tasks.copy import BLANK, GO
from tests.helpers import DEVICES

# --- copy -------------------------------------------------------------------------------------


@pytest.mark.parametrize("noise", [False, True])
def test_copy_output_phase_is_the_content_in_order_fed_blanks(noise):
    task = get_task("copy", num_tokens=5, content_vocab=6, delay=7, noise=noise)
    batch = task.sample(32, 20, seed=0)
    go = 5 + 7
    x, y = batch.inputs, batch.targets
    assert torch.equal(y[:, go:go + 5], x[:, :5])  # the content, in order
    assert (x[:, go] == GO).all() and (x[:, go + 1:] == BLANK).all()  # fed blanks only
    assert (y[:, :go] == IGNORE).all() and (y[:, go + 5:] == IGNORE).all()  # tail of 3 unscored
    delay = x[:, 5:go]
    if noise:  # noise symbols, never blanks or content
        assert (delay >= 2 + 6).all() and (delay < task.vocab_size).all() and delay.unique().numel() > 1
    else:
        assert (delay == BLANK).all()
    assert torch.equal(batch.lags[:, go:go + 5], torch.full((32, 5), go))


@pytest.mark.parametrize("noise", [False, True])
def test_selective_copy_scatters_the_content_and_keeps_its_order(noise):
    n, d = 4, 12
    task = get_task("copy", num_tokens=n, content_vocab=5, delay=d, noise=noise, selective=True)
    batch = task.sample(64, n + d + n, seed=1)
    prefix = batch.inputs[:, :n + d]
    is_content = (prefix >= 2) & (prefix < 2 + 5)
    assert (is_content.sum(dim=1) == n).all()
    first = is_content.nonzero()[:, 1].reshape(64, n)  # (B, n) content positions, ascending
    assert not (first == torch.arange(n)).all(dim=1).all(), "content is never scattered"
    assert first.unique().numel() > n  # positions vary from row to row
    content = prefix[is_content].reshape(64, n)
    assert torch.equal(batch.targets[:, n + d:], content)
    assert torch.equal(batch.lags[:, n + d:], n + d + torch.arange(n) - first)
    filler = prefix[~is_content]
    assert (filler >= 2 + 5).all() if noise else (filler == BLANK).all()


@pytest.mark.parametrize(
    "params, seq_len, layout",
    [
        ({}, 64, (8, 48)),  # both grow: n = T // 8, the delay fills the rest
        ({}, 5, (1, 3)),
        ({"num_tokens": 10}, 64, (10, 44)),  # the delay grows
        ({"delay": 20}, 65, (22, 20)),  # the content grows; one unscored blank at the end
        ({"num_tokens": 3, "delay": 4}, 64, (3, 4)),  # fixed; the tail is unscored
    ],
)
def test_copy_layout_grows_as_documented(params, seq_len, layout):
    task = get_task("copy", **params)
    assert task.layout(seq_len) == layout
    batch = task.sample(4, seq_len, seed=2)
    assert (batch.scored.sum(dim=1) == layout[0]).all()
    assert (batch.inputs == GO).nonzero()[:, 1].eq(sum(layout)).all()


def test_copy_min_length_and_messages():
    assert get_task("copy").min_length() == 2
    assert get_task("copy", num_tokens=10, delay=5).min_length() == 25
    assert get_task("copy", delay=5).min_length() == 7
    with pytest.raises(ValueError, match=r"seq_len=24 .* seq_len >= 2n \+ d = 25"):
        get_task("copy", num_tokens=10, delay=5).sample(1, 24, seed=0)
    for params, name in (
        ({"num_tokens": 0}, "num_tokens"), ({"content_vocab": 1}, "content_vocab"),
        ({"delay": -1}, "delay"), ({"noise": "yes"}, "noise"), ({"selective": 1}, "selective"),
    ):
        with pytest.raises(ValueError, match=name):
            get_task("copy", **params)


def test_selective_noisy_copy_needs_memory():
    """Even where content and noise share positions, the current token says nothing about the answer."""
    task = get_task("copy", noise=True, selective=True)
    batch = task.sample(512, 64, seed=3)
    # the output phase shows only the cue and blanks
    assert set(batch.inputs[batch.scored].unique().tolist()) <= {BLANK, GO}


def test_copy_render_shortens_blank_runs():
    task = get_task("copy", num_tokens=2, content_vocab=4, delay=10)
    text = task.render(task.sample(1, 16, seed=0))
    assert "_*10" in text and text.count("[") == 2 and text.endswith("_ _")


# --- associative_recall -----------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_recall_keys_are_distinct_and_each_is_queried_once(device):
    task = get_task("associative_recall", vocab_size=40, num_kv_pairs=12)  # 12 of 20 keys: many repeats drawn
    batch = task.sample(256, 60, seed=5, device=device)
    x, K, k = batch.inputs.cpu(), task.num_keys, 12
    keys, values = x[:, 0:2 * k:2], x[:, 1:2 * k:2]
    assert (keys < K).all() and (values >= K).all()
    assert (keys.sort(dim=1).values.diff(dim=1) > 0).all(), "a key repeats within a sequence"
    queries = x[:, 2 * k:]
    is_key = queries < K  # fillers are never keys
    assert (is_key.sum(dim=1) == k).all()
    assert torch.equal(queries[is_key].reshape(256, k).sort(dim=1).values, keys.sort(dim=1).values)
    assert (batch.scored[:, 2 * k:] == is_key.to(batch.scored.device)).all()
    assert not (is_key[:, 1::2]).any(), "queries sit at the even offsets of the query region"


def test_recall_query_slot_follows_the_power_law():
    """With one pair, the slot of its query is one draw with P(g) proportional to (g + 1)^(a - 1)."""
    S, n = 20, 20000
    for a in (0.01, 0.5, 1.0):
        task = get_task("associative_recall", vocab_size=16, num_kv_pairs=1, power_a=a)
        batch = task.sample(n, 2 + 2 * S, seed=6)
        slot = (batch.scored.nonzero()[:, 1] - 2) // 2  # (n,)
        seen = torch.bincount(slot, minlength=S).double() / n
        p = torch.arange(1, S + 1, dtype=torch.float64).pow(a - 1)
        assert (seen - p / p.sum()).abs().sum() / 2 < 0.025, f"power_a={a}: total variation too large"


def test_recall_power_a_spreads_the_queries():
    lags = {}
    for a in (0.01, 1.0):
        task = get_task("associative_recall", vocab_size=64, num_kv_pairs=4, power_a=a)
        batch = task.sample(2000, 128, seed=7)
        lags[a] = batch.lags[batch.scored].double().mean().item()
    assert lags[0.01] + 20 < lags[1.0], lags


def test_recall_pairs_grow_with_length_and_are_capped_by_the_keys():
    task = get_task("associative_recall", vocab_size=64)
    assert [task.pairs(t) for t in (3, 16, 64, 255, 256, 1024)] == [1, 2, 8, 31, 32, 32]
    batch = task.sample(2, 1024, seed=0)
    assert (batch.scored.sum(dim=1) == 32).all()


def test_recall_validation_names_the_param_and_the_limit():
    with pytest.raises(ValueError, match=r"num_kv_pairs=65 .* maximum is 64"):
        get_task("associative_recall", vocab_size=128, num_kv_pairs=65)
    with pytest.raises(ValueError, match=r"seq_len >= 255; at seq_len=200 the maximum num_kv_pairs is 50"):
        get_task("associative_recall", vocab_size=8192, num_kv_pairs=64).sample(1, 200, seed=0)
    for params, name in (
        ({"vocab_size": 3}, "vocab_size"), ({"num_kv_pairs": 0}, "num_kv_pairs"),
        ({"power_a": 0}, "power_a"), ({"power_a": float("nan")}, "power_a"), ({"power_a": True}, "power_a"),
    ):
        with pytest.raises(ValueError, match=name):
            get_task("associative_recall", **params)


def test_recall_render_lists_the_pairs():
    task = get_task("associative_recall", vocab_size=8, num_kv_pairs=2)
    text = task.render(task.sample(1, 9, seed=2))
    assert text == "pairs:   k1=v2 k3=v3\nqueries: [k3 -> v3] v2 [k1 -> v2] v3 v3"


# --- the samplers behind associative_recall ----------------------------------------------------


@pytest.mark.parametrize("sampler", [distinct_randint, distinct_randint_reference])
@pytest.mark.parametrize("k, high", [(1, 5), (6, 13), (6, 12), (10, 10), (40, 4096)])
def test_distinct_randint_draws_uniform_ordered_tuples(sampler, k, high):
    """Distinct, in range, and uniform: every value equally likely at every position, and every pair of
    positions equally likely in either order. (6, 13) takes the redraw path with many repeats."""
    n = 30000 if high <= 13 else 500
    draws = sampler(n, k, high, make_generator(0, "cpu"), torch.device("cpu"))
    assert draws.shape == (n, k) and draws.dtype == torch.int64
    assert draws.min() >= 0 and draws.max() < high
    assert (draws.sort(dim=1).values.diff(dim=1) > 0).all()
    if high <= 13:
        counts = torch.stack([torch.bincount(draws[:, j], minlength=high) for j in range(k)]).double()
        expected = n / high
        assert ((counts - expected).abs() < 5 * math.sqrt(expected)).all()  # 5 sigma per cell
    if k >= 2:
        below = (draws[:, 0] < draws[:, -1]).double().mean().item()
        assert abs(below - 0.5) < 5 * math.sqrt(0.25 / n)


def test_distinct_randint_takes_the_sync_free_path_off_the_cpu():
    """On an accelerator the redraw loop (a host sync per round) is skipped: a meta tensor, which has no
    values to read back, gets through, and it is the reference's topk draw."""
    draws = distinct_randint(4, 8, 1000, None, torch.device("meta"))
    assert draws.shape == (4, 8) and draws.device.type == "meta"
    with pytest.raises((RuntimeError, NotImplementedError)):  # the CPU path reads values back
        torch.randint(1000, (4, 8), device="meta").nonzero()


def test_distinct_randint_is_deterministic():
    a, b = (distinct_randint(500, 30, 100, make_generator(9, "cpu"), torch.device("cpu")) for _ in range(2))
    assert torch.equal(a, b)


def _sequential_slots(rng: np.random.Generator, k: int, num_slots: int, power_a: float) -> list[int]:
    """The per-row definition power_law_slots vectorises: k draws one after another, no replacement."""
    weights = np.arange(1, num_slots + 1, dtype=np.float64) ** (power_a - 1)
    return list(rng.choice(num_slots, size=k, replace=False, p=weights / weights.sum()))


@pytest.mark.parametrize("power_a", [0.01, 0.7])
def test_power_law_slots_match_sequential_draws(power_a):
    """The exponential race has the law of the sequential draws: compare the first and the third draw."""
    n, k, S = 6000, 3, 6
    fast = power_law_slots(n, k, S, power_a, make_generator(1, "cpu"), torch.device("cpu"))
    assert (fast.sort(dim=1).values.diff(dim=1) > 0).all()
    rng = np.random.default_rng(1)
    slow = torch.tensor([_sequential_slots(rng, k, S, power_a) for _ in range(n)])
    for j in (0, 2):
        p_fast = torch.bincount(fast[:, j], minlength=S).double() / n
        p_slow = torch.bincount(slow[:, j], minlength=S).double() / n
        assert (p_fast - p_slow).abs().sum() / 2 < 0.04, (j, p_fast, p_slow)
