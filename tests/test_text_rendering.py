"""Every registered task has a closed answer set (or says it is open) and renders as text: these tests run over
`list_tasks()`, so a task registered with @register_task is tested here with no new test written."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from membench.memtasks import IGNORE, NO_LAG, Batch, Task, get_task, list_tasks

TASKS = list_tasks()
# params beside the defaults whose answers or layout differ (motifs, noise, updates, groups)
VARIANTS = {
    "associative_recall": [{"num_updates": 2, "num_kv_pairs": 4}],
    "fuzzy_recall": [{"k_motif_size": 1, "v_motif_size": 1}, {"k_motif_size": 2, "v_motif_size": 3}],
    "copy": [{"noise": True, "selective": True}],
    "state_tracking": [{"group": "parity"}, {"group": "cyclic", "modulus": 7}, {"group": "S3", "score": "last"}],
    "n_back": [{"n": 3}],
}
CASES = [(name, {}) for name in TASKS] + [(n, p) for n, ps in VARIANTS.items() if n in TASKS for p in ps]


def case_id(case) -> str:
    name, params = case
    return name + "".join(f"-{k}={v}" for k, v in params.items())


def lengths_of(task: Task) -> list[int]:
    base = task.min_length()
    return sorted({base, base + 5, max(64, base) + 3})


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_answer_candidates_cover_every_scored_target(case):
    name, params = case
    task = get_task(name, **params)
    candidates = task.answer_candidates()
    if candidates is None:
        assert task.chance_level == 0.0
        return
    assert len(set(candidates)) == len(candidates) and all(0 <= c < task.vocab_size for c in candidates)
    assert task.chance_level == pytest.approx(1.0 / len(candidates))
    allowed = torch.tensor(candidates)
    for seq_len in lengths_of(task):
        batch = task.sample(16, seq_len, seed=5)
        scored = batch.targets[batch.scored]
        assert torch.isin(scored, allowed).all(), f"{name} at {seq_len}: a target outside answer_candidates"


@dataclass
class _Echo(Task):
    """A plugin-like task that declares nothing about its answers: answer the previous token."""

    def min_length(self) -> int:
        return 2

    @property
    def vocab_size(self) -> int:
        return 5

    def _generate(self, batch_size, seq_len, gen, device) -> Batch:
        inputs = torch.randint(self.vocab_size, (batch_size, seq_len), generator=gen, device=device)
        targets = torch.full_like(inputs, IGNORE)
        targets[:, 1:] = inputs[:, :-1]
        lags = torch.full_like(inputs, NO_LAG)
        lags[:, 1:] = 1
        return Batch(inputs, targets, lags)

    def solve(self, inputs):
        return torch.cat([torch.full_like(inputs[:, :1], IGNORE), inputs[:, :-1]], dim=1)


def test_a_task_that_declares_no_answer_set_is_open_with_chance_zero():
    assert _Echo().answer_candidates() is None and _Echo().chance_level == 0.0
