"""The manual's "Add a task" and "Add a model" examples work as written, on every page that shows them (the
README and docs/tasks.md show the task; docs/models.md the model)."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import torch

from membench.memtasks import TASKS, get_task
from membench.models import MODELS, build_model

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def examples(marker: str) -> list[tuple[str, str]]:
    """(page name, source) of every python block of the manual that contains `marker`."""
    found = [(page.name, block) for page in PAGES
             for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S) if marker in block]
    assert found, f"no example with {marker!r}"
    return found


def exec_example(source: str, name: str, registry) -> None:
    """Run a README example as a module of its own (dataclasses look their module up in sys.modules)."""
    module = types.ModuleType(f"readme_{name}")
    sys.modules[module.__name__] = module
    try:
        exec(compile(source, f"README:{name}", "exec"), module.__dict__)
    except Exception:
        registry.unregister(name)
        raise
    finally:
        del sys.modules[module.__name__]


def test_the_task_example_is_on_the_front_page_and_in_the_manual():
    assert {page for page, _ in examples('@register_task("parity_recall")')} == {"README.md", "tasks.md"}


@pytest.mark.parametrize("page, source", examples('@register_task("parity_recall")'))
def test_add_a_task_example_registers_a_working_task(page, source):
    exec_example(source, "parity_recall", TASKS)
    try:
        task = get_task("parity_recall")
        batch = task.sample(16, 9, seed=0)
        assert torch.equal(task.solve(batch.inputs)[batch.scored], batch.targets[batch.scored])
        rows, cols = batch.scored.nonzero(as_tuple=True)
        assert torch.equal(batch.inputs[rows, cols - batch.lags[rows, cols]], batch.targets[rows, cols])
    finally:
        TASKS.unregister("parity_recall")


@pytest.mark.parametrize("page, source", examples('@register_model("cumulative_mean")'))
def test_add_a_model_example_registers_a_working_causal_model(page, source):
    exec_example(source, "cumulative_mean", MODELS)
    try:
        model = build_model("cumulative_mean", vocab_size=8, d_model=16)
        tokens = torch.randint(0, 8, (2, 12))
        logits = model(tokens)
        assert logits.shape == (2, 12, 8)
        changed = tokens.clone()
        changed[:, 6:] = (changed[:, 6:] + 1) % 8
        torch.testing.assert_close(model(changed)[:, :6], logits[:, :6])
        assert model.state_size(100) == model.state_size(10) > 0
    finally:
        MODELS.unregister("cumulative_mean")
