"""`membench doctor`: a self-check of this install on one device, one row per check.

Every check returns `Check` rows (name, status, detail). Status is "pass", "FAIL" (the detail says why) or
"skipped" (the detail says why: "needs CUDA", "needs 2+ CUDA devices", "not in --quick"). A check that
raises becomes a FAIL row with the error, so one broken check never hides the others; `run_checks` runs
them all and the command exits 1 when any row FAILed.

    >>> rows = run_checks(torch.device("cpu"), only=["torch"])
    >>> [(r.name, r.status) for r in rows]
    [('torch', 'pass'), ('torch version', 'pass')]

What is checked (D = the device; the CPU shapes are smaller, and each row says which it used):

    torch, torch version      torch and the device; torch >= the version pyproject.toml requires
    precision                 the autocast dtype runners.precision picks for D, and whether cuda_graphs may run
    paths <family>            every registered family's fast path against its reference path on D (outputs and
                              gradients of 2 x 64 tokens): fp32 within 1e-4, bf16 autocast within 5e-2, relative
                              to the fp32 reference (||a - b|| / ||b||); families without a reference path
                              compare bf16 against their own fp32
    compile <mode>            the captured training step (runners.train.loss_fn) of each compile mode D supports,
                              3 steps against eager: losses within 1e-4 (fp32) or 2e-2 (bf16)
    fused AdamW               3 steps of fused AdamW against the plain loop: parameters within 1e-5
    oom                       a trial whose batch cannot be allocated (2^40 sequences), then a normal one, through
                              the runner's executor: `oom` then `ok`
    rnn autocast              the dtype torch's LSTM sees under bf16 autocast (float32, autocast off), and the
                              gradient norm against fp32 within 5%
    task generation           associative recall (vocab 8192, 64 pairs, length 256) drawn on D: tokens/s; on CUDA
                              20,000 sequences with no host sync (sync debug mode "error"), on the CPU 2,000
    attention TFLOP/s         causal SDPA forward at one long length (CUDA 8192, CPU 1024), full-square FLOPs
    mini-sweep                the smoke preset's copy task at length 8 for a few families, run into a temporary
                              directory; runs.csv read back equals the rows returned
  CUDA only (skipped elsewhere):
    nonzero_static            on D equal to the CPU under sync debug mode "error"
    capture <family> T=<n>    3 cuda_graphs steps at T = 1024 and 4096: graph breaks, cudagraph skips, first-step
                              (compile) seconds
    trials in one process     10 small trials of different families with torch_compile: no recompile-limit
                              warning, memory_reserved() does not grow after the first
    captured oom              a cuda_graphs trial that runs out of memory, then a normal trial: oom then ok, and
                              memory_allocated() back to its baseline
    sdpa backend <family>     the SDPA kernels each attention family's calls can use at the standard preset's
                              widths under the chosen precision (FAIL when only the math fallback can)
    worker per GPU            (2+ GPUs) one worker per GPU, each with its own GPU as the current device, and a
                              trial on each whose loss matches the same trial on one device
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import re
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from membench.memtasks import get_task
from membench.models import build_model, list_models, model_class
from membench.runners import metrics, precision, train
from membench.runners.trial import EvalSlice, TrialConfig, git_commit

STATUSES = ("pass", "FAIL", "skipped")
FP32_TOL, BF16_TOL = 1e-4, 5e-2  # relative error ||a - b|| / ||b|| of outputs and of gradients


@dataclass
class Check:
    """One row of the report."""

    name: str
    status: str  # "pass", "FAIL" or "skipped"
    detail: str = ""


@dataclass
class _Entry:
    name: str
    fn: Callable
    needs: str  # "", "cuda" or "gpus" (two or more CUDA devices)
    quick: bool  # run under --quick


CHECKS: list[_Entry] = []


def check(name: str, needs: str = "", quick: bool = False):
    """Register a check: fn(device) -> Iterable[Check]. `needs` "cuda" or "gpus" skips it elsewhere."""

    def register(fn):
        CHECKS.append(_Entry(name, fn, needs, quick))
        return fn

    return register


def run_checks(device: torch.device, quick: bool = False, only: Iterable[str] | None = None,
               progress: Callable[[Check], None] | None = None) -> list[Check]:
    """Every registered check (or those named in `only`) on `device`, in order; never raises for a check."""
    rows: list[Check] = []

    def emit(row: Check) -> None:
        rows.append(row)
        if progress is not None:
            progress(row)

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for entry in CHECKS:
        if only is not None and entry.name not in only:
            continue
        if entry.needs == "cuda" and device.type != "cuda":
            emit(Check(entry.name, "skipped", "needs CUDA"))
        elif entry.needs == "gpus" and (device.type != "cuda" or gpus < 2):
            emit(Check(entry.name, "skipped", f"needs 2+ CUDA devices (this machine has {gpus})"))
        elif quick and not entry.quick:
            emit(Check(entry.name, "skipped", "not in --quick"))
        else:
            try:
                for row in entry.fn(device):  # rows are reported as they come (some checks take minutes)
                    emit(row)
            except Exception as err:  # noqa: BLE001 - a check that breaks is a failed check, with its reason
                emit(Check(entry.name, "FAIL", metrics.short_error(err)))
            finally:
                metrics.release_memory(device)
    return rows


def verdict(ok: bool, name: str, detail: str, why: str = "") -> Check:
    return Check(name, "pass" if ok else "FAIL", detail if ok or not why else f"{why}; {detail}")


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64 (0 when both are zero)."""
    a, b = a.double(), b.double()
    scale = b.norm().item()
    return (a - b).norm().item() / scale if scale else (a - b).norm().item()


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 for the checks: the runner's choice on CUDA; on the CPU bf16 too (to test the path), else None."""
    if device.type == "cpu":
        return torch.bfloat16
    return precision.choose_precision(device)


