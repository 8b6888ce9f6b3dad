"""Data generation and attention kernels on the device: associative-recall generation speed, labels checked
by the task's solver ("task generation"); causal SDPA forward TFLOP/s ("attention TFLOP/s"); and, on CUDA,
`nonzero_static` without a host sync ("nonzero_static") and which SDPA kernels each attention family's calls
can use ("sdpa backend <family>").

On CUDA the generation and `nonzero_static` run under sync debug mode "error", so a host sync raises and
fails the row; the CPU has no such mode.
"""

from __future__ import annotations

import contextlib
import time

import torch
import torch.nn.functional as F

from membench.memtasks import get_task
from membench.models import build_model, list_models
from membench.runners import metrics, precision
from membench.runners.doctor.rows import Check, verdict


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


def check_task_generation(device):
    """Associative recall (vocab 8192, 64 pairs, length 256) drawn on the device: tokens/s; on CUDA 20,000
    sequences with no host sync, on the CPU 2,000."""
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


def check_attention(device):
    """Causal SDPA forward at one long length (CUDA 8192, CPU 1024): TFLOP/s by the full-square convention."""
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


def check_nonzero_static(device):
    """`torch.nonzero_static` on the device equal to the CPU's, under sync debug mode "error"."""
    mask = torch.rand(4096, generator=torch.Generator().manual_seed(0)) < 0.3
    want = torch.nonzero_static(mask, size=2048, fill_value=0)
    on_device = mask.to(device)
    with _sync_debug(device):
        got = torch.nonzero_static(on_device, size=2048, fill_value=0)
    ok = torch.equal(got.cpu(), want)
    yield verdict(ok, "nonzero_static", f"torch {torch.__version__}: on {device} equal to the CPU, no host sync",
                  "differs from the CPU")


_BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")


def _sdpa_calls(model, tokens, dtype) -> list[tuple]:
    """The (q, k, v, args, kwargs) of every scaled_dot_product_attention call in one forward of `model`."""
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
    """The SDPA kernels ("flash", "efficient", "cudnn", "math") that accept this call, each tried alone."""
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
    """Python warnings silenced (a refused SDPA kernel warns why before it raises)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def check_sdpa_backend(device):
    """The SDPA kernels each attention family's first call can use at the standard preset's widths under the
    chosen precision: FAIL when only the math fallback can."""
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
