"""The training loop (runners/train.py): the loss at scored positions without a host sync, the gather capacity,
compile modes per device, evaluation time kept out of training time, and trial ids."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time

import pandas as pd
import pytest
import torch

from membench.memtasks import IGNORE, get_task
from membench.models import build_model
from membench.runners import metrics
from membench.runners import train as train_module
from membench.runners.spec import load_spec
from membench.runners.step_loss import (
    CapacityExceeded,
    gather_capacity,
    loss_fn,
    scored_loss,
    scored_loss_reference,
    scored_positions,
)
from membench.runners.train import clip_grad_norm
from membench.runners.trial import EvalSlice, TrialConfig, run_trial

ZOOLOGY_MODEL = {"mixer_pattern": "conv,attention", "mlp_ratio": 0, "position": "none", "n_heads": 1,
                 "conv_kernel": 3, "conv_residual": True}



# --- the loss at scored positions without a host sync ------------------------------------------------
def _targets(kind: str, batch_size: int, seq_len: int) -> torch.Tensor:
    """(B, T) targets: from MQAR (fixed count per row), multi-turn QA (varying) or a random mask."""
    if kind == "random":
        gen = torch.Generator().manual_seed(batch_size * seq_len)
        targets = torch.randint(0, 16, (batch_size, seq_len), generator=gen)
        return targets.masked_fill(torch.rand(batch_size, seq_len, generator=gen) < 0.7, IGNORE)
    task = get_task(kind, vocab_size=16) if kind == "associative_recall" else get_task(kind)
    return task.sample(batch_size, seq_len, seed=3).targets


CASES = [(kind, b, t, cap) for kind, b, t in [("associative_recall", 4, 32), ("multi_turn_qa", 8, 64),
                                               ("random", 3, 16), ("random", 1, 5)]
         for cap in ("exact", "measured", "all")]


@pytest.mark.parametrize("kind, batch_size, seq_len, cap", CASES,
                         ids=[f"{k}-B{b}-T{t}-{c}" for k, b, t, c in CASES])
def test_gathered_loss_equals_boolean_indexing(kind, batch_size, seq_len, cap):
    targets = _targets(kind, batch_size, seq_len)
    n = int((targets != IGNORE).sum())
    capacity = {"exact": n, "measured": gather_capacity(targets), "all": batch_size * seq_len}[cap]
    torch.manual_seed(0)
    model = build_model("mlp", 64, d_model=8, n_layers=1)
    h = torch.randn(batch_size, seq_len, 8, requires_grad=True)

    def loss_and_grads(loss):
        grads = torch.autograd.grad(loss, [h, model.head.weight])
        return loss.detach(), grads

    index, picked, excess = scored_positions(targets.clone(), capacity)
    fast, fast_grads = loss_and_grads(scored_loss(model, h, index, picked))
    ref, ref_grads = loss_and_grads(scored_loss_reference(model, h, targets))
    assert index.shape == picked.shape == (capacity,) and int(excess) == 0
    assert int((picked != IGNORE).sum()) == n
    torch.testing.assert_close(fast, ref, rtol=1e-6, atol=0)
    for a, b in zip(fast_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)  # fp32 sums in another order


def test_gather_capacity_and_excess():
    targets = torch.full((256, 64), IGNORE)
    targets[:, 10:14] = 1  # 4 scored in every row
    assert gather_capacity(targets) == 256 * 4 + 64  # the docstring's example
    assert gather_capacity(torch.zeros(2, 3, dtype=torch.long)) == 6  # never more than B*T
    index, picked, excess = scored_positions(targets, 1000)
    assert int(excess) == 24 and int((picked != IGNORE).sum()) == 1000


def test_training_step_never_reads_values_and_the_reference_must():
    """On the meta device tensors have shapes but no values, so anything that needs a value on the host (a
    sync on CUDA: .item(), a data-dependent shape) fails. The whole sync-free step runs there: gather,
    forward, loss, backward, clipping and the optimizer; boolean indexing cannot."""
    meta = torch.device("meta")
    model = build_model("transformer", 64, d_model=16, n_layers=2, **ZOOLOGY_MODEL).to(meta)
    batch = get_task("associative_recall", vocab_size=64, num_kv_pairs=2).sample(3, 16, seed=0).to(meta)
    optimizer = train_module.make_optimizer(model, 1e-3, 0.1, meta)
    index, picked, excess = scored_positions(batch.targets, 20)
    loss = loss_fn(model, "none", meta)(batch.inputs, index, picked)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    assert loss.shape == excess.shape == () and model.head.weight.grad.shape == (64, 16)
    with pytest.raises(NotImplementedError, match="nonzero"):
        scored_loss_reference(model, model.features(batch.inputs), batch.targets)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_step_never_syncs_on_cuda():
    device = torch.device("cuda")
    model = build_model("transformer", 64, d_model=32, n_layers=2, **ZOOLOGY_MODEL).to(device)
    batch = get_task("associative_recall", vocab_size=64, num_kv_pairs=4).sample(8, 32, seed=0, device=device)
    capacity = gather_capacity(batch.targets)
    step_loss = loss_fn(model, "none", device)
    optimizer = train_module.make_optimizer(model, 1e-3, 0.1, device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            index, picked, _ = scored_positions(batch.targets, capacity)
            step_loss(batch.inputs, index, picked).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compile", ["cuda_graphs", "torch_compile"])
def test_captured_step_trains_like_eager_on_cuda(compile):
    """The recipe's GPU setting (auto = cuda_graphs) over a mixture of shapes, against eager (bf16: close)."""
    (trial,) = load_spec(None, "zoology_mqar_cpu").trials
    trial = dataclasses.replace(trial, steps=40, eval_every=40, log_every=10)
    eager, captured = run_trial(trial, "cuda", "none"), run_trial(trial, "cuda", compile)
    assert {r["status"] for r in eager["runs"] + captured["runs"]} == {"ok"}
    losses = [[p["train_loss"] for p in payload["curves"]] for payload in (eager, captured)]
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=5e-2, atol=0)