# --- the install ---------------------------------------------------------------------------
def required_torch() -> str:
    """The torch version pyproject.toml requires: the checkout's file when run from one, else the installed
    package's metadata ("0" when neither says)."""
    from importlib.metadata import PackageNotFoundError, requires

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        text = pyproject.read_text() if pyproject.exists() else "\n".join(requires("membench") or [])
    except PackageNotFoundError:
        text = ""
    found = re.search(r"torch\s*>=\s*([0-9][0-9.]*)", text)
    return found.group(1) if found else "0"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text.split("+")[0])[:3])


@check("torch", quick=True)
def check_torch(device):
    cuda = f", CUDA {torch.version.cuda}" if torch.version.cuda else ""
    about = f"torch {torch.__version__}{cuda}, python {sys.version.split()[0]}, {describe(device)}"
    yield Check("torch", "pass", about)
    need = required_torch()
    yield verdict(_version(torch.__version__) >= _version(need), "torch version",
                  f"{torch.__version__} >= {need} (pyproject.toml)", "too old: pip install -U torch")


@check("precision", quick=True)
def check_precision(device):
    name = precision.precision_name(device)
    graphs = "cuda_graphs can run" if precision.graphs_supported(device) else "cuda_graphs refused"
    if device.type == "cpu":
        why = "the CPU trains in fp32, without autocast"
    elif name == "bf16":
        why = "this GPU has bf16 in hardware"
    else:
        why = "no bf16 in hardware; fp16 would need a GradScaler, so fp32"
    yield Check("precision", "pass", f"{name}: {why}; {graphs}")


# --- the models ----------------------------------------------------------------------------
def _forward_backward(model, tokens, dtype) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    with metrics.autocast_to(tokens.device, dtype):
        out = model(tokens).float()  # (B, T, V)
    weights = torch.linspace(-1, 1, out.shape[-1], device=out.device)
    (out * weights).sum().backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.detach().float().clone() for p in model.parameters()]
    return out.detach(), grads


def _compare(got, want) -> tuple[float, float]:
    """(output error, gradient error): relative, gradients pooled over every parameter."""
    grads = rel_error(torch.cat([g.flatten() for g in got[1]]), torch.cat([g.flatten() for g in want[1]]))
    return rel_error(got[0], want[0]), grads


@check("paths", quick=True)
def check_paths(device):
    """Every family's fast path against its reference path (see the module doc for tolerances)."""
    dtype = _autocast_dtype(device)
    for name in list_models():
        try:
            with _no_tf32():
                row = _check_family_paths(name, device, dtype)
        except Exception as err:  # noqa: BLE001 - one family's failure is its row, the others still run
            row = Check(f"paths {name}", "FAIL", metrics.short_error(err))
        yield row


