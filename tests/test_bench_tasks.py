"""Task-generation benchmarks, deselected by default. Run them with

    make bench
    pytest -m benchmark --benchmark-enable tests/test_bench_tasks.py

- every registered task at its default params, 256 sequences of 256 tokens, on the CPU;
- the acceptance case: associative_recall, vocab_size=8192, 20,000 sequences at three shapes of Zoology's
  mixture (256 tokens with 64 pairs, its training length; 64 with 4, its shortest; 1024 with 256, its longest),
  each timed beside a per-row numpy generator in the style of the field's (a Python loop over rows,
  np.random.choice per row, after Zoology's), so the speed-up is measured in one run, on one thread;
- the same case on CUDA (target >= 1e9 tokens/s), skipped when there is no GPU;
- the recall variants (key overwrite, noisy_recall, fuzzy_recall) at 256 x 256 on the CPU, each timed beside
  multi_turn_qa, the slowest generator before them, in the same run (target: ratio <= 1).

Timings are printed (tokens/s) and stored in the benchmark's extra_info; nothing is asserted about them.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from membench.memtasks import IGNORE, get_task, list_tasks
from tests.helpers import best_wall_seconds

pytestmark = pytest.mark.benchmark

CPU_BATCH, CPU_LENGTH = 256, 256
MQAR_PARAMS = {"vocab_size": 8192, "num_kv_pairs": 64}
MQAR_BATCH, MQAR_LENGTH = 20_000, 256


def report(benchmark, capsys, label: str, tokens: int) -> float | None:
    """Print and record the best time and tokens/s; None when timing is disabled."""
    metadata = getattr(benchmark, "stats", None)  # None under --benchmark-disable
    if metadata is None:
        return None
    best = metadata.stats.min
    benchmark.extra_info.update(tokens=tokens, best_seconds=best, tokens_per_second=tokens / best)
    with capsys.disabled():
        print(f"\n{label}: {best * 1e3:.1f} ms best of {metadata.stats.rounds}, {tokens / best:.3g} tokens/s")
    return best


@pytest.mark.parametrize("name", list_tasks())
def test_generation_throughput_cpu(benchmark, capsys, name):
    task = get_task(name)
    seq_len = max(CPU_LENGTH, task.min_length())
    benchmark.group = f"generation on CPU, {CPU_BATCH} x {CPU_LENGTH}, default params"
    benchmark.pedantic(task.sample, args=(CPU_BATCH, seq_len), kwargs={"seed": 0}, rounds=10, warmup_rounds=1)
    report(benchmark, capsys, f"{name} {CPU_BATCH} x {seq_len}", CPU_BATCH * seq_len)


def per_row_numpy_mqar(
    vocab_size: int, num_examples: int, seq_len: int, num_kv_pairs: int, power_a: float = 0.01, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """MQAR the way the field generates it (after Zoology's `multiquery_ar`): numpy, one row at a time.

    Keys from [1, V/2), values from [V/2, V), both distinct per row; query slot g of the (T - 2k) / 2
    slots drawn with P(g) ~ (g + 1)^(power_a - 1); inputs shifted one left of the labels; token 0 (the
    empty slots) replaced by random tokens. Returns (inputs, labels), int64 (N, T).
    """
    np.random.seed(seed)
    n, k, half = num_examples, num_kv_pairs, vocab_size // 2
    context, space = 2 * k, (seq_len - 2 * k) // 2
    p = np.arange(1, space + 1) ** (power_a - 1.0)
    p /= p.sum()
    keys = np.stack([np.random.choice(np.arange(1, half), k, replace=False) for _ in range(n)])
    values = np.stack([np.random.choice(np.arange(half, vocab_size), k, replace=False) for _ in range(n)])
    gaps = np.stack([np.random.choice(space, k, replace=False, p=p) for _ in range(n)])
    pairs = np.zeros((n, context), dtype=np.int64)
    pairs[:, 0::2], pairs[:, 1::2] = keys, values
    queries = np.zeros((n, seq_len - context + 1), dtype=np.int64)
    np.put_along_axis(queries, 2 * gaps, keys, axis=1)
    answers = np.full((n, seq_len - context + 1), IGNORE, dtype=np.int64)
    np.put_along_axis(answers, 2 * gaps + 1, values, axis=1)
    inputs = np.concatenate([pairs, queries], axis=1)[:, :-1]
    labels = np.concatenate([np.full((n, context), IGNORE), answers], axis=1)[:, 1:]
    noise = np.random.randint(vocab_size, size=inputs.shape)
    return np.where(inputs == 0, noise, inputs), labels


ZOOLOGY_SHAPES = [(256, 64), (64, 4), (1024, 256)]  # (seq_len, num_kv_pairs) of Zoology's MQAR mixture


@pytest.mark.parametrize("seq_len, num_kv_pairs", ZOOLOGY_SHAPES, ids=[f"T{t}-kv{k}" for t, k in ZOOLOGY_SHAPES])
def test_associative_recall_20k_cpu_vs_per_row_numpy(benchmark, capsys, seq_len, num_kv_pairs):
    """The acceptance figure: 20,000 MQAR sequences (V=8192) on the CPU, and the speed-up over the per-row numpy
    generator of the same data, timed once in this run."""
    task = get_task("associative_recall", vocab_size=8192, num_kv_pairs=num_kv_pairs)
    tokens = MQAR_BATCH * seq_len
    benchmark.group = f"associative_recall 20,000 x {seq_len}, V=8192, k={num_kv_pairs}"
    benchmark.pedantic(task.sample, args=(MQAR_BATCH, seq_len), kwargs={"seed": 0}, rounds=7, warmup_rounds=1)
    best = report(benchmark, capsys, "associative_recall (torch, CPU)", tokens)

    start = time.perf_counter()
    inputs, labels = per_row_numpy_mqar(8192, MQAR_BATCH, seq_len, num_kv_pairs)
    baseline = time.perf_counter() - start
    assert inputs.shape == labels.shape == (MQAR_BATCH, seq_len)  # it made the same amount of data
    if best is not None:
        benchmark.extra_info.update(per_row_numpy_seconds=baseline, speedup=baseline / best)
        with capsys.disabled():
            print(f"per-row numpy baseline: {baseline:.2f} s, {tokens / baseline:.3g} tokens/s; "
                  f"speed-up {baseline / best:.0f}x")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_associative_recall_20k_cuda(benchmark, capsys):
    """The same case generated on the GPU (target >= 1e9 tokens/s), synchronised inside the timing."""
    task = get_task("associative_recall", **MQAR_PARAMS)

    def sample() -> None:
        task.sample(MQAR_BATCH, MQAR_LENGTH, seed=0, device="cuda")
        torch.cuda.synchronize()

    benchmark.group = "associative_recall 20,000 x 256, V=8192, k=64"
    benchmark.pedantic(sample, rounds=20, warmup_rounds=2)
    report(benchmark, capsys, "associative_recall (torch, CUDA)", MQAR_BATCH * MQAR_LENGTH)


RECALL_VARIANTS = {  # label -> (task, params): the generators built on associative_recall's
    "associative_recall[num_updates=8]": ("associative_recall", {"num_updates": 8}),
    "noisy_recall": ("noisy_recall", {}),
    "fuzzy_recall": ("fuzzy_recall", {}),
}


@pytest.mark.parametrize("label", list(RECALL_VARIANTS))
def test_recall_variant_vs_multi_turn_qa_cpu(benchmark, capsys, label):
    """A recall variant at 256 x 256 (default params otherwise) and multi_turn_qa at the same shape, both timed
    in this run; the ratio of their best times is recorded (target <= 1)."""
    name, params = RECALL_VARIANTS[label]
    task, reference = get_task(name, **params), get_task("multi_turn_qa")
    benchmark.group = f"recall variants vs multi_turn_qa, CPU, {CPU_BATCH} x {CPU_LENGTH}"
    benchmark.pedantic(task.sample, args=(CPU_BATCH, CPU_LENGTH), kwargs={"seed": 0}, rounds=10, warmup_rounds=1)
    best = report(benchmark, capsys, label, CPU_BATCH * CPU_LENGTH)
    baseline = best_wall_seconds(lambda: reference.sample(CPU_BATCH, CPU_LENGTH, seed=0), 10)
    if best is not None:
        benchmark.extra_info.update(multi_turn_qa_seconds=baseline, ratio=best / baseline)
        with capsys.disabled():
            print(f"multi_turn_qa: {baseline * 1e3:.1f} ms; {label} / multi_turn_qa = {best / baseline:.2f}")


# --- the state and working-memory tasks against the slowest existing generator -------------------------------
NEW_TASKS = ("flip_flop", "state_tracking", "n_back")
REFERENCE_TASK = "multi_turn_qa"  # the slowest generator before them


@pytest.mark.parametrize("name", NEW_TASKS)
def test_new_generator_within_the_time_of_multi_turn_qa(benchmark, capsys, name):
    """flip_flop, state_tracking (S5, its parallel prefix over 256 tokens) and n_back at 256 x 256 on the CPU,
    each timed in the same run as multi_turn_qa at the same shape: target ratio <= 1."""
    task, reference = get_task(name), get_task(REFERENCE_TASK)
    benchmark.group = f"state tasks vs {REFERENCE_TASK}, {CPU_BATCH} x {CPU_LENGTH}, CPU"
    benchmark.pedantic(task.sample, args=(CPU_BATCH, CPU_LENGTH), kwargs={"seed": 0}, rounds=10, warmup_rounds=1)
    mine = report(benchmark, capsys, f"{name} {CPU_BATCH} x {CPU_LENGTH}", CPU_BATCH * CPU_LENGTH)
    if mine is None:
        return
    ours = best_wall_seconds(lambda: task.sample(CPU_BATCH, CPU_LENGTH, seed=0), 20)
    theirs = best_wall_seconds(lambda: reference.sample(CPU_BATCH, CPU_LENGTH, seed=0), 20)
    benchmark.extra_info.update(reference_seconds=theirs, ratio=ours / theirs)
    with capsys.disabled():
        print(f"{name}: {ours * 1e3:.2f} ms, {REFERENCE_TASK}: {theirs * 1e3:.2f} ms, ratio {ours / theirs:.2f}")
    assert ours <= theirs, f"{name} takes {ours / theirs:.2f}x the time of {REFERENCE_TASK}"
