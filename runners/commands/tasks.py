"""`membench tasks`: the registered tasks with version, source, params and a one-line description."""

from __future__ import annotations

import dataclasses

from membench.memtasks import TASKS, list_tasks, task_class
from membench.runners.parsing import add_include_flag
from membench.runners.reporting.text import text_table

HELP = "list the tasks: name, version, source, params with defaults, description"


def add_arguments(parser) -> None:
    add_include_flag(parser)


def run(args) -> int:
    rows = []
    for name in list_tasks():
        cls = task_class(name)
        params = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls))
        rows.append((name, str(cls.version), TASKS.source(name), params or "-", cls.description))
    header = ("task", "version", "source", "params (defaults)", "description")
    print(text_table(header, rows))
    return 0