def test_compile_modes_choose_per_device(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: calls.append(kwargs) or fn)
    model = build_model("mlp", 16, d_model=8, n_layers=1)
    cpu = torch.device("cpu")
    loss_fn(model, "auto", cpu)
    loss_fn(model, "none", cpu)
    assert calls == []  # auto is eager on the CPU
    loss_fn(model, "torch_compile", cpu)
    assert calls == [{}]
    with pytest.raises(ValueError, match="needs a CUDA device"):
        loss_fn(model, "cuda_graphs", cpu)
    with pytest.raises(ValueError, match="unknown compile mode"):
        loss_fn(model, "fast", cpu)


# --- trials: capacity overflow, early stop, clocks, ids ---------------------------------------------
def copy_trial(**change) -> TrialConfig:
    fields = dict(task="copy", task_params={"content_vocab": 4}, model="mlp", model_params={}, d_model=16,
                  n_layers=1, train_len=16, seed=0, lr=1e-2, batch_size=8, steps=20, eval_every=5, log_every=5,
                  eval_slices=(EvalSlice("L16", 16, 16), EvalSlice("L32", 32, 16)))
    return TrialConfig(**{**fields, **change})


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3], ids=["below", "near", "above"])
def test_clipping_gives_the_bytes_of_torchs_clip_grad_norm(scale):
    """clip_grad_norm is torch.nn.utils.clip_grad_norm_'s arithmetic without its overhead: the same gradients
    bit for bit, whether the norm is below the limit (left alone) or above it (scaled), with a parameter
    that has no gradient, and in the library's hands for mixed dtypes."""
    def grads(dtypes):
        gen = torch.Generator().manual_seed(0)
        shapes = [(7, 5), (5,), (3, 4, 2), (2,)]
        params = [torch.nn.Parameter(torch.zeros(shape, dtype=dt)) for shape, dt in zip(shapes, dtypes)]
        for p in params[:-1]:  # the last one has no gradient
            p.grad = (scale * torch.randn(p.shape, generator=gen)).to(p.dtype)
        return params

    for dtypes in ([torch.float32] * 4, [torch.float32, torch.float64, torch.float32, torch.float32]):
        ours, theirs, before = grads(dtypes), grads(dtypes), grads(dtypes)
        clip_grad_norm(ours, 1.0)
        torch.nn.utils.clip_grad_norm_(theirs, 1.0)
        assert ours[-1].grad is None
        for a, b in zip(ours[:-1], theirs[:-1]):
            assert torch.equal(a.grad, b.grad)
        def norm(params):
            return torch.linalg.vector_norm(torch.stack([p.grad.double().norm() for p in params[:-1]]))

        if norm(before) > 1.0:
            assert norm(ours) == pytest.approx(1.0, rel=1e-5)
        else:
            assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours[:-1], before[:-1]))
    assert scale != 1e-3 or norm(before) < 1.0  # each branch is taken by some scale


def test_a_step_beyond_the_gather_capacity_fails_the_trial(monkeypatch):
    monkeypatch.setattr(train_module, "gather_capacity", lambda targets: 1)
    runs = pd.DataFrame(run_trial(copy_trial())["runs"])
    assert (runs["status"] == "error").all()
    assert runs["error"].str.contains("CapacityExceeded: ").all()
    assert runs["error"].str.contains("did not fit the gather capacity").all()
    assert issubclass(CapacityExceeded, RuntimeError)


def test_evaluation_time_is_not_training_time(monkeypatch):
    real, pause = metrics.evaluate, 0.2

    def slow_evaluate(*args, **kwargs):
        time.sleep(pause)
        return real(*args, **kwargs)

    monkeypatch.setattr(metrics, "evaluate", slow_evaluate)
    started = time.perf_counter()
    payload = run_trial(copy_trial())
    total = time.perf_counter() - started
    runs = pd.DataFrame(payload["runs"])
    evaluations = 4 * 2  # steps 5, 10, 15, 20; two slices each
    # the pauses are in the trial's wall time but not in its training time, however loaded the machine is
    assert runs["train_seconds"].iloc[0] <= total - evaluations * pause
    seconds = [p["seconds"] for p in payload["curves"]]
    assert seconds == sorted(seconds) and seconds[-1] <= runs["train_seconds"].iloc[0]


def test_trial_ids_without_later_fields_are_unchanged():
    config = copy_trial()
    # added after the first results
    later = ("early_stop", "model_version", "budget", "patience", "min_delta", "min_steps", "train_length_range",
             "near_chance", "second_lr", "shots", "save_model")
    before = {k: v for k, v in config.to_dict().items() if k not in later}  # the id's JSON before them
    text = json.dumps(before, sort_keys=True, separators=(",", ":"))
    assert config.trial_id == hashlib.sha1(text.encode()).hexdigest()[:12]
    assert copy_trial(early_stop="all_slices").trial_id != config.trial_id
    with pytest.raises(ValueError, match="early_stop must be one of train_len, all_slices"):
        copy_trial(early_stop="never")