@contextlib.contextmanager
def _no_tf32():
    """fp32 means fp32: cuDNN (convolutions, RNNs) and matmuls without TF32 while comparing paths."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _check_family_paths(name: str, device: torch.device, dtype: torch.dtype | None) -> Check:
    """One family's row of `check_paths`."""
    torch.manual_seed(0)
    model = build_model(name, 16, d_model=32, n_layers=2).to(device)
    tokens = torch.randint(0, 16, (2, 64), device=device)
    has_reference = model_class(name).has_reference_path
    truth = _forward_backward(model.set_path("reference" if has_reference else "fast"), tokens, None)
    parts, ok = [], True
    if has_reference:
        out_err, grad_err = _compare(_forward_backward(model.set_path("fast"), tokens, None), truth)
        ok &= out_err <= FP32_TOL and grad_err <= FP32_TOL
        parts.append(f"fp32 out {out_err:.1e} grad {grad_err:.1e} (tol {FP32_TOL:g})")
    else:
        parts.append("no reference path")
    if dtype is not None:
        out_err, grad_err = _compare(_forward_backward(model.set_path("fast"), tokens, dtype), truth)
        ok &= out_err <= BF16_TOL and grad_err <= BF16_TOL
        parts.append(f"bf16 out {out_err:.1e} grad {grad_err:.1e} (tol {BF16_TOL:g})")
    else:
        parts.append("bf16 not checked (no bf16 on this GPU)")
    return verdict(ok, f"paths {name}", "; ".join(parts), "outside tolerance")


@check("rnn autocast", quick=True)
def check_rnn_autocast(device):
    dtype = _autocast_dtype(device) or torch.bfloat16
    torch.manual_seed(0)
    model = build_model("lstm", 16, d_model=32, n_layers=2).to(device)
    tokens = torch.randint(0, 16, (4, 64), device=device)
    seen = []
    rnns = [m for m in model.modules() if isinstance(m, torch.nn.RNNBase)]
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append(
        (args[0].dtype, torch.is_autocast_enabled(device.type)))) for m in rnns]
    try:
        _, grads = _forward_backward(model, tokens, dtype)
    finally:
        for hook in hooks:
            hook.remove()
    _, grads32 = _forward_backward(model, tokens, None)
    norm = torch.cat([g.flatten() for g in grads]).norm().item()
    norm32 = torch.cat([g.flatten() for g in grads32]).norm().item()
    ok = all(d == torch.float32 and not on for d, on in seen) and abs(norm / norm32 - 1) <= 0.05
    shown = ", ".join(sorted({f"{str(d).replace('torch.', '')} (autocast {'on' if on else 'off'})" for d, on in seen}))
    yield verdict(ok, "rnn autocast", f"under {str(dtype).replace('torch.', '')} autocast the LSTM sees {shown}; "
                  f"grad norm {norm:.4g} vs fp32 {norm32:.4g}", "reduced precision or gradient off by > 5%")


# --- training ------------------------------------------------------------------------------
def _train_losses(name: str, device: torch.device, compile: str, steps: int = 3, seq_len: int = 32,
                  batch_size: int = 8, vocab: int = 16, d_model: int = 32) -> tuple[list[float], float]:
    """Losses of `steps` training steps of a fresh model (seed 0) with `compile`, and the first step's seconds."""
    torch.manual_seed(0)
    model = build_model(name, vocab, d_model=d_model, n_layers=2).to(device)
    task = get_task("associative_recall", vocab_size=vocab)
    optimizer = train.make_optimizer(model, 3e-3, 0.1, device)
    step_loss = train.loss_fn(model, compile, device)
    capacity = train.gather_capacity(task.sample(batch_size, seq_len, 0, device).targets)
    losses, first = [], math.nan
    for step in range(steps):
        batch = task.sample(batch_size, seq_len, step, device)
        start = time.perf_counter()
        index, picked, _ = train.scored_positions(batch.targets, capacity)
        loss = step_loss(batch.inputs, index, picked)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step == 0:
            first = time.perf_counter() - start
    return losses, first


