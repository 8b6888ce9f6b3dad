"""The README's "Add a new task" and "Add a new model" examples work as written."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import torch

from membench.memtasks import TASKS, get_task
from membench.models import MODELS, build_model

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


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


def test_add_a_task_example_registers_a_working_task():
    exec_example(readme_blocks()[0], "parity_recall", TASKS)
    try:
        task = get_task("parity_recall")
        batch = task.sample(16, 9, seed=0)
        assert torch.equal(task.solve(batch.inputs)[batch.scored], batch.targets[batch.scored])
        rows, cols = batch.scored.nonzero(as_tuple=True)
        assert torch.equal(batch.inputs[rows, cols - batch.lags[rows, cols]], batch.targets[rows, cols])
    finally:
        TASKS.unregister("parity_recall")


def test_add_a_model_example_registers_a_working_causal_model():
    exec_example(readme_blocks()[1], "cumulative_mean", MODELS)
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
