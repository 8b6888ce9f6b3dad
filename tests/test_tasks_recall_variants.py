"""Task-specific tests of key overwrite (associative_recall's num_updates), noisy_recall and fuzzy_recall (the
generic ones are in test_task_contract.py)."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch

from membench.memtasks import IGNORE, get_task, make_generator
from membench.memtasks.recall_blocks import motif_codes, motif_tokens
from membench.memtasks.tasks.associative_recall import rebind, solve_recall
from tests.helpers import DEVICES


def digest(batch) -> str:
    h = hashlib.sha256()
    for tensor in (batch.inputs, batch.targets, batch.lags):
        h.update(tensor.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def bindings_by_hand(row: list[int], context_len: int, num_keys: int, a: int = 1, b: int = 1) -> dict:
    """The key motif -> value motif table of one row, read left to right (a later binding replaces an
    earlier one), written as plainly as possible to check the generator and the solver against."""
    table, t = {}, 0
    while t < context_len:
        if row[t] < num_keys:
            table[tuple(row[t:t + a])] = (tuple(row[t + a:t + a + b]), t)
            t += a + b
        else:
            t += 1
    return table


# --- associative_recall with num_updates ---------------------------------------------------------------


@pytest.mark.parametrize(
    "params, seq_len, batch_size, seed, expected",
    [  # digests of batches drawn by version 1 (before num_updates existed), same torch
        ({}, 64, 16, 0, "fc15bde7f7d80d52"),
        ({}, 257, 8, 5, "bfcea31e8f089431"),
        ({"vocab_size": 40, "num_kv_pairs": 12}, 61, 32, 3, "15440f5a7243cc68"),
        ({"vocab_size": 8192, "num_kv_pairs": 64, "power_a": 1.0}, 256, 4, 9, "854bf39d669ed646"),
        ({"vocab_size": 8, "num_kv_pairs": 2}, 9, 1, 2, "7f02311ab8dd4de1"),
    ],
)
def test_num_updates_zero_keeps_version_1_bytes(params, seq_len, batch_size, seed, expected):
    for extra in ({}, {"num_updates": 0}):
        batch = get_task("associative_recall", **params, **extra).sample(batch_size, seq_len, seed=seed)
        assert digest(batch) == expected


def test_version_is_bumped_for_num_updates():
    assert get_task("associative_recall").version == 2


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k, u", [(4, 1), (6, 3), (5, 5)])
def test_updates_rebind_keys_and_the_latest_value_wins(device, k, u):
    task = get_task("associative_recall", vocab_size=24, num_kv_pairs=k, num_updates=u)
    seq_len = 4 * k + 2 * u + 9
    batch = task.sample(64, seq_len, seed=k + u, device=device)
    x, y, lags = batch.inputs.cpu(), batch.targets.cpu(), batch.lags.cpu()
    c, K = 2 * (k + u), task.num_keys
    assert task.context_len(seq_len) == c
    keys, values = x[:, 0:c:2], x[:, 1:c:2]  # (B, k + u)
    assert (keys < K).all() and (values >= K).all()
    first, updates = keys[:, :k], keys[:, k:]
    assert (first.sort(dim=1).values.diff(dim=1) > 0).all(), "the first k keys are distinct"
    assert (updates.sort(dim=1).values.diff(dim=1) > 0).all() if u > 1 else True, "a key is updated twice"
    assert (updates[..., None] == first[:, None, :]).any(dim=2).all(), "an update binds a key never bound"
    for row in range(64):
        table = bindings_by_hand(x[row].tolist(), c, K)
        firsts = {int(first[row, j]): int(values[row, j]) for j in range(k)}
        asked = (y[row] != IGNORE).nonzero()[:, 0]
        assert len(asked) == k and sorted(x[row, asked].tolist()) == sorted(firsts)  # each key asked once
        for t in asked.tolist():
            key = int(x[row, t])
            (value,), start = table[(key,)]
            assert int(y[row, t]) == value, "the answer is the latest value"
            assert t - int(lags[row, t]) == start + 1, "the lag points at the latest binding's value"
            if key in updates[row].tolist():
                assert value != firsts[key], "an update changes the value"


def test_update_draws_are_uniform():
    """Which of the k pairs is re-bound is uniform, and so is the new value among the others."""
    n, k, low, high = 30000, 4, 10, 15
    values = torch.full((n, k, 1), low + 2)
    which, fresh = rebind(values, 1, low, high, make_generator(0, "cpu"))
    assert which.shape == (n, 1) and fresh.shape == (n, 1, 1)
    for counts, cells in ((torch.bincount(which[:, 0], minlength=k), k),
                          (torch.bincount(fresh[:, 0, 0] - low, minlength=high - low), high - low)):
        counts = counts.double()
        if cells == high - low:
            assert counts[2] == 0  # never the old value
            counts = counts[torch.arange(cells) != 2]
        expected = n / counts.numel()
        assert ((counts - expected).abs() < 5 * math.sqrt(expected)).all(), counts


def test_solver_takes_the_latest_binding():
    """A hand-written sequence: k1 bound to v0 then v2; the solver answers v2 at its query."""
    task = get_task("associative_recall", vocab_size=8, num_kv_pairs=2, num_updates=1)
    k0, k1, v0, v1, v2 = 0, 1, 4, 5, 6
    inputs = torch.tensor([[k1, v0, k0, v1, k1, v2, k1, v0, k0, v1, v1]])
    solved = task.solve(inputs)
    assert solved[0, 6] == v2 and solved[0, 8] == v1
    assert (solved[0, torch.arange(11) != 6][torch.arange(10) != 7] == IGNORE).all()


def test_num_updates_lengths_and_messages():
    task = get_task("associative_recall", vocab_size=64, num_kv_pairs=8, num_updates=3)
    assert task.min_length() == 4 * 8 + 2 * 3 - 1
    with pytest.raises(ValueError, match=r"num_kv_pairs=8 and 3 updates: .* seq_len >= 37; at seq_len=36 the maximum "
                                         r"num_kv_pairs is 7"):
        task.sample(1, 36, seed=0)
    derived = get_task("associative_recall", vocab_size=64, num_updates=2)
    assert derived.min_length() == 16  # 16 // 8 = 2 pairs, both updated
    with pytest.raises(ValueError, match="seq_len=15 is too short"):
        derived.sample(1, 15, seed=0)
    for params, message in (({"num_kv_pairs": 2, "num_updates": 3}, "num_updates=3 .* maximum is 2"),
                            ({"num_updates": -1}, "num_updates"), ({"num_updates": 1.5}, "num_updates"),
                            ({"vocab_size": 8, "num_updates": 5}, "num_updates=5 .* maximum is 4")):
        with pytest.raises(ValueError, match=message):
            get_task("associative_recall", **params)


def test_update_render_shows_both_bindings():
    task = get_task("associative_recall", vocab_size=8, num_kv_pairs=2, num_updates=1)
    batch = task.sample(1, 11, seed=3)  # the docstring's worked example
    assert task.render(batch) == "pairs:   k0=v0 k3=v0 k3=v2\nqueries: [k3 -> v2] v1 [k0 -> v0] v1 v3"
    assert batch.lags[batch.scored].tolist() == [1, 7]


# --- noisy_recall ------------------------------------------------------------------------------------


@pytest.mark.parametrize("frac_noise", [0.0, 0.2, 0.5, 0.9])
@pytest.mark.parametrize("k", [3, 8])
def test_noise_fraction_is_respected_and_noise_sits_only_between_pairs(frac_noise, k):
    task = get_task("noisy_recall", vocab_size=40, noise_vocab_size=8, num_kv_pairs=k, frac_noise=frac_noise)
    seq_len = task.min_length() + 6
    batch = task.sample(256, seq_len, seed=1)
    x, c, first_noise = batch.inputs, task.context_len(seq_len), task.kv_vocab
    is_noise = x >= first_noise
    m = int(is_noise[0, :c].sum())
    assert (is_noise[:, :c].sum(dim=1) == m).all(), "every row has the same amount of noise"
    assert abs(m / c - frac_noise) <= 0.5 / c + 1e-9, "noise is frac_noise of the pair region, up to rounding"
    assert not is_noise[:, c:].any(), "no noise in the query region"
    is_key = x[:, :c] < task.num_keys
    assert (is_key.sum(dim=1) == k).all()
    after_key = x[:, 1:c + 1][is_key]
    assert ((after_key >= task.num_keys) & (after_key < first_noise)).all(), "a key is always followed by its value"
    if m:
        assert int(x[is_noise].min()) == first_noise and int(x[is_noise].max()) == task.vocab_size - 1
        starts = is_key.float().argmax(dim=1)  # (B,): position of the first pair
        assert starts.unique().numel() > 1, "the noise is not always in the same place"
    solved = task.solve(x)
    assert torch.equal(solved[batch.scored], batch.targets[batch.scored])
    rows, cols = batch.scored.nonzero(as_tuple=True)
    assert torch.equal(x[rows, cols - batch.lags[rows, cols]], batch.targets[rows, cols])


def test_noise_positions_are_uniform_arrangements():
    """One pair among m = 2 noise tokens: the pair is unit 0, 1 or 2 of 3, each with probability 1/3."""
    task = get_task("noisy_recall", vocab_size=12, noise_vocab_size=4, num_kv_pairs=1, frac_noise=0.5)
    assert task.noise_tokens(1) == 2
    batch = task.sample(9000, task.min_length(), seed=2)
    start = (batch.inputs[:, :4] < task.num_keys).float().argmax(dim=1)
    counts = torch.bincount(start, minlength=3).double()
    assert counts.numel() == 3 and ((counts - 3000).abs() < 5 * math.sqrt(3000)).all(), counts


def test_noisy_pairs_grow_with_length_and_validation():
    task = get_task("noisy_recall")  # 80 tokens: 32 keys, 32 values, 16 noise; f = 0.2: 8.5 tokens a pair
    assert (task.num_keys, task.kv_vocab, task.tokens_per_pair) == (32, 64, 8.5)
    assert [task.pairs(t) for t in (4, 17, 64, 256, 1024)] == [1, 2, 7, 30, 32]
    for params, name in (({"frac_noise": 1.0}, "frac_noise"), ({"frac_noise": -0.1}, "frac_noise"),
                         ({"frac_noise": True}, "frac_noise"), ({"noise_vocab_size": 0}, "noise_vocab_size"),
                         ({"vocab_size": 19}, r"vocab_size=19 leaves 3 tokens .*vocab_size >= 20"),
                         ({"vocab_size": 20, "num_kv_pairs": 3}, "num_kv_pairs=3 .* vocab_size to >= 22")):
        with pytest.raises(ValueError, match=name):
            get_task("noisy_recall", **params)


def test_noisy_render_and_worked_example():
    task = get_task("noisy_recall", vocab_size=12, noise_vocab_size=4, num_kv_pairs=2, frac_noise=0.5)
    batch = task.sample(1, 11, seed=2)
    assert task.render(batch) == "pairs:   n1 k1=v2 n3 n2 k3=v3 n0\nqueries: [k3 -> v3] v3 [k1 -> v2]"
    assert batch.lags[batch.scored].tolist() == [2, 8]


# --- fuzzy_recall ------------------------------------------------------------------------------------


def test_motif_codes_round_trip():
    codes = torch.arange(8**3)
    digits = motif_tokens(codes, 8, 3)
    assert digits.shape == (512, 3) and digits[83].tolist() == [1, 2, 3]
    assert torch.equal(motif_codes(digits, 8), codes)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("a, b, u", [(3, 3, 0), (2, 1, 0), (1, 4, 0), (2, 3, 2)])
def test_fuzzy_motifs_decode_to_their_values(device, a, b, u):
    task = get_task("fuzzy_recall", vocab_size=10, k_motif_size=a, v_motif_size=b, num_kv_pairs=4, num_updates=u)
    seq_len = task.min_length() + 2 * (a + b) + 1
    batch = task.sample(48, seq_len, seed=a * 10 + b, device=device)
    x, y, lags = batch.inputs.cpu(), batch.targets.cpu(), batch.lags.cpu()
    c, K, w = task.context_len(seq_len), task.num_keys, a + b
    assert c == (4 + u) * w
    pairs = x[:, :c].reshape(48, 4 + u, w)
    assert (pairs[..., :a] < K).all() and (pairs[..., a:] >= K).all()
    first_codes = motif_codes(pairs[:, :4, :a], K)  # (B, 4)
    assert (first_codes.sort(dim=1).values.diff(dim=1) > 0).all(), "key motifs are distinct"
    assert (batch.scored.sum(dim=1) == 4 * b).all(), "every key asked once, its whole value scored"
    for row in range(48):
        table = bindings_by_hand(x[row].tolist(), c, K, a, b)
        assert len(table) == 4
        is_key = (x[row] < K).tolist()
        query_starts = [t for t in range(c, seq_len) if is_key[t] and not is_key[t - 1]]
        assert len(query_starts) == 4
        for q in query_starts:
            value, start = table[tuple(x[row, q:q + a].tolist())]
            scored = range(q + a - 1, q + a - 1 + b)
            assert tuple(y[row, list(scored)].tolist()) == value, "the targets spell the value motif"
            assert tuple(x[row, q + a:q + a + b - 1].tolist()) == value[:-1], "value tokens are fed back"
            assert all(int(lags[row, t]) == q - start - 1 for t in scored)
    rows, cols = batch.scored.nonzero(as_tuple=True)
    assert torch.equal(x[rows, cols - lags[rows, cols]], y[rows, cols])
    assert torch.equal(task.solve(x)[batch.scored.cpu()], y[batch.scored.cpu()])


def test_fuzzy_solver_matches_a_hand_written_sequence():
    """Key motifs that share tokens (k1k2 vs k2k1) are told apart, and a re-bound one answers its latest value."""
    K = 4  # vocab_size=8, key tokens 0..3, value tokens 4..7
    k1, k2, v0, v1, v2, v3 = 1, 2, 4, 5, 6, 7
    inputs = torch.tensor([[k1, k2, v0, v1, k2, k1, v2, v3, k1, k2, v3, v3, v0, k2, k1, v2, v3, v0, k1, k2, v0]])
    answers = solve_recall(inputs, K, 2, 2, context_len=12)  # pairs: k1k2=v0v1, k2k1=v2v3, k1k2=v3v3
    assert answers[0, 14:16].tolist() == [v2, v3] and answers[0, 19:21].tolist() == [v3, v3]
    assert (answers[0, :14] == IGNORE).all() and answers[0, 16:19].tolist() == [IGNORE] * 3


def test_fuzzy_defaults_validation_and_render():
    task = get_task("fuzzy_recall")  # MAD-lab's: vocab 16, motifs of 3
    assert (task.num_keys, task.key_size, task.value_size, task.num_key_motifs) == (8, 3, 3, 512)
    assert [task.pairs(t) for t in (11, 24, 64, 256)] == [1, 1, 2, 10]
    assert task.min_length() == 11
    small = get_task("fuzzy_recall", vocab_size=8, k_motif_size=2, v_motif_size=2, num_kv_pairs=2)
    batch = small.sample(1, 16, seed=2)  # the docstring's worked example
    assert batch.lags[batch.scored].tolist() == [3, 3, 11, 11]
    assert small.render(batch) == (
        "pairs:   k2k0=v1v0 k3k3=v2v3\nqueries: k3 [k3 -> v2] [v2 -> v3] v1 k2 [k0 -> v1] [v1 -> v0] v3"
    )
    for params, name in (({"k_motif_size": 0}, "k_motif_size"), ({"v_motif_size": 2.0}, "v_motif_size"),
                         ({"vocab_size": 128, "k_motif_size": 4}, "16777216 distinct keys; at most 262144"),
                         ({"vocab_size": 4, "k_motif_size": 2, "num_kv_pairs": 5}, "num_kv_pairs=5 .* maximum is 4")):
        with pytest.raises(ValueError, match=name):
            get_task("fuzzy_recall", **params)


# --- all three with updates ------------------------------------------------------------------------------


UPDATED = [("associative_recall", {"vocab_size": 20}), ("noisy_recall", {"vocab_size": 26, "noise_vocab_size": 6}),
           ("fuzzy_recall", {"vocab_size": 8, "k_motif_size": 2, "v_motif_size": 3})]


@pytest.mark.parametrize("name, params", UPDATED, ids=[name for name, _ in UPDATED])
@pytest.mark.parametrize("num_updates", [1, 3])
def test_updates_agree_with_the_solver_and_the_lags_in_every_variant(name, params, num_updates):
    task = get_task(name, **params, num_updates=num_updates)
    for seq_len in (task.min_length(), task.min_length() + 3, 97):
        batch = task.sample(32, seq_len, seed=seq_len)
        scored = batch.scored
        assert scored.any(dim=1).all()
        assert torch.equal(task.solve(batch.inputs)[scored], batch.targets[scored])
        rows, cols = scored.nonzero(as_tuple=True)
        evidence = cols - batch.lags[rows, cols]
        assert (evidence >= 0).all() and (evidence < task.context_len(seq_len)).all()
        assert torch.equal(batch.inputs[rows, evidence], batch.targets[rows, cols])


@pytest.mark.parametrize("name, params", UPDATED, ids=[name for name, _ in UPDATED])
def test_updates_generate_on_the_meta_device_without_a_host_sync(name, params):
    task = get_task(name, **params, num_updates=2)
    batch = task._generate(8, 67, None, torch.device("meta"))
    assert batch.inputs.shape == batch.targets.shape == batch.lags.shape == (8, 67)
