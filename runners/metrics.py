"""What a trial measures: accuracy on held-out slices (token, exact-match, loss, by lag) and what it cost.

Accuracy counts only scored positions. For one slice of N sequences with scored positions S_i:

    accuracy    = sum_i #{t in S_i : argmax logits_it = target_it} / sum_i |S_i|
    exact_match = #{i : every t in S_i is right} / N
    loss        = mean over all scored positions of the cross-entropy (natural log)
    scored      = sum_i |S_i|, the scored positions (the denominator of accuracy; runs.csv keeps it)
    by lag      = the same token accuracy, split by bucket b = 2^floor(log2(lag)), covering lags [b, 2b)

Example: lags 1, 2, 3, 5, 8 fall in buckets 1, 2, 2, 4, 8.

Peak memory (`PeakMemory`, around a trial's training and evaluation): on CUDA the largest memory held by
tensors above what was held at entry (max_memory_allocated after reset_peak_memory_stats, minus
memory_allocated at entry: neither the weights nor anything an earlier trial left is counted). On CPU there
is no allocator counter, so it is the growth of the process's peak resident set size: VmHWM (reset through
/proc/self/clear_refs on Linux) minus VmRSS at the start; where that is unavailable, the growth of
getrusage's ru_maxrss, which only sees growth past the process's earlier peak. The CPU figure includes
allocator caching and anything else the process allocated meanwhile.
"""

from __future__ import annotations

import gc
import math
import platform
import resource
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from membench.memtasks import eval_seed
from membench.runners.precision import choose_precision


@dataclass
class SliceResult:
    """Metrics of one eval slice. `lags` maps bucket lower bound -> (correct, count)."""

    status: str = "ok"  # "ok"; "oom" when this slice alone did not fit in memory, "error" when it raised
    accuracy: float = math.nan
    exact_match: float = math.nan
    loss: float = math.nan
    scored: int = 0  # scored positions evaluated: the denominator of accuracy
    lags: dict[int, tuple[int, int]] = field(default_factory=dict)
    error: str = ""
    traceback: str = ""  # of the exception of an "error" slice
    # a pretrained model's slice (runners/pretrained_eval.py): the text it read and what reading it cost
    token_lags: dict[int, tuple[int, int]] = field(default_factory=dict)  # `lags` with lags counted in tokens
    context_tokens: float = math.nan  # mean tokens per sequence (NaN: the slice's length, in the model's ids)
    accuracy_choice: float = math.nan  # the gold is the likeliest of the task's answer candidates
    read_tokens_per_second: float = math.nan
    read_peak_memory_mb: float = math.nan
    kv_cache_bytes_per_token: float = math.nan


def autocast(device: torch.device):
    """Autocast to the precision chosen for `device` (runners.precision: bf16 on CUDA GPUs that have it),
    or plain fp32 (no autocast) elsewhere."""
    return autocast_to(device, choose_precision(device))


def autocast_to(device: torch.device, dtype: torch.dtype | None):
    """Autocast to `dtype` on `device`, or nothing at all when dtype is None (plain fp32). A function that
    torch.compile captures calls this with a dtype chosen before it (choosing asks the CUDA driver)."""
    return nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def lag_buckets(lags: torch.Tensor) -> torch.Tensor:
    """int64 lags >= 1 -> floor(log2(lag)), exactly (frexp: lag = m * 2^e with m in [0.5, 1))."""
    _, exponent = torch.frexp(lags.double())
    return exponent.long() - 1


def eval_batches(task, seq_len: int, n_sequences: int, batch_size: int, seed: int, device: torch.device,
                 deadline: float | None = None):
    """The held-out batches of one slice: batch i has seed eval_seed(seed, i), drawn on the CPU and then moved
    to `device`, so the evaluation set is the same bytes on every device (seeded CUDA sampling of a large
    tensor depends on the GPU model's SM count); training streams are drawn on the device itself. After
    `deadline` (a time.perf_counter() value) no further batch is drawn; the first always is."""
    for i, start in enumerate(range(0, n_sequences, batch_size)):
        if i and deadline is not None and time.perf_counter() > deadline:
            return
        yield task.sample(min(batch_size, n_sequences - start), seq_len, eval_seed(seed, i), "cpu").to(device)