@check("compile")
def check_compile_modes(device):
    tol = 2e-2 if precision.choose_precision(device) is not None else 1e-4
    width = 64 if device.type == "cuda" else 16  # inductor's C++ build dominates on the CPU: keep it small
    eager, _ = _train_losses("transformer", device, "none", d_model=width)
    modes = ["torch_compile"] + (["cuda_graphs"] if precision.graphs_supported(device) else [])
    for mode in modes:
        torch.compiler.reset()
        try:
            losses, first = _train_losses("transformer", device, mode, d_model=width)
        finally:
            torch.compiler.reset()
        err = max(abs(a - b) / abs(b) for a, b in zip(losses, eager))
        yield verdict(err <= tol, f"compile {mode}", f"transformer d_model {width}, 3 steps: losses within "
                      f"{err:.1e} of eager (tol {tol:g}); first step {first:.1f} s", "differs from eager")
    if "cuda_graphs" not in modes:
        yield Check("compile cuda_graphs", "skipped", f"needs CUDA with compute capability >= "
                    f"{'.'.join(map(str, precision.GRAPHS_MIN_CAPABILITY))}")


@check("fused AdamW", quick=True)
def check_fused_adamw(device):
    torch.manual_seed(0)
    params = [torch.randn(64, 32, device=device), torch.randn(32, device=device)]
    results = []
    for fused in (False, True):
        copies = [p.clone().requires_grad_() for p in params]
        optimizer = torch.optim.AdamW(copies, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1, fused=fused,
                                      foreach=False if not fused else None)
        for step in range(3):
            gen = torch.Generator(device).manual_seed(step)
            for p in copies:
                p.grad = torch.randn(p.shape, generator=gen, device=device)
            optimizer.step()
        results.append(torch.cat([p.detach().flatten() for p in copies]))
    err = (results[0] - results[1]).abs().max().item()
    note = "" if device.type in train.FUSED_ADAMW_DEVICES else " (the runner does not use it on this device)"
    yield verdict(err <= 1e-5, "fused AdamW", f"3 steps: max difference {err:.1e} from the loop (tol 1e-5){note}",
                  "fused AdamW disagrees")


def _tiny_trial(model: str = "mlp", seed: int = 0, **change) -> TrialConfig:
    fields = dict(task="copy", task_params={"content_vocab": 4}, model=model, model_params={}, d_model=16,
                  n_layers=1, train_len=8, seed=seed, lr=1e-2, batch_size=8, steps=4, eval_every=4, log_every=2,
                  eval_slices=(EvalSlice("L8", 8, 16),))
    return TrialConfig(**{**fields, **change})


OOM_BATCH = 2**40  # sequences in the batch of the trial that must run out of memory: petabytes, on any device


@check("oom", quick=True)
def check_oom(device):
    from membench.runners.executors import LocalExecutor

    trials = [_tiny_trial(batch_size=OOM_BATCH), _tiny_trial(seed=1)]
    payloads = list(LocalExecutor([str(device)]).run(trials))
    statuses = [p["runs"][0]["status"] for p in payloads]
    error = payloads[0]["runs"][0]["error"]
    said = re.search(r"(out of memory|can't allocate memory)[^.;]*", error, re.IGNORECASE)
    yield verdict(statuses == ["oom", "ok"], "oom", f"a batch of 2^40 sequences then a normal trial: "
                  f"{' then '.join(statuses)} ({said.group(0) if said else error[:80]})", "expected oom then ok")


# --- data and kernels ----------------------------------------------------------------------
def _sync_debug(device: torch.device):
    """Sync debug mode 'error' on CUDA (a host sync raises), nothing elsewhere."""
    if device.type != "cuda":
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def strict():
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")

    return strict()


@check("task generation", quick=True)
def check_task_generation(device):
    batch_size = 20_000 if device.type == "cuda" else 2_000
    task = get_task("associative_recall", vocab_size=8192, num_kv_pairs=64)
    task.sample(16, 256, 0, device)  # warm-up (kernels, allocator)
    metrics.synchronize(device)
    start = time.perf_counter()
    with _sync_debug(device):
        batch = task.sample(batch_size, 256, 1, device)
    metrics.synchronize(device)
    seconds = time.perf_counter() - start
    ok = bool((task.solve(batch.inputs)[batch.scored] == batch.targets[batch.scored]).all())
    sync = "no host sync (sync debug mode error)" if device.type == "cuda" else "host syncs not checked on the CPU"
    yield verdict(ok, "task generation", f"associative recall vocab 8192, 64 pairs, {batch_size:,} x 256: "
                  f"{batch_size * 256 / seconds:,.0f} tokens/s; {sync}", "labels disagree with the solver")


