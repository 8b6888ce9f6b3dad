"""Cost curves: what one training step of each family costs as the sequence grows.

For every family and every length n, on random tokens (no task: cost does not depend on the data):

    batch_size      = max(1, batch_tokens // n)          # tokens per step held (about) constant
    ms_per_step     = median over `repeats` timed steps, after `warmup` untimed ones; a step is
                      zero grads, forward, cross-entropy, backward (no optimizer update), with the
                      device synchronised before and after (bf16 autocast on CUDA, fp32 on CPU)
    peak_memory_mb  = the most memory held by tensors during one step above what was held before it
                      (the model, its gradients and the batch), i.e. activations and temporaries:
                        CUDA: max_memory_allocated() after reset_peak_memory_stats(), minus
                              memory_allocated() before the step;
                        CPU:  torch's CPU allocator reports every allocation and free to the profiler
                              (profile_memory=True); replaying them in order gives the peak of the bytes
                              allocated during the step and still live. This counts torch tensors and
                              kernel workspaces only, not the Python heap nor memory the C library
                              caches after a free. The profiled step is separate from the timed ones.
    flops           = 3 * model.flops(batch_size, n)     # forward + backward ~ 3x forward (analytic)
    attention_flops = 3 * model.attention_flops(batch_size, n)   # token-to-token attention only
    memory_flops    = 3 * model.memory_flops(batch_size, n)      # a scan's or external memory's update and read
    tflops_per_s    = flops / step seconds / 1e12;  tokens_per_second = batch_size * n / step seconds
    state_size      = model.state_size(n)                # floats per sequence

A family stops at its first failure: an out-of-memory ("oom"), two consecutive steps (warm-up or
timed) each slower than `time_cap` seconds ("timeout", the faster of the two kept in ms_per_step; one
slow step alone can be a stall of a shared machine), or any other exception ("error"). That row is
kept and no longer length is run for the family. Analytic columns (flops, attention_flops,
memory_flops, state_size) are filled in every row; measured ones are NaN where unknown.

CPU timings are only as good as the machine is quiet: on a machine shared with other jobs, torch's
worker threads wait on each other and a step can take 10x longer; `threads=1` avoids that.

Example (CPU, d_model 64, 2 layers, batch_tokens 4096): at n=1024 the batch is 4 sequences, and
an LSTM step costs 3 * 4 * 1024 * (2 layers * (2*2*64*256 + 2*2*64*256) + 2*64*64) FLOPs
(per layer: the recurrence's input and hidden projections to 4 gates, the MLP; then the head).
"""

from __future__ import annotations

import math
import os
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F

from membench.checks import ConfigError
from membench.models import build_model
from membench.runners.cost.fit import fit_costs
from membench.runners.faults import FaultBoundary, cost_value
from membench.runners.metrics import autocast, device_name, release_memory, synchronize
from membench.runners.reporting import cost_charts
from membench.runners.tables import write_tables

COST_COLUMNS = [
    "model", "seq_len", "batch_size", "ms_per_step", "peak_memory_mb", "flops", "attention_flops", "memory_flops",
    "tflops_per_s", "tokens_per_second", "state_size", "status", "device",
]
VOCAB_SIZE = 64  # cost hardly depends on it: the head is one (D, V) matmul per token
MIN_LENGTH = 128  # first rung of the default length ladder
DEFAULT_BATCH_TOKENS = {"cpu": 4096, "cuda": 32768}
DEFAULT_MAX_LENGTH = {"cpu": 2048, "cuda": 16384}


@dataclass(frozen=True)
class CostConfig:
    """One cost sweep: every model of `models` at every length of `lengths` (ascending)."""

    models: tuple[str, ...]
    lengths: tuple[int, ...]
    batch_tokens: int
    d_model: int = 64
    n_layers: int = 2
    repeats: int = 3
    warmup: int = 1
    time_cap: float = 20.0  # seconds a step may take (twice in a row) before the family stops
    device: str = "cpu"
    vocab_size: int = VOCAB_SIZE
    threads: int | None = None  # torch's intra-op CPU threads during the sweep; None keeps torch's setting

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("no models to measure; name at least one (see `membench models`)")
        if not self.lengths or any(n < 1 for n in self.lengths) or list(self.lengths) != sorted(set(self.lengths)):
            raise ConfigError(f"lengths must be distinct positive integers in ascending order, got {self.lengths}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be a positive integer, got {self.threads!r}")
        for label in ("batch_tokens", "d_model", "n_layers", "repeats", "warmup", "vocab_size"):
            if getattr(self, label) < 1:
                raise ConfigError(f"{label} must be a positive integer, got {getattr(self, label)!r}")
        if not self.time_cap > 0:
            raise ConfigError(f"time_cap must be a positive number of seconds, got {self.time_cap!r}")
        resolve_device(self.device)


