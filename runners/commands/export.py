"""`membench export lm-eval`: tasks as lm-evaluation-harness tasks, a JSONL of documents and a task YAML per
task and length, so that `lm_eval --include_path DIR --tasks membench_copy_L64 --model hf ...` asks a model the
same questions membench asks it.

One document per scored answer, so that the harness's scoring is membench's teacher-forced scoring:

    text      the readable rendering (memtasks/text.py) of an example, instruction included, up to the answer:
              every earlier answer is in it, right (the true prefix, as teacher forcing gives); the whitespace
              before the answer is left out, since a tokenizer joins it to the answer's first token (" v8")
    target    the answer, e.g. "v8"
    example, position, lag, candidates    where the answer comes from (lag in symbols back to the evidence)

The YAML asks for `generate_until` (greedy, stopped at a blank line or after as many tokens as the longest
answer has characters, plus one) and keeps the first word of the generation (`regex` filter `^\\s*(\\S+)`),
scored by exact match against `target`. A greedy decode writes the answer's tokens exactly when each is the
argmax given the true prefix before it, which is what membench's teacher-forced metric asks; the two differ
only when the model writes the answer in other tokens than the rendering's own, or runs the word on ("v8x").

Example (python): export_lm_eval(["copy"], [32], examples=2, seed=0, out=Path("lm-eval")) writes
lm-eval/membench_copy_L32.jsonl (six documents: three answers per example) and lm-eval/membench_copy_L32.yaml.
"""

from __future__ import annotations

import json
from pathlib import Path

from membench.checks import ConfigError, check_limit
from membench.memtasks import eval_seed, get_task
from membench.memtasks.text import render_text
from membench.plugins import blamed_on
from membench.runners.errors import UsageError
from membench.runners.parsing import int_list, name_list, out_dir, positive_int
from membench.runners.tables import atomic_write_bytes

HELP = "write tasks as lm-evaluation-harness tasks (lm-eval: a JSONL of documents and a YAML per task and length)"
FORMATS = ("lm-eval",)
FIRST_WORD = r"^\s*(\S+)"  # the answer is the first word the model writes
STOP = "\n\n"  # a blank line: the separator of shots, never inside a rendering


def add_arguments(parser) -> None:
    parser.add_argument("format", choices=FORMATS, help="what to write: lm-eval (lm-evaluation-harness 0.4 tasks)")
    parser.add_argument("--tasks", required=True, metavar="T1,T2", help="tasks, default params (see membench tasks)")
    parser.add_argument("--lengths", required=True, metavar="64,128", help="sequence lengths, in symbols")
    parser.add_argument("--examples", default="20", help="examples per task and length (default 20)")
    parser.add_argument("--seed", default="0", help="seed of the examples (default 0; drawn from its evaluation "
                                                    "seeds, never a training batch)")
    parser.add_argument("--out", required=True, type=out_dir, metavar="DIR", help="folder to write the files to")


def run(args) -> int:
    tasks = name_list(args.tasks)
    if not tasks:
        raise UsageError("--tasks needs at least one task, e.g. --tasks copy,associative_recall")
    lengths = int_list(args.lengths, "--lengths", "length")
    examples = positive_int(args.examples, "--examples", "eval_sequences")
    if not (args.seed.isascii() and args.seed.isdigit()):
        raise UsageError(f"--seed must be an integer >= 0, got {args.seed!r}")
    check_limit("--seed", int(args.seed), "seed")
    check_limit("--examples x the longest of --lengths", examples * max(lengths), "eval_tokens")
    written = export_lm_eval(tasks, lengths, examples=examples, seed=int(args.seed), out=Path(args.out))
    for path in written:
        print(path)
    return 0


def export_lm_eval(tasks: list[str], lengths: list[int], *, examples: int, seed: int, out: Path) -> list[Path]:
    """Write membench_<task>_L<length>.jsonl and .yaml into `out` for every task and length; the paths written.
    Every task and length is checked before anything is written."""
    built = {name: get_task(name) for name in tasks}
    for name, task in built.items():
        for length in lengths:
            task.check_length(length)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, task in built.items():
        for length in lengths:
            with blamed_on("task", name, f"while being rendered at length {length}"):
                docs = documents(task, length, examples, seed)
            stem = f"membench_{name}_L{length}"
            data = out.resolve() / f"{stem}.jsonl"
            atomic_write_bytes(data, "".join(json.dumps(d) + "\n" for d in docs).encode())
            yaml = task_yaml(stem, data, task, length, examples, seed, max(len(d["target"]) for d in docs) + 1)
            atomic_write_bytes(out / f"{stem}.yaml", yaml.encode())
            written += [out / f"{stem}.jsonl", out / f"{stem}.yaml"]
    return written


def documents(task, length: int, examples: int, seed: int) -> list[dict]:
    """One document per scored answer of `examples` examples of `task` at `length` (see the module doc).

    >>> from membench.memtasks import get_task
    >>> doc = documents(get_task("associative_recall", vocab_size=8, num_kv_pairs=2), 9, 1, 0)[0]
    >>> doc["text"].splitlines()[1:], doc["target"], doc["position"], doc["lag"]
    (['k2: v1', 'k3: v1', 'k3:'], 'v1', 4, 1)
    """
    batch = task.sample(examples, length, seed=eval_seed(seed, 0))
    docs = []
    for i in range(examples):
        example = render_text(task, batch, i)
        for a in example.answers:
            docs.append({"text": example.text[:a.start].rstrip(), "target": a.gold, "example": i,
                         "position": a.position, "lag": a.lag,
                         "candidates": list(a.candidates) if a.candidates is not None else None})
    return docs


def task_yaml(stem: str, data: Path, task, length: int, examples: int, seed: int, max_tokens: int) -> str:
    """The lm-evaluation-harness task of one JSONL file (strings written as JSON, which YAML reads)."""
    q = json.dumps
    return "\n".join([
        f"# membench: {task.name} v{task.version} ({task.describe_params()}), length {length}, {examples} examples, "
        f"seed {seed}; one document per scored answer",
        f"task: {stem}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {q(str(data))}",
        "test_split: test",
        "output_type: generate_until",
        "doc_to_text: text",
        "doc_to_target: target",
        "generation_kwargs:",
        f"  until: [{q(STOP)}]",
        "  do_sample: false",
        f"  max_gen_toks: {max_tokens}",
        "filter_list:",
        "  - name: first_word",
        "    filter:",
        "      - function: regex",
        f"        regex_pattern: {q(FIRST_WORD)}",
        "      - function: take_first",
        "metric_list:",
        "  - metric: exact_match",
        "    aggregation: mean",
        "    higher_is_better: true",
        "metadata:",
        f"  version: {task.version}",
        "",
    ])
