"""The models' numerics on the device: every family's fast path against its reference path ("paths <family>"),
and what torch's LSTM sees under bf16 autocast ("rnn autocast").

Errors are relative, `rel_error(a, b) = ||a - b|| / ||b||`, of the outputs and of the gradients pooled over every
parameter, for 2 x 64 tokens: the fast path in fp32 within FP32_TOL of the fp32 reference, and under bf16
autocast within BF16_TOL of it (families without a reference path compare bf16 against their own fp32).

    >>> rel_error(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 1.0]))  # ||(0, 1)|| / ||(1, 1)||
    0.7071067811865475
"""

from __future__ import annotations

import contextlib

import torch

from membench.models import build_model, list_models, model_class
from membench.runners import metrics, precision
from membench.runners.doctor.rows import Check, verdict

FP32_TOL, BF16_TOL = 1e-4, 5e-2  # relative error ||a - b|| / ||b|| of outputs and of gradients


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


def _forward_backward(model, tokens, dtype) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The output of one forward of `tokens` (B, T) under `dtype` autocast, and every parameter's gradient of
    a fixed weighting of it."""
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


def check_rnn_autocast(device):
    """The LSTM's inputs under bf16 autocast must be float32 with autocast off, its gradient norm within 5% of
    fp32's."""
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
