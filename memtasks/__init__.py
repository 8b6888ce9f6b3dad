"""memtasks: seeded, vectorised generators of short-term-memory tasks.

    >>> from membench.memtasks import get_task, list_tasks
    >>> task = get_task("associative_recall", num_kv_pairs=8)
    >>> batch = task.sample(batch_size=4, seq_len=64, seed=0)
    >>> bool((task.solve(batch.inputs)[batch.scored] == batch.targets[batch.scored]).all())
    True

Adding a task is one file in this folder with a `@register_task("name")` class; it is discovered on
first use of the registry and picked up by the contract tests.
"""

from __future__ import annotations

import dataclasses

from membench.checks import ConfigError
from membench.memtasks.base import IGNORE, NO_LAG, Batch, Task, eval_seed, make_generator, param, train_seed
from membench.registry import Registry, UnknownNameError

TASKS: Registry[type[Task]] = Registry("task", package="membench.memtasks.tasks", plugins=True)
register_task = TASKS.register


def list_tasks() -> list[str]:
    """Names of every registered task."""
    return TASKS.names()


def task_class(name: str) -> type[Task]:
    return TASKS.get(name)


def get_task(name: str, **params) -> Task:
    """Build task `name` with validated params.

    Unknown names raise UnknownNameError listing the closest valid names; unknown or invalid params
    raise ConfigError naming the param and what is allowed.
    """
    cls = TASKS.get(name)
    fields = [f.name for f in dataclasses.fields(cls)]
    for key in params:
        if key not in fields:
            raise ConfigError(
                f"unknown param {key!r} for task {name}; valid params: {', '.join(fields) or 'none'}"
            )
    return cls(**params)


__all__ = [
    "IGNORE", "NO_LAG", "Batch", "Task", "TASKS", "UnknownNameError", "eval_seed", "get_task",
    "list_tasks", "make_generator", "param", "register_task", "task_class", "train_seed",
]
