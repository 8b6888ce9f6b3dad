"""Task-specific tests of flip_flop, state_tracking and n_back (the generic ones are in test_task_contract.py)."""

from __future__ import annotations

import pytest
import torch

from membench.memtasks import IGNORE, get_task
from membench.memtasks.tasks.flip_flop import READ, WRITE, FlipFlop, ffl_params
from membench.memtasks.tasks.n_back import MATCH, NONMATCH
from membench.memtasks.tasks.state_tracking import (
    GROUPS,
    permutations,
    prefix_products,
    prefix_products_reference,
)
from membench.runners.spec import load_spec
from tests.helpers import DEVICES


# --- flip_flop ----------------------------------------------------------------------------------
def test_flip_flop_law_of_the_instructions_and_forced_ends():
    task = get_task("flip_flop", p_write=0.2, p_read=0.3)
    batch = task.sample(2000, 65, seed=0)
    ops = batch.inputs[:, 0::2]  # (B, 33)
    assert (ops[:, 0] == WRITE).all() and (ops[:, -1] == READ).all()
    inner = ops[:, 1:-1]
    assert (inner == WRITE).float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert (inner == READ).float().mean().item() == pytest.approx(0.3, abs=0.01)
    bits = batch.inputs[:, 1::2]
    assert set(bits.unique().tolist()) == {0, 1} and bits.float().mean().item() == pytest.approx(0.5, abs=0.01)


def test_flip_flop_scores_exactly_the_reads_and_the_stream_carries_their_bits():
    task = get_task("flip_flop")
    batch = task.sample(64, 40, seed=1)
    is_read = torch.zeros_like(batch.scored)
    is_read[:, 0::2] = batch.inputs[:, 0::2] == READ
    assert torch.equal(batch.scored, is_read)
    # the bit after a read (the paper's deterministic token) is the answer due at the read
    rows, cols = batch.scored[:, :-1].nonzero(as_tuple=True)
    assert torch.equal(batch.inputs[rows, cols + 1], batch.targets[rows, cols])
    # the lag lands on the bit of a write, and no write lies between it and the read
    bit_at = cols - batch.lags[rows, cols]
    assert (batch.inputs[rows, bit_at - 1] == WRITE).all()
    for r, c, b in zip(rows.tolist(), cols.tolist(), bit_at.tolist()):
        assert WRITE not in batch.inputs[r, b + 1:c:2].tolist()  # the instructions between the two


def test_flip_flop_named_slices_are_the_papers_sparse_and_dense_streams():
    assert ffl_params(0.8) == {"p_write": 0.1, "p_read": 0.1} == get_task("flip_flop").params()
    assert FlipFlop.NAMED_SLICES == {"sparse": ffl_params(0.98), "dense": ffl_params(0.1)}
    assert ffl_params(0.98) == {"p_write": 0.01, "p_read": 0.01}
    assert ffl_params(0.1) == {"p_write": 0.45, "p_read": 0.45}

    def mean_lag(params):
        batch = get_task("flip_flop", **params).sample(512, 256, seed=2)
        return batch.lags[batch.scored].float().mean().item()

    assert mean_lag(ffl_params(0.98)) > 5 * mean_lag({}) > 5 * mean_lag(ffl_params(0.1))


def test_smoke_evaluates_flip_flop_on_the_named_slices():
    trials = [t for t in load_spec("smoke").trials if t.task == "flip_flop"]
    assert trials
    slices = {s.name: s for s in trials[0].eval_slices}
    for name, params in FlipFlop.NAMED_SLICES.items():
        assert slices[name].params == params
    assert any(not s.params for s in slices.values())  # and the in-distribution stream beside them


def test_flip_flop_render():
    task = get_task("flip_flop")
    assert task.render(task.sample(1, 15, seed=43)) == "w1 [r -> 1] i1 i0 [r -> 1] w0 i1 [r -> 0]"


# --- state_tracking -----------------------------------------------------------------------------
def task_for(group):
    return get_task("state_tracking", group=group, modulus=7 if group == "cyclic" else None)


