"""`membench tasks`: the registered tasks with version, params and a one-line description."""

from __future__ import annotations

import dataclasses

from membench.memtasks import list_tasks, task_class
from membench.runners.reporting.text import text_table

HELP = "list the tasks: name, version, params with defaults, description"


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    rows = []
    for name in list_tasks():
        cls = task_class(name)
        params = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls))
        rows.append((name, str(cls.version), params or "-", cls.description))
    header = ("task", "version", "params (defaults)", "description")
    print(text_table(header, rows))
    return 0
