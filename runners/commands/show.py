"""`membench show TASK`: render one generated example with its scored positions marked; with `--text`, the
example as a language model reads it (memtasks/text.py), its answers marked and its length in tokens."""

from __future__ import annotations

import typing
from pathlib import Path

from membench.checks import ConfigError, check_limit
from membench.memtasks import get_task, task_class
from membench.memtasks.text import TextExample, render_text
from membench.models.pretrained import load_tokenizer
from membench.plugins import blamed_on
from membench.runners.errors import UsageError
from membench.runners.parsing import key_values, positive_int

HELP = "render one example of a task (scored positions marked [input -> answer]; --text: as text)"


def add_arguments(parser) -> None:
    parser.add_argument("task", help="task name (see `membench tasks`)")
    parser.add_argument("--length", default="64", help="sequence length (default 64)")
    parser.add_argument("--seed", default="0", help="generator seed (default 0)")
    parser.add_argument("--param", action="append", metavar="KEY=VALUE", help="a task param; repeatable")
    parser.add_argument("--text", action="store_true",
                        help="the example as text, as a language model reads it: answers marked [answer], and its "
                             "length in tokens")
    parser.add_argument("--plain", action="store_true",
                        help="with --text: the plain rendering (the symbols one space apart, no instruction; "
                             "answers are insertion points, marked [-> answer])")
    parser.add_argument("--tokenizer", metavar="PATH",
                        help="with --text: count tokens with the Hugging Face tokenizer saved in folder PATH "
                             "(needs the hf extra); without it, whitespace-separated words are counted")


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
    if args.text:
        return _show_text(task, batch, args, f"{task.name} v{task.version} ({task.describe_params()}), length "
                                             f"{length}, seed {seed}")
    if args.plain or args.tokenizer:
        raise UsageError(f"{'--plain' if args.plain else '--tokenizer'} goes with --text (membench show {args.task} "
                         f"--text ...)")
    with blamed_on("task", args.task, "in render()"):
        heading = (f"{task.name} v{task.version} ({task.describe_params()}), length {length}, seed {seed}, "
                   f"{scored} scored positions marked [input -> answer]:")
        example = task.render(batch, 0)
    print(heading)
    print(example)
    return 0


def _show_text(task, batch, args, what: str) -> int:
    mode = "plain" if args.plain else "readable"
    tokenizer = tokenizer_in(args.tokenizer) if args.tokenizer else None
    with blamed_on("task", args.task, "in symbol_table()"):
        example = render_text(task, batch, 0, mode=mode)
    if tokenizer is not None:
        count = f"{len(tokenizer(example.text)['input_ids'])} tokens by the tokenizer in {args.tokenizer}"
    else:
        count = (f"{len(example.text.split())} whitespace-separated words (a model's tokenizer may split words "
                 f"further: pass --tokenizer PATH to count its tokens)")
    marks = "[-> answer] at each insertion point" if mode == "plain" else "[answer]"
    print(f"{what}, as {mode} text, {len(example.answers)} answers marked {marks}:")
    print(marked(example))
    print(f"length: {count}")
    return 0


def marked(example: TextExample) -> str:
    """The text with each answer in brackets: `k3: [v3]`; in plain mode `k3 [-> v3]` at each insertion point.

    >>> from membench.memtasks.text import Answer
    >>> marked(TextExample("k3: v3 v1", (Answer(4, 6, "v3", 0, 1, None),), ((0, 2), (7, 9)), "readable"))
    'k3: [v3] v1'
    >>> marked(TextExample("k3 v1", (Answer(2, 2, "v3", 0, 1, None),), ((0, 2), (3, 5)), "plain"))
    'k3 [-> v3] v1'
    """
    pieces, at = [], 0
    for a in example.answers:
        pieces.append(example.text[at:a.start])
        pieces.append(f" [-> {a.gold}]" if example.mode == "plain" else f"[{example.text[a.start:a.end]}]")
        at = a.end
    pieces.append(example.text[at:])
    return "".join(pieces)


def tokenizer_in(path: str):
    """The tokenizer saved in the local folder `path` (models/pretrained.py's loader; never a hub id, so nothing
    is downloaded); ConfigError naming --tokenizer when the folder is missing or holds none."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"--tokenizer {path}: no such folder; give a folder a tokenizer was saved to "
                          f"(tokenizer.save_pretrained(folder))")
    return load_tokenizer(str(folder), where=f"--tokenizer {path}", fast=False)