def batch_size_for(seq_len: int, batch_tokens: int) -> int:
    """Sequences per step: max(1, batch_tokens // seq_len). E.g. 4096 tokens at n=1024 -> 4."""
    return max(1, batch_tokens // seq_len)


def length_ladder(max_length: int) -> list[int]:
    """Powers of two from 128 up to `max_length` (just [max_length] below 128).

    >>> length_ladder(1000)
    [128, 256, 512]
    """
    ladder = []
    n = MIN_LENGTH
    while n <= max_length:
        ladder.append(n)
        n *= 2
    return ladder or [max_length]


def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda' or 'cuda:N' -> a torch.device; ConfigError when it is unknown or not present here."""
    if not isinstance(name, str) or name == "auto" or not _DEVICE.fullmatch(name):
        raise ConfigError(f"--device must be cpu, cuda or cuda:N, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available here; use --device cpu")
    if ":" in name and int(name.split(":")[1]) >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


# --- one step ------------------------------------------------------------------------------
def make_step(model: torch.nn.Module, batch_size: int, seq_len: int, device: torch.device) -> Callable[[], None]:
    """A closure running one training step (no optimizer update) on a fixed random batch."""
    gen = torch.Generator(device=device).manual_seed(0)
    vocab = model.vocab_size
    tokens = torch.randint(0, vocab, (batch_size, seq_len), generator=gen, device=device)  # (B, T)
    targets = torch.randint(0, vocab, (batch_size, seq_len), generator=gen, device=device)  # (B, T)

    def step() -> None:
        model.zero_grad(set_to_none=False)  # gradients stay allocated: they belong to the baseline
        with autocast(device):
            logits = model(tokens)  # (B, T, V)
        loss = F.cross_entropy(logits.float().reshape(-1, vocab), targets.reshape(-1))
        loss.backward()

    return step


def timed(step: Callable[[], None], device: torch.device) -> float:
    """Seconds of one step, the device synchronised on both sides."""
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start


def peak_step_bytes(step: Callable[[], None], device: torch.device) -> int:
    """Peak bytes held by tensors during one step, above those held before it (see the module doc)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - baseline)
    return cpu_peak_bytes(step)


def cpu_peak_bytes(step: Callable[[], None]) -> int:
    """Replay the CPU allocator's allocation/free events of one profiled step; return the peak live bytes.

    Frees of blocks allocated before the step are ignored (the peak is never below the start), so
    the result is the largest total of step-allocated bytes alive at one time.
    """
    from torch._C._profiler import _EventType  # the profiler's event kinds (used by its own memory tools)

    os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # silences the trace start/stop lines on stderr
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [
        e for e in _preorder(prof.profiler.kineto_results.experimental_event_tree())
        if e.tag == _EventType.Allocation and e.extra_fields.device.type == "cpu"
    ]
    events.sort(key=lambda e: e.start_time_ns)  # stable: ties keep the recorded order
    live: dict[int, int] = {}  # address -> bytes, of the blocks allocated during the step and not yet freed
    current = peak = 0
    for event in events:
        fields = event.extra_fields
        if fields.alloc_size > 0:
            live[fields.ptr] = fields.alloc_size
            current += fields.alloc_size
            peak = max(peak, current)
        elif fields.ptr in live:
            current -= live.pop(fields.ptr)
    return peak


def _preorder(events):
    """Every profiler event of the trees `events`, each before its children, in recorded order."""
    for event in events:
        yield event
        yield from _preorder(event.children)


# --- one family ----------------------------------------------------------------------------
def _row(name: str, seq_len: int, batch_size: int, device: torch.device) -> dict:
    """A cost.csv row with every measured and analytic column NaN."""
    nan = math.nan
    return {
        "model": name, "seq_len": seq_len, "batch_size": batch_size, "ms_per_step": nan, "peak_memory_mb": nan,
        "flops": nan, "attention_flops": nan, "memory_flops": nan, "tflops_per_s": nan, "tokens_per_second": nan,
        "state_size": nan, "status": "ok", "device": device_name(device),
    }


def _analytic(model, row: dict, warnings: list[str]) -> None:
    """Fill the analytic columns of `row` from the model's own cost methods (each answer checked)."""
    batch_size, seq_len = row["batch_size"], row["seq_len"]
    for column in ("flops", "attention_flops", "memory_flops"):
        value = cost_value(f"{column}({batch_size}, {seq_len})", getattr(model, column), (batch_size, seq_len),
                           warnings)
        row[column] = 3 * value
    row["state_size"] = cost_value(f"state_size({seq_len})", model.state_size, (seq_len,), warnings, unknown_ok=True)


def measure_point(model, name: str, seq_len: int, config: CostConfig, device: torch.device) -> tuple[dict, str]:
    """Measure one (family, length); returns (row, error message or ''). Whatever it raises (the model's cost
    methods included) is this point's "error" ("oom") row (runners.faults)."""
    batch_size = batch_size_for(seq_len, config.batch_tokens)
    row, warnings, step = _row(name, seq_len, batch_size, device), [], None
    with FaultBoundary() as fault:
        _analytic(model, row, warnings)
        step = make_step(model, batch_size, seq_len, device)
        times, slow = [], []  # slow: the current run of consecutive steps over the cap
        for _ in range(config.warmup + config.repeats):
            times.append(timed(step, device))
            slow = slow + [times[-1]] if times[-1] > config.time_cap else []
            if len(slow) == 2:
                row.update(status="timeout", ms_per_step=1e3 * min(slow))
                return row, (f"two steps in a row took over the time cap of {config.time_cap:g} s "
                             f"({slow[0]:.1f} s, {slow[1]:.1f} s)")
        seconds = statistics.median(times[config.warmup:])
        peak = peak_step_bytes(step, device)
        row.update(
            ms_per_step=1e3 * seconds,
            peak_memory_mb=peak / 2**20,
            tflops_per_s=row["flops"] / seconds / 1e12,
            tokens_per_second=batch_size * seq_len / seconds,
        )
    if not fault.failed:
        return row, "; ".join(warnings)
    row["status"] = "oom" if fault.oom else "error"
    del step  # the failed step's tensors, freed with the boundary's traceback
    release_memory(device)
    return row, fault.reason


def measure_family(name: str, config: CostConfig, log: Callable[[str], None] = print) -> list[dict]:
    """Rows of one family at each length, in order, stopping after its first non-ok row."""
    device = torch.device(config.device)
    torch.manual_seed(0)
    with FaultBoundary() as fault:
        model = build_model(name, config.vocab_size, d_model=config.d_model, n_layers=config.n_layers).to(device)
    if fault.failed:  # one error row at the first length: the family could not be built
        first = config.lengths[0]
        row = {**_row(name, first, batch_size_for(first, config.batch_tokens), device), "status": "error"}
        log(_describe(row, fault.reason))
        return [row]
    rows = []
    for seq_len in config.lengths:
        row, message = measure_point(model, name, seq_len, config, device)
        rows.append(row)
        log(_describe(row, message))
        if row["status"] != "ok":
            break
    del model
    release_memory(device)
    return rows


def _describe(row: dict, message: str) -> str:
    head = f"{row['model']:>18} n={row['seq_len']:<6} B={row['batch_size']:<4}"
    if row["status"] != "ok":
        return f"{head} {row['status']}: {message}"
    return (f"{head} {row['ms_per_step']:9.1f} ms/step {row['peak_memory_mb']:9.1f} MB "
            f"{row['tflops_per_s']:7.3f} TFLOP/s" + (f" (warning: {message})" if message else ""))


# --- the sweep ----------------------------------------------------------------------------
def run_cost(config: CostConfig, out_dir: Path, log: Callable[[str], None] = print
             ) -> tuple[pd.DataFrame, pd.DataFrame, list[Path]]:
    """Measure every family, rewriting cost.csv and cost_fit.csv after each one (atomically, with
    Parquet beside them when pyarrow is importable: a killed run keeps the finished families), then
    draw the charts. Returns (cost, fits, files written)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads or threads)
    try:
        for name in config.models:
            rows.extend(measure_family(name, config, log))
            cost = pd.DataFrame(rows, columns=COST_COLUMNS)
            fits = fit_costs(cost)
            write_tables(out_dir, {"cost": cost, "cost_fit": fits})
    finally:
        torch.set_num_threads(threads)
    tables = [out_dir / f"{name}.{fmt}" for name in ("cost", "cost_fit") for fmt in ("csv", "parquet")]
    if not (cost["status"] == "ok").any():  # nothing was measured: the tables say why, there is nothing to draw
        log(f"note: every point failed ({', '.join(sorted(set(cost['status'])))}): charts skipped")
        return cost, fits, [p for p in tables if p.exists()]
    return cost, fits, [p for p in tables if p.exists()] + cost_charts.draw_cost_charts(cost, fits, out_dir)