@dataclass
class _Counts:
    """What evaluating a slice sums on the device, read back once at the end."""

    correct: torch.Tensor  # () int64: scored positions predicted right
    total: torch.Tensor  # () int64: scored positions
    exact: torch.Tensor  # () int64: sequences with every scored position right
    loss_sum: torch.Tensor  # () float64: cross-entropy summed over scored positions
    lag_correct: torch.Tensor  # (64,) int64 per lag bucket
    lag_count: torch.Tensor  # (64,) int64 per lag bucket

    @classmethod
    def zeros(cls, device: torch.device, n_buckets: int = 64) -> "_Counts":
        def count(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, dtype=torch.long, device=device)

        return cls(count(), count(), count(), torch.zeros((), dtype=torch.float64, device=device),
                   count(n_buckets), count(n_buckets))


def _score_batch(model, batch, device: torch.device, counts: _Counts) -> None:
    """Add one batch's counts. A function of its own so that its tensors (features, logits) die when it
    returns, or when it raises (an out-of-memory error frees them with this frame)."""
    scored = batch.scored  # (B, T)
    with autocast(device):
        h = model.features(batch.inputs)  # (B, T, D)
        logits = model.head(h[scored]).float()  # (N, V), N scored positions
    targets = batch.targets[scored]  # (N,)
    hit = logits.argmax(-1) == targets  # (N,)
    counts.loss_sum += F.cross_entropy(logits, targets, reduction="sum").double()
    counts.correct += hit.sum()
    counts.total += hit.numel()
    wrong = torch.zeros_like(scored)  # (B, T)
    wrong[scored] = ~hit
    counts.exact += (~wrong.any(dim=1)).sum()
    buckets = lag_buckets(batch.lags[scored])  # (N,)
    counts.lag_count += torch.bincount(buckets, minlength=counts.lag_count.numel())
    counts.lag_correct += torch.bincount(buckets, weights=hit.double(), minlength=counts.lag_count.numel()).long()


@torch.no_grad()
def evaluate(model, task, seq_len: int, n_sequences: int, batch_size: int, seed: int,
             device: torch.device, deadline: float | None = None) -> SliceResult:
    """Score `n_sequences` held-out sequences (`eval_batches`); counts are read back once.

    `deadline` (a time.perf_counter() value): no batch is scored after it, so a trial's time cap also bounds
    its evaluation; the first batch always runs, and the metrics cover the sequences scored.

    A slice that fails is that slice's result, not the trial's: status "oom" when it did not fit in memory,
    "error" (with its traceback) when the task or the model raised at this length."""
    was_training = model.training
    model.eval()
    counts, batch, scored_sequences = _Counts.zeros(device), None, 0
    failed = None
    try:
        for batch in eval_batches(task, seq_len, n_sequences, batch_size, seed, device, deadline):
            _score_batch(model, batch, device, counts)
            scored_sequences += batch.inputs.shape[0]
    except Exception as err:  # noqa: BLE001 - a failure in one slice is that slice's result
        failed = SliceResult(status="oom", error=short_error(err)) if is_oom(err) else \
            SliceResult(status="error", error=short_error(err), traceback=traceback.format_exc())
    finally:
        model.train(was_training)
    if failed is not None:  # outside the except block, so the traceback's tensors are already freed
        del batch, counts  # and the failed batch's, so that the release finds nothing of this slice alive
        release_memory(device)
        return failed
    n, hits = int(counts.total), int(counts.correct)
    lag_counts, lag_corrects = counts.lag_count.tolist(), counts.lag_correct.tolist()
    return SliceResult(
        accuracy=hits / n if n else math.nan,
        exact_match=int(counts.exact) / scored_sequences,
        loss=float(counts.loss_sum) / n if n else math.nan,
        scored=n,
        lags={1 << k: (lag_corrects[k], lag_counts[k]) for k in range(len(lag_counts)) if lag_counts[k]},
    )