@check("attention TFLOP/s", quick=True)
def check_attention(device):
    cuda = device.type == "cuda"
    seq_len, batch, heads, head_dim = (8192, 4, 16, 64) if cuda else (1024, 1, 4, 32)
    dtype = precision.choose_precision(device) or torch.float32
    q, k, v = (torch.randn(batch, heads, seq_len, head_dim, device=device, dtype=dtype) for _ in range(3))
    F.scaled_dot_product_attention(q, k, v, is_causal=True)  # warm-up
    metrics.synchronize(device)
    repeats = 10 if cuda else 2
    start = time.perf_counter()
    for _ in range(repeats):
        F.scaled_dot_product_attention(q, k, v, is_causal=True)
    metrics.synchronize(device)
    seconds = (time.perf_counter() - start) / repeats
    flops = 4 * batch * seq_len * seq_len * heads * head_dim  # full-square convention (models.layers)
    yield Check("attention TFLOP/s", "pass", f"{flops / seconds / 1e12:.3g} TFLOP/s: causal SDPA forward, "
                f"{str(dtype).replace('torch.', '')}, B={batch} H={heads} T={seq_len} hd={head_dim}")


@check("mini-sweep", quick=True)
def check_mini_sweep(device):
    import pandas as pd

    from membench.runners.spec import load_spec
    from membench.runners.sweep import run_sweep

    models = list_models() if device.type == "cuda" else ["mlp", "lstm", "transformer"]
    spec = load_spec("smoke", None, {"tasks": ["copy"], "models": models, "lengths": [8], "device": str(device)})
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        runs = run_sweep(spec, out, progress=False)
        seconds = time.perf_counter() - start
        back = pd.read_csv(Path(out) / "runs.csv")
    same = (sorted(back["trial_id"]) == sorted(runs["trial_id"])
            and back.sort_values(["trial_id", "slice"])["accuracy"].round(6).tolist()
            == runs.sort_values(["trial_id", "slice"])["accuracy"].round(6).tolist())
    statuses = runs.drop_duplicates("trial_id")["status"].value_counts().to_dict()
    ok = same and set(statuses) == {"ok"}
    yield verdict(ok, "mini-sweep", f"smoke copy L8, {len(models)} families: {len(runs)} rows in {seconds:.0f} s, "
                  f"statuses {statuses}, runs.csv read back {'equal' if same else 'DIFFERENT'}",
                  "a trial failed or the table differs")


# --- CUDA only -----------------------------------------------------------------------------
@check("nonzero_static", needs="cuda", quick=True)
def check_nonzero_static(device):
    mask = torch.rand(4096, generator=torch.Generator().manual_seed(0)) < 0.3
    want = torch.nonzero_static(mask, size=2048, fill_value=0)
    on_device = mask.to(device)
    with _sync_debug(device):
        got = torch.nonzero_static(on_device, size=2048, fill_value=0)
    ok = torch.equal(got.cpu(), want)
    yield verdict(ok, "nonzero_static", f"torch {torch.__version__}: on {device} equal to the CPU, no host sync",
                  "differs from the CPU")


def _dynamo_counts() -> tuple[int, int]:
    """(graph breaks, cudagraph skips) counted by dynamo and inductor since the counters were cleared."""
    from torch._dynamo.utils import counters

    return sum(counters["graph_break"].values()), counters["inductor"]["cudagraph_skips"]


CAPTURE_BUDGET = 240.0  # seconds for all capture rows: past it the remaining ones are skipped, and say so


@check("capture", needs="cuda")
def check_capture(device):
    started = time.perf_counter()
    for seq_len in (1024, 4096):
        for name in list_models():
            if not model_class(name).compile_friendly:
                yield Check(f"capture {name} T={seq_len}", "skipped", "not compile-friendly (a loop over tokens or "
                            "a cuDNN RNN): compile = \"auto\" runs it eagerly")
                continue
            if time.perf_counter() - started > CAPTURE_BUDGET:
                yield Check(f"capture {name} T={seq_len}", "skipped", f"over the {CAPTURE_BUDGET:.0f} s budget of "
                            "the capture rows (compile time grows with T for some families)")
                continue
            torch.compiler.reset()
            from torch._dynamo.utils import counters

            counters.clear()
            try:
                losses, first = _train_losses(name, device, "cuda_graphs", seq_len=seq_len, batch_size=8,
                                              vocab=64, d_model=64)
            finally:
                breaks, skips = _dynamo_counts()
                torch.compiler.reset()
            ok = breaks == 0 and skips == 0 and all(math.isfinite(x) for x in losses)
            yield verdict(ok, f"capture {name} T={seq_len}", f"3 cuda_graphs steps: {breaks} graph breaks, "
                          f"{skips} cudagraph skips; first step (compile) {first:.1f} s",
                          "not captured whole")


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def recompile_limit_warnings():
    """Collects (into the yielded list) the warnings dynamo logs when it hits its recompile limit and
    falls back to eager ("torch._dynamo hit config.recompile_limit (8)")."""
    handler = _Warnings()
    logger = logging.getLogger("torch._dynamo")
    logger.addHandler(handler)
    hits: list[str] = []
    try:
        yield hits
    finally:
        logger.removeHandler(handler)
        hits += [m for m in handler.messages if "recompile_limit" in m or "cache_size_limit" in m]


