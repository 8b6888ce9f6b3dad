"""`membench check` and the contract library behind it (runners/contract.py): broken models and tasks are caught."""

from __future__ import annotations

import itertools
import sys

import pytest

from membench.memtasks import list_tasks
from membench.runners.contract import FAIL, PASS, SKIP, check_model, check_task
from tests.helpers import run_cli, undo_plugin_side_effects  # noqa: F401 (autouse)

_ids = itertools.count()


BROKEN = '''
from dataclasses import dataclass

import torch
from torch import nn

from membench.memtasks import IGNORE, Batch, Task


class Peeks(nn.Module):
    """Mixes in the mean over the whole sequence, the future included."""

    def __init__(self, d_model):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):  # (B, T, D) -> (B, T, D)
        return self.proj(x) + x.mean(dim=1, keepdim=True)


class Detached(nn.Module):
    """Causal, but cuts its own parameters out of the graph."""

    def __init__(self, d_model):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        return self.proj(x).detach()


class WrongShape(nn.Module):
    def __init__(self, d_model):
        super().__init__()
        self.proj = nn.Linear(d_model, 2 * d_model)

    def forward(self, x):
        return self.proj(x)


@dataclass
class Stutter(Task):
    """Every token twice, the second copy scored: | a a b b | -> | . a . b |. The answer is the current token."""

    description = "repeat the previous token (leaks: it is also the current one)"

    def min_length(self):
        return 2

    @property
    def vocab_size(self):
        return 8

    def _generate(self, batch_size, seq_len, gen, device):
        half = torch.randint(0, 8, (batch_size, (seq_len + 1) // 2), generator=gen, device=device)
        inputs = half.repeat_interleave(2, dim=1)[:, :seq_len]
        targets, lags = torch.full_like(inputs, IGNORE), torch.full_like(inputs, -1)
        targets[:, 1::2], lags[:, 1::2] = inputs[:, 0::2][:, : targets[:, 1::2].shape[1]], 1
        return Batch(inputs, targets, lags)

    def solve(self, inputs):
        out = inputs.clone()
        out[:, 1:] = inputs[:, :-1]
        return out
'''


@pytest.fixture
def broken(tmp_path, monkeypatch):
    name = f"broken_things_{next(_ids)}"
    (tmp_path / f"{name}.py").write_text(BROKEN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    return name


def statuses(rows) -> dict[str, str]:
    return {r.name: r.status for r in rows}


@pytest.mark.slow
def test_a_family_and_a_task_pass_every_check():
    rows = check_model("mlp")
    assert {r.status for r in rows} <= {PASS, SKIP} and statuses(rows)["causal (fast path)"] == PASS
    assert statuses(rows)["causal (reference path)"] == SKIP  # mlp has no separate reference path
    assert {r.status for r in check_task("copy")} == {PASS}


def test_a_non_causal_mixer_is_caught(broken):
    rows = {r.name: r for r in check_model(f"{broken}:Peeks")}
    assert rows["causal (fast path)"].status == FAIL
    assert "changing tokens after position 0 changed a logit at or before it" in rows["causal (fast path)"].detail
    assert rows["state size"].status == SKIP and "unknown" in rows["state size"].detail
    assert rows["flops"].status == PASS  # counted by FlopCounterMode, since it declares none


def test_a_mixer_that_drops_its_gradient_is_caught(broken):
    rows = {r.name: r for r in check_model(f"{broken}:Detached")}
    assert rows["gradient reaches every parameter"].status == FAIL
    assert "blocks.0.mixer.inner.proj.weight" in rows["gradient reaches every parameter"].detail
    assert rows["causal (fast path)"].status == PASS


def test_a_wrong_shape_fails_the_build_and_skips_the_rest(broken):
    rows = check_model(f"{broken}:WrongShape")
    assert rows[0].status == PASS  # it builds; the forward is what breaks
    shape = statuses(rows)["shapes and dtype"]
    assert shape == FAIL and "same shape" in next(r.detail for r in rows if r.name == "shapes and dtype")


def test_a_task_whose_answer_leaks_locally_is_caught(broken):
    rows = {r.name: r for r in check_task(f"{broken}:Stutter")}
    assert rows["memory is necessary"].status == FAIL and "leaks locally" in rows["memory is necessary"].detail
    assert rows["solver agrees with every label"].status == PASS and rows["lags point at the evidence"].status == PASS


def test_the_command_prints_one_row_per_check_and_sets_the_exit_code(broken, capsys):
    code, out, _ = run_cli(capsys, "check", "--task", "copy")
    assert code == 0 and "solver agrees with every label" in out and "0 failed" in out
    code, out, _ = run_cli(capsys, "check", f"{broken}:Peeks")
    assert code == 1 and "causal (fast path)" in out and " FAIL " in out
    assert len([line for line in out.splitlines() if line.strip()]) == 11  # 10 checks and the summary
    code, _, err = run_cli(capsys, "check", f"{broken}:Nothing")
    assert code == 2 and "has no attribute 'Nothing'" in err
    code, _, err = run_cli(capsys, "check", "lstm", "--task", "copy")
    assert code == 2 and "not both" in err
    code, _, err = run_cli(capsys, "check", "lstm", "--param", "mlp_ration=2")
    assert code == 2 and "did you mean 'mlp_ratio'" in err


@pytest.mark.parametrize("name", list_tasks())
def test_every_registered_task_passes_the_task_checks(name):
    failed = [f"{r.name}: {r.detail}" for r in check_task(name) if not r.ok]
    assert not failed, failed
