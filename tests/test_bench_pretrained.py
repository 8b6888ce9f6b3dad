"""Benchmark of a pretrained model's evaluation, deselected by default. Run it with

    pytest -m benchmark --benchmark-enable tests/test_bench_pretrained.py -s

A GPT-2 of width 256 and 4 layers (byte-level tokenizer, random weights) is saved to a folder and evaluated from
it as `pretrained:<folder>` (runners/pretrained_eval.py: rendering, tokenising, one forward per sequence, the
candidates' log-likelihoods, the counts) on tasks at lengths whose texts are 1,024 tokens or more. The model's own
forward passes (every call of `logits`, `read_prefix` and `read_on`) are timed inside the evaluation.
Target (issue #29, item 9): at least 80 % of the evaluation's time is those forward passes; the ratio is printed.
"""

from __future__ import annotations

import functools
import time

import pytest
import torch

from membench.memtasks import get_task
from membench.models import build_model
from membench.runners.pretrained_eval import evaluate_text_slice
from membench.runners.trial import EvalSlice
from tests.test_pretrained import byte_tokenizer, transformers

pytestmark = pytest.mark.benchmark

SEQUENCES, BATCH = 8, 8
CASES = [("flip_flop", 512), ("copy", 512), ("associative_recall", 256)]  # each 1,024 tokens or more as text


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2_256")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=257, n_embd=256, n_layer=4, n_head=4, n_positions=4096)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return build_model(f"pretrained:{folder}", 2)


def timed_forwards(model) -> list[float]:
    """Wrap the model's forward methods so that their wall seconds are summed into the returned list's one item."""
    spent = [0.0]

    def timer(method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start
        return wrapper

    for name in ("logits", "read_prefix", "read_on"):
        setattr(model, name, timer(getattr(model, name)))
    return spent


@pytest.mark.parametrize("task, length", CASES)
def test_a_pretrained_evaluation_is_mostly_the_models_forward_passes(benchmark, capsys, model, task, length):
    spent = timed_forwards(model)
    results = []

    def evaluate() -> None:
        results.append(evaluate_text_slice(model, get_task(task), EvalSlice(f"L{length}", length, SEQUENCES), BATCH,
                                           0, 0, torch.device("cpu")))

    start = time.perf_counter()
    benchmark.pedantic(evaluate, rounds=1, iterations=1)
    total = time.perf_counter() - start
    result, share = results[0], spent[0] / total
    benchmark.group = "pretrained evaluation: forward share"
    benchmark.extra_info.update(context_tokens=result.context_tokens, forward_seconds=spent[0],
                                evaluate_seconds=total, share=share)
    with capsys.disabled():
        print(f"\n{task} L{length} ({result.context_tokens:.0f} tokens, {SEQUENCES} sequences): evaluation "
              f"{total:.2f} s, forward passes {spent[0]:.2f} s: {share:.1%} of it")
    assert result.status == "ok" and result.context_tokens >= 1024
    assert share >= 0.8
