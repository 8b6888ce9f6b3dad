"""`membench show TASK`: render one generated example with its scored positions marked."""

from __future__ import annotations

import typing

from membench.checks import ConfigError, check_limit
from membench.memtasks import get_task, task_class
from membench.plugins import blamed_on
from membench.runners.parsing import key_values, positive_int

HELP = "render one example of a task (scored positions marked [input -> answer])"


def add_arguments(parser) -> None:
    parser.add_argument("task", help="task name (see `membench tasks`)")
    parser.add_argument("--length", default="64", help="sequence length (default 64)")
    parser.add_argument("--seed", default="0", help="generator seed (default 0)")
    parser.add_argument("--param", action="append", metavar="KEY=VALUE", help="a task param; repeatable")


def run(args) -> int:
    cls = task_class(args.task)
    params = key_values(args.param, typing.get_type_hints(cls))
    with blamed_on("task", args.task, "while being built"):
        task = get_task(args.task, **params)
        vocab_size = task.vocab_size
    length = positive_int(args.length, "--length", "length")
    check_limit(f"task {args.task} vocab_size (from its params)", vocab_size, "vocab_size")
    try:
        seed = int(args.seed)
    except ValueError:
        raise ConfigError(f"--seed must be an integer, got {args.seed!r}") from None
    if seed < 0:
        raise ConfigError(f"--seed must be an integer >= 0, got {args.seed!r}")
    check_limit("--seed", seed, "seed")
    with blamed_on("task", args.task, f"in sample() at length {length}, seed {seed}"):
        batch = task.sample(1, length, seed=seed)
        scored = int(batch.scored.sum())
    with blamed_on("task", args.task, "in render()"):
        heading = (f"{task.name} v{task.version} ({task.describe_params()}), length {length}, seed {seed}, "
                   f"{scored} scored positions marked [input -> answer]:")
        example = task.render(batch, 0)
    print(heading)
    print(example)
    return 0