@check("trials in one process", needs="cuda")
def check_trials_in_one_process(device):
    from membench.runners.trial import run_trial

    names = (list_models() * 2)[:10]
    reserved, statuses = [], []
    with recompile_limit_warnings() as limit:
        for i, name in enumerate(names):
            payload = run_trial(_tiny_trial(name, seed=i), str(device), "torch_compile")
            statuses.append(payload["runs"][0]["status"])
            reserved.append(torch.cuda.memory_reserved(device))
    growth = (reserved[-1] - reserved[0]) / 2**20
    ok = not limit and growth <= 64 and set(statuses) == {"ok"}
    yield verdict(ok, "trials in one process", f"10 torch_compile trials: statuses {sorted(set(statuses))}, "
                  f"{len(limit)} recompile-limit warnings, memory_reserved grew {growth:.0f} MB after the first",
                  limit[0][:120] if limit else "memory grew or a trial failed")


@check("captured oom", needs="cuda")
def check_captured_oom(device):
    from membench.runners.trial import run_trial

    torch.cuda.synchronize(device)
    baseline = torch.cuda.memory_allocated(device)
    total = torch.cuda.get_device_properties(device).total_memory
    # 2^24 tokens of width 1024 through an MLP of ratio 4: 256 GB of activations, more than any GPU holds
    huge = _tiny_trial(d_model=1024, batch_size=4096, train_len=4096, eval_slices=(EvalSlice("L4096", 4096, 16),),
                       task_params={"content_vocab": 4})
    first = run_trial(huge, str(device), "cuda_graphs")["runs"][0]
    second = run_trial(_tiny_trial(seed=1), str(device), "cuda_graphs")["runs"][0]
    torch.compiler.reset()
    metrics.release_memory(device)
    left = (torch.cuda.memory_allocated(device) - baseline) / 2**20
    ok = first["status"] == "oom" and second["status"] == "ok" and left <= 16
    yield verdict(ok, "captured oom", f"cuda_graphs trial beyond {total / 2**30:.0f} GiB then a normal one: "
                  f"{first['status']} then {second['status']}; memory_allocated {left:+.0f} MB from baseline",
                  f"expected oom then ok at baseline ({first['error'][:80]})")


_BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")


def _sdpa_calls(model, tokens, dtype) -> list[tuple]:
    """The (q, k, v, kwargs) of every scaled_dot_product_attention call in one forward of `model`."""
    calls, real = [], F.scaled_dot_product_attention

    def record(q, k, v, *args, **kwargs):
        calls.append((q.detach(), k.detach(), v.detach(), args, kwargs))
        return real(q, k, v, *args, **kwargs)

    F.scaled_dot_product_attention = record
    try:
        with torch.no_grad(), metrics.autocast_to(tokens.device, dtype):
            model(tokens)
    finally:
        F.scaled_dot_product_attention = real
    return calls


def _usable_backends(q, k, v, args, kwargs) -> list[str]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    usable = []
    for name in _BACKENDS:
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            continue
        try:
            with sdpa_kernel([backend]), warnings_off():
                F.scaled_dot_product_attention(q, k, v, *args, **kwargs)
            usable.append(name.split("_")[0].lower())
        except RuntimeError:
            pass
    return usable


