"""The training step's loss: the output head and cross-entropy at the scored positions only, without a wait
for the device, captured per compile mode.

The output head and the loss are computed only at the N scored positions:

    h = model.features(x)                                # (B, T, D)
    logits = model.head(h[scored])                       # (N, V)
    loss = cross_entropy(logits, y[scored])              # mean over the N scored positions

That is `scored_loss_reference`. Selecting a data-dependent number of rows needs N on the host, a wait for
the device at every step, so training uses a sync-free form of it (`scored_positions`, `scored_loss`):
the first batch of each segment (and length) fixes a capacity C >= N (`gather_capacity`), and every step gathers
exactly C rows, the N scored ones in order and C - N padding rows whose target is ignored:

    index  = nonzero_static(scored.flatten(), size=C)    # (C,) scored positions, then padding
    picked = y.flatten()[index] where row < N else -100  # (C,) the padding targets are ignored
    loss   = cross_entropy(head(h.flatten(0, 1)[index]), picked)   # the same mean over the N

Example: B=2, T=4, scored at flat positions 1 and 6, C=3 -> index = [1, 6, 0], picked = [y1, y6, -100].
A step whose N exceeds C would drop positions, so the excess is counted on the device and read with the
loss; `CapacityExceeded` is raised there (the trial's status is "error"), never a silent error.

`compile` captures the training forward (features, gather, head and loss; the backward follows through
AOTAutograd): "none" (eager), "torch_compile", "cuda_graphs" (torch.compile's "reduce-overhead" mode,
which replays CUDA graphs; CUDA only) or "auto" (cuda_graphs on CUDA for a family that declares capture
helps it, `compile_friendly`; none elsewhere, and none for a trial with a length range, whose every length would
be captured anew: `resolve_compile`, asked once per trial).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from membench.checks import ConfigError
from membench.memtasks import IGNORE
from membench.runners import metrics, precision

COMPILE_MODES = ("none", "torch_compile", "cuda_graphs", "auto")


class CapacityExceeded(RuntimeError):
    """A batch had more scored positions than the gather capacity of its segment."""


class NothingScored(RuntimeError):
    """A training batch without a single scored position (the trial's status is "error")."""


# --- the loss at scored positions ----------------------------------------------------------
def scored_loss_reference(model, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy at the scored positions by boolean indexing (readable; syncs for N).

    h (B, T, D) features, targets (B, T) with IGNORE where not scored -> () loss.
    """
    scored = targets != IGNORE  # (B, T)
    logits = model.head(h[scored])  # (N, V)
    return F.cross_entropy(logits.float(), targets[scored])


def gather_capacity(targets: torch.Tensor) -> int:
    """Rows C reserved for the scored positions of batches like this one: B times the most scored positions
    of one of its sequences, plus one whole sequence, at most B*T. Reads the batch (one device sync).

    Example: B=256, T=64, 4 scored in every row -> C = 256 * 4 + 64 = 1088 (N = 1024).
    """
    batch_size, seq_len = targets.shape
    most = int((targets != IGNORE).sum(dim=1).max())
    if most == 0:  # the loss would be a mean over nothing (NaN), which is not a divergence
        raise NothingScored(f"the task scores no position in its first batch of {batch_size} sequences of length "
                            f"{seq_len}: there is nothing to train on (check the task's params at this length)")
    return min(batch_size * seq_len, batch_size * most + seq_len)


def scored_positions(targets: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sync-free selection of the scored positions, padded to `capacity` rows (see the module doc).

    targets (B, T) -> index (C,) into the flattened (B*T) positions, ascending, padded with 0;
    picked (C,) their targets, IGNORE on padding rows; excess () int64, max(0, N - C) (0 when exact).
    """
    flat = targets.reshape(-1)  # (B*T,)
    scored = flat != IGNORE  # (B*T,)
    # nonzero_static has a CUDA kernel from torch 2.6 on (hence pyproject's torch>=2.6)
    index = torch.nonzero_static(scored, size=capacity, fill_value=0).squeeze(1)  # (C,)
    count = scored.sum()  # (), stays on the device
    real = torch.arange(capacity, device=flat.device) < count  # (C,)
    picked = torch.where(real, flat[index], IGNORE)  # (C,)
    return index, picked, (count - capacity).clamp(min=0)


def scored_loss(model, h: torch.Tensor, index: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the rows of `picked` that are not IGNORE: equal to `scored_loss_reference`.

    h (B, T, D), index and picked (C,) from `scored_positions` -> () loss.
    """
    rows = h.flatten(0, 1).index_select(0, index)  # (C, D)
    logits = model.head(rows)  # (C, V)
    return F.cross_entropy(logits.float(), picked)


def resolve_compile(model, compile: str, device: torch.device) -> str:
    """The capture a trial gets: `compile` itself, or for "auto" cuda_graphs where the device can replay CUDA
    graphs (`precision.graphs_supported`: CUDA, sm_80+) and the family declares that capture helps it
    (`compile_friendly`, see models.base), none otherwise.

    Example: auto -> cuda_graphs for a transformer on an H100, none for an lstm there, none for both on a T4
    or the CPU.
    """
    if compile not in COMPILE_MODES:
        raise ConfigError(f"unknown compile mode {compile!r}; valid: {', '.join(COMPILE_MODES)}")
    if compile != "auto":
        return compile
    helps = getattr(model, "compile_friendly", True)
    return "cuda_graphs" if helps and precision.graphs_supported(device) else "none"


def loss_fn(model, compile: str, device: torch.device):
    """The training forward (inputs (B, T), index (C,), picked (C,)) -> () loss, captured per `compile`
    ("auto" resolved by `resolve_compile`; see the module doc). Evaluation always runs eagerly (its lengths
    vary)."""
    return captured_loss(model, resolve_compile(model, compile, device), device)


_CAPTURE_OPTIONS = {"torch_compile": {}, "cuda_graphs": {"mode": "reduce-overhead"}}  # torch.compile's, per mode


def captured_loss(model, mode: str, device: torch.device):
    """`loss_fn` for a mode `resolve_compile` has given: none (eager), torch_compile or cuda_graphs."""
    dtype = precision.choose_precision(device)  # chosen here, outside what torch.compile captures

    def forward(inputs: torch.Tensor, index: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
        with metrics.autocast_to(device, dtype):
            return scored_loss(model, model.features(inputs), index, picked)

    if mode == "none":
        return forward
    precision.check_compile(mode, device)  # cuda_graphs needs an sm_80+ GPU
    return torch.compile(forward, **_CAPTURE_OPTIONS[mode])
