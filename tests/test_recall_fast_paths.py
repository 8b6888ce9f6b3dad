"""recall_blocks' CPU fast paths give the bytes of their references, and the recall generators the bytes they
gave before the fast paths (the committed results were drawn with them; changing them needs a version bump)."""

from __future__ import annotations

import hashlib

import pytest
import torch

from membench.memtasks import get_task, make_generator
from membench.memtasks.recall_blocks import (
    first_arrivals,
    first_arrivals_reference,
    place_pairs,
    place_recall,
    redraw_repeats,
    redraw_repeats_reference,
)

CPU = torch.device("cpu")

# sha256 of inputs, targets and lags (bytes, dtype, shape), drawn by the generator before its CPU fast paths
PINNED = [
    ("associative_recall", {"vocab_size": 8192, "num_kv_pairs": 64}, 256, 0, 7, "32229087e2123ba7"),
    ("associative_recall", {"vocab_size": 8192, "num_kv_pairs": 256}, 1024, 1, 7, "02b0b8d813d8f415"),
    # 3000 rows: the repeat redraws run several rounds, and one row has two equal arrivals (topk's order)
    ("associative_recall", {"vocab_size": 8192, "num_kv_pairs": 256}, 1024, 0, 3000, "e5cee881e371a9fb"),
    ("associative_recall", {"vocab_size": 8192, "num_kv_pairs": 16, "num_updates": 3}, 256, 2, 7, "d6aa02d968ce3a8e"),
    ("associative_recall", {"vocab_size": 8192, "num_kv_pairs": 4, "power_a": 1.0}, 64, 0, 3000, "1d1f716269b26dcb"),
    ("associative_recall", {"vocab_size": 16, "num_kv_pairs": 4}, 64, 1, 7, "f61b2ac61a1db3bf"),
    ("associative_recall", {"vocab_size": 64, "num_kv_pairs": None}, 1024, 0, 7, "05a2baa719d298f5"),
    ("noisy_recall", {}, 256, 0, 7, "0f9ffecebc30a546"),
    ("fuzzy_recall", {}, 256, 0, 7, "42bc3678e5221dcb"),
]


def digest(batch) -> str:
    h = hashlib.sha256()
    for t in (batch.inputs, batch.targets, batch.lags):
        h.update(t.contiguous().numpy().tobytes())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("name, params, seq_len, seed, batch_size, expected", PINNED,
                         ids=[f"{p[0]}-{i}" for i, p in enumerate(PINNED)])
def test_generators_draw_the_same_bytes_as_before_the_fast_paths(name, params, seq_len, seed, batch_size, expected):
    assert digest(get_task(name, **params).sample(batch_size, seq_len, seed=seed)) == expected


@pytest.mark.parametrize("k, high", [(6, 13), (40, 100), (64, 4096), (256, 4096)])
def test_redraw_repeats_matches_its_reference(k, high):
    """Many repeats (6 of 13) to the Zoology case (256 of 4096): the same draws from the same generator state."""
    start = torch.randint(high, (2000, k), generator=make_generator(3, CPU))  # (B, k), with repeats
    fast, slow = start.clone(), start.clone()
    redraw_repeats(fast, high, make_generator(4, CPU))
    redraw_repeats_reference(slow, high, make_generator(4, CPU))
    assert torch.equal(fast, slow)
    assert (fast.sort(dim=1).values.diff(dim=1) > 0).all()  # the rows are distinct now


@pytest.mark.parametrize("levels", [None, 3, 40])
@pytest.mark.parametrize("S, k", [(1, 1), (7, 3), (64, 64), (256, 256), (300, 20)])
def test_first_arrivals_matches_topk_with_and_without_ties(S, k, levels):
    """levels=None: continuous arrivals; 3 or 40: arrivals from a few values, ties in every row, so the rows
    fall back to topk's order; -0.0 (an arrival at u = 0) ties with 0.0 as in topk."""
    gen = make_generator(5, CPU)
    arrival = -torch.rand(500, S, generator=gen)  # (B, S) <= 0
    if levels is not None:
        arrival = -torch.randint(levels, (500, S), generator=gen).float() / levels
        arrival[arrival == 0] = -0.0
    assert torch.equal(first_arrivals(arrival, k), first_arrivals_reference(arrival, k))


@pytest.mark.parametrize("with_updates", [False, True])
def test_place_pairs_matches_place_recall(with_updates):
    B, n, T = 50, 8, 40
    gen = make_generator(6, CPU)
    keys, values = torch.randint(0, 10, (B, n), generator=gen), torch.randint(10, 20, (B, n), generator=gen)
    query_pos = 2 * n + 2 * torch.rand(B, 12, generator=gen).argsort(dim=1)[:, :n - 2]  # (B, q) distinct slots
    latest = torch.randint(n, (B, n - 2), generator=gen) if with_updates else None
    background = torch.randint(10, 20, (B, T), generator=gen)
    fast = place_pairs(background.clone(), keys, values, query_pos, latest)
    every = torch.arange(n - 2).expand(B, n - 2) if latest is None else latest
    slow = place_recall(background.clone(), keys[..., None], values[..., None], 2 * torch.arange(n).expand(B, n),
                        query_pos, every)
    for a, b in zip((fast.inputs, fast.targets, fast.lags), (slow.inputs, slow.targets, slow.lags)):
        assert torch.equal(a, b)