@pytest.mark.parametrize("group", GROUPS)
def test_each_table_is_a_group(group):
    table = task_for(group).table()
    G = table.shape[0]
    e = torch.arange(G)
    assert torch.equal(table[0], e) and torch.equal(table[:, 0], e)  # element 0 is the identity
    assert all(sorted(row.tolist()) == list(range(G)) for row in table)  # a Latin square: inverses exist
    assert torch.equal(table[table[:, :, None], e], table[e[:, None, None], table[None]])  # (ab)c = a(bc)
    commutative = torch.equal(table, table.T)
    assert commutative == (group in ("parity", "cyclic"))


def test_permutation_products_follow_a_then_b():
    perms = permutations(3)
    table = get_task("state_tracking", group="S3").table()
    for a in range(6):
        for b in range(6):
            product = perms[table[a, b]]
            assert product == tuple(perms[b][perms[a][x]] for x in range(3))


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seq_len", [1, 2, 3, 8, 33, 100])
def test_parallel_prefix_equals_the_token_loop(group, device, seq_len):
    table = task_for(group).table(device)
    words = torch.randint(table.shape[0], (5, seq_len), generator=torch.Generator().manual_seed(seq_len)).to(device)
    assert torch.equal(prefix_products(table, words), prefix_products_reference(table, words))


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("score", ["all", "last"])
def test_state_tracking_solver_agrees_for_every_group(group, score):
    task = get_task("state_tracking", group=group, modulus=7 if group == "cyclic" else None, score=score)
    for seq_len in (2, 3, 17, 64):
        batch = task.sample(16, seq_len, seed=seq_len)
        assert torch.equal(task.solve(batch.inputs)[batch.scored], batch.targets[batch.scored])
        assert int(batch.inputs.max()) < task.vocab_size


def test_parity_is_the_running_xor_and_score_last_scores_one_position():
    task = get_task("state_tracking", group="parity", score="last")
    batch = task.sample(64, 21, seed=0)
    assert (batch.scored.sum(dim=1) == 1).all() and batch.scored[:, -1].all()
    assert torch.equal(batch.targets[:, -1], batch.inputs.sum(dim=1) % 2)
    assert (batch.lags[:, -1] == 20).all()
    every = get_task("state_tracking", group="S5").sample(8, 12, seed=0)
    assert not every.scored[:, 0].any() and every.scored[:, 1:].all()
    assert torch.equal(every.lags[:, 1:], torch.arange(1, 12).expand(8, 11))


def test_state_tracking_answers_are_uniform_whatever_the_current_token():
    batch = get_task("state_tracking", group="S3").sample(4000, 16, seed=1)
    x, y = batch.inputs[:, 1:].flatten(), batch.targets[:, 1:].flatten()
    joint = torch.zeros(6, 6).index_put_((x, y), torch.ones_like(x, dtype=torch.float), accumulate=True)
    assert (joint / joint.sum()).sub(1 / 36).abs().max().item() < 0.005


# --- n_back -------------------------------------------------------------------------------------
def test_n_back_law_match_rate_and_uniform_symbols():
    task = get_task("n_back", n=3, num_symbols=5, match_prob=0.3)
    batch = task.sample(4000, 40, seed=0)
    assert (batch.targets[:, :3] == IGNORE).all() and batch.scored[:, 3:].all()
    assert (batch.targets[:, 3:] == MATCH).float().mean().item() == pytest.approx(0.3, abs=0.01)
    counts = torch.bincount(batch.inputs.flatten() - 2, minlength=5).float()
    assert (counts / counts.sum()).sub(0.2).abs().max().item() < 0.005
    assert (batch.lags[batch.scored] == 3).all()
    # a non-match never repeats the symbol n back (the chain's shift is never 0 mod S)
    nonmatch = batch.targets[:, 3:] == NONMATCH
    assert (batch.inputs[:, 3:] != batch.inputs[:, :-3])[nonmatch].all()


@pytest.mark.parametrize("seq_len, n", [(2, 1), (15, 1), (16, 2), (64, 8), (100, 12)])
def test_n_back_default_n_grows_with_length(seq_len, n):
    task = get_task("n_back")
    assert task.back(seq_len) == n
    batch = task.sample(4, seq_len, seed=0)
    assert (batch.lags[batch.scored] == n).all() and int(batch.scored[0].sum()) == seq_len - n


def test_n_back_rejects_a_length_of_n_or_less():
    with pytest.raises(ValueError, match="seq_len"):
        get_task("n_back", n=5).sample(2, 5, seed=0)