@contextlib.contextmanager
def warnings_off():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@check("sdpa backend", needs="cuda")
def check_sdpa_backend(device):
    from membench.runners.spec import load_spec

    dtype = precision.choose_precision(device)
    attending = [n for n in list_models() if build_model(n, 16, d_model=32).attention_flops(1, 64) > 0]
    spec = load_spec("standard", None, {"tasks": ["associative_recall"], "models": attending, "lengths": [1024]})
    seen = set()
    for trial in spec.trials:
        key = (trial.model, trial.d_model, str(trial.model_params))
        if key in seen:
            continue
        seen.add(key)
        model = trial.build_model().to(device)
        calls = _sdpa_calls(model, torch.zeros(2, 1024, dtype=torch.long, device=device), dtype)
        if not calls:
            continue  # no softmax attention in this family
        q, k, v, args, kwargs = calls[0]
        usable = _usable_backends(q, k, v, args, kwargs)
        fused = [b for b in usable if b != "math"]
        masked = "mask" if kwargs.get("attn_mask") is not None or (args and args[0] is not None) else "causal"
        yield verdict(bool(fused), f"sdpa backend {trial.model}",
                      f"d_model {trial.d_model}, head dim {q.shape[-1]}, {str(q.dtype).replace('torch.', '')}, "
                      f"{masked}: usable "
                      f"{', '.join(usable) or 'none'}", "only the math fallback (timings not comparable)")


def _report_device(_) -> tuple[int, int, str]:
    """(pid, current CUDA device, claimed device) of the pool worker that runs this."""
    import os

    from membench.runners import executors

    return os.getpid(), torch.cuda.current_device(), executors._worker_device


@check("worker per GPU", needs="gpus")
def check_worker_per_gpu(device):
    import multiprocessing

    from membench.runners import executors

    count = torch.cuda.device_count()
    devices = [f"cuda:{i}" for i in range(count)]
    ctx = multiprocessing.get_context("spawn")
    free = ctx.Queue()
    for each in devices:
        free.put(each)
    with ProcessPoolExecutor(count, mp_context=ctx, initializer=executors._claim_device,
                             initargs=(free, count)) as pool:
        reports = list(pool.map(_report_device, range(4 * count)))
    claimed = {pid: (current, name) for pid, current, name in reports}
    right = all(name == f"cuda:{current}" for current, name in claimed.values())
    trials = [_tiny_trial(seed=i) for i in range(count)]
    pooled = {p["trial_id"]: p["runs"][0] for p in executors.LocalExecutor(devices).run(trials)}
    alone = {p["trial_id"]: p["runs"][0] for p in executors.LocalExecutor([str(device)]).run(trials)}
    statuses = sorted({row["status"] for row in [*pooled.values(), *alone.values()]})
    same = all(math.isclose(pooled[i]["loss"], alone[i]["loss"], rel_tol=1e-3) for i in alone)
    ok = right and statuses == ["ok"] and same
    yield verdict(ok, "worker per GPU", f"{count} GPUs: workers' current devices "
                  f"{sorted(name for _, name in claimed.values())}; a trial per GPU: {statuses}, losses "
                  f"{'equal to' if same else 'DIFFERENT from'} one device's",
                  "a worker is not on its own GPU, a trial failed or the rows differ")


# --- output --------------------------------------------------------------------------------
def header(device: torch.device) -> dict[str, str]:
    """What the report is about: date, commit, torch version and device."""
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": git_commit() or "unknown",
            "torch_version": torch.__version__, "device": describe(device)}


def describe(device: torch.device) -> str:
    """'cuda:0 (NVIDIA H100 80GB HBM3)' or 'cpu: <processor model>'."""
    name = metrics.device_name(device)
    return name if device.type == "cpu" else f"{device} ({name})"


NAME_WIDTH = 26  # rows are printed as they finish, so the name column has a fixed width


def format_row(row: Check) -> str:
    """'paths lstm                  pass     fp32 out ...': name, status, detail."""
    return f"{row.name.ljust(NAME_WIDTH)}  {row.status.ljust(7)}  {row.detail}"


def write_report(out_dir: Path, rows: list[Check], about: dict[str, str]) -> None:
    """doctor.md (the table in markdown, under the header) and doctor.csv (one row per check, header columns)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# membench doctor", ""] + [f"- {k}: {v}" for k, v in about.items()] + [
        "", "| check | status | detail |", "|---|---|---|"]
    lines += [f"| {r.name} | {r.status} | {r.detail.replace('|', '/')} |" for r in rows]
    (out_dir / "doctor.md").write_text("\n".join(lines) + "\n")
    with open(out_dir / "doctor.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["check", "status", "detail", *about])
        writer.writeheader()
        for r in rows:
            writer.writerow({"check": r.name, "status": r.status, "detail": r.detail, **about})