# --- failures ----------------------------------------------------------------------------
def scaled_accuracy(accuracy: float, chance: float) -> float:
    """Accuracy rescaled so that chance is 0 and perfect is 1, (acc - chance) / (1 - chance), as Grazzi et al.
    (2025) report it; the accuracy itself where chance is 0 (an open answer set), NaN where chance is 1.

        >>> scaled_accuracy(0.75, 0.5), scaled_accuracy(0.5, 0.5), scaled_accuracy(0.25, 0.5), scaled_accuracy(0.3, 0.0)
        (0.5, 0.0, -0.5, 0.3)
    """
    if chance >= 1:
        return math.nan
    return (accuracy - chance) / (1 - chance)


def is_oom(err: BaseException) -> bool:
    """True for CUDA's OutOfMemoryError and the RuntimeErrors torch raises when an allocation fails."""
    if isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = short_error(err, limit=10**6).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def short_error(err: BaseException, limit: int = 300) -> str:
    """'Type: message' on one line, at most `limit` characters (also for an exception whose message cannot
    be made: its __str__ raises)."""
    try:
        message = str(err)
    except Exception as inner:  # noqa: BLE001 - the message of a failure must not fail in turn
        message = f"<its message could not be printed: {type(inner).__name__}>"
    text = " ".join(f"{type(err).__name__}: {message}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def release_memory(device: torch.device) -> None:
    """Collect garbage (reference cycles holding tensors) and give the allocator's free blocks back."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def end_trial(device: torch.device) -> None:
    """What every trial does last, on success and failure alike, so the next one starts clean: reset dynamo
    (its caches are keyed by code object, shared by every trial's captured step: without a reset, the ninth
    model class hits the recompile limit and silently runs eager, and each entry keeps its CUDA-graph
    memory pool), then release memory."""
    torch.compiler.reset()
    release_memory(device)


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that wall-clock readings include it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- cost ----------------------------------------------------------------------------------
def _proc_status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Context manager measuring the peak memory of its block in MB (see the module doc for CPU).

    On CUDA the peak is relative to what was allocated at entry (the weights, and whatever is still held),
    as in runners.cost.measure, and the allocator's peak counter is reset at entry, so trials compare.
    Meters nest: one opened inside another's block (a trial's, around a slice's) first folds the peak
    so far into every open meter, so its reset never hides an earlier peak from them.
    """

    _open: list["PeakMemory"] = []  # the meters whose blocks are running in this process, outermost first

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb = math.nan

    def __enter__(self) -> "PeakMemory":
        for outer in self._open:  # the counter is about to be reset: keep what they have seen so far
            outer._held = max(outer._held, outer._counter())
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start, self._source = torch.cuda.memory_allocated(self.device), "cuda"
        elif _reset_peak_rss() and _proc_status_kb("VmRSS") is not None:
            self._start, self._source = _proc_status_kb("VmRSS"), "hwm"
        else:
            self._start, self._source = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "rusage"
        self._held = self._start
        self._open.append(self)
        return self

    def _counter(self) -> float:
        """The peak counter now: bytes on CUDA, KiB on the CPU; NaN when it cannot be read."""
        if self._source == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        if self._source == "hwm":
            peak = _proc_status_kb("VmHWM")
            return math.nan if peak is None else peak
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    def __exit__(self, *exc) -> None:
        self._open.remove(self)
        peak = self._counter()
        if math.isnan(peak):
            return
        unit = 2**20 if self._source == "cuda" else 1024
        self.peak_mb = max(0, max(peak, self._held) - self._start) / unit


def device_name(device: torch.device) -> str:
    """'NVIDIA H100 80GB HBM3' or 'cpu: <processor model>'."""
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    if device.type != "cpu":
        return str(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return "cpu: " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu: " + (platform.processor() or platform.machine())
