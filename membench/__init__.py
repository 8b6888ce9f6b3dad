"""membench: a benchmark of the short-term memory of sequence models.

One import name for the whole suite. The repository keeps its three folders at the top (`memtasks/`: what to
remember, `models/`: who remembers, `runners/`: how they are trained, measured, ranked and drawn); they are
installed as `membench.memtasks`, `membench.models` and `membench.runners`, beside the two modules that
belong to none of them: `membench.checks` (every validation rule and the `ConfigError` they raise) and
`membench.registry` (the name -> class registry behind tasks and models).

    >>> from membench import build_model, get_task
    >>> task = get_task("associative_recall", num_kv_pairs=4)
    >>> batch = task.sample(batch_size=2, seq_len=32, seed=0)
    >>> model = build_model("lstm", vocab_size=task.vocab_size, d_model=32)
    >>> model(batch.inputs).shape[-1] == task.vocab_size
    True
"""

from __future__ import annotations

import os as _os

# Run from a source checkout (tests, `python -c` in the repository), this folder holds only the shared
# modules and the three subpackages sit beside it; an installed wheel has them inside. Either way they
# import as membench.memtasks, membench.models and membench.runners.
_here = _os.path.dirname(_os.path.abspath(__file__))
if not _os.path.isdir(_os.path.join(_here, "runners")):
    __path__.append(_os.path.dirname(_here))  # noqa: F821 (the package's own __path__)

# The public names load on first use (PEP 562), so that `import membench.runners.cli` does not import torch
# before the CLI can turn a Ctrl-C at start-up into one line.
_EXPORTS = {
    "ConfigError": "membench.checks", "Batch": "membench.memtasks", "Task": "membench.memtasks",
    "get_task": "membench.memtasks", "list_tasks": "membench.memtasks", "register_task": "membench.memtasks",
    "MemoryModel": "membench.models", "build_model": "membench.models", "list_models": "membench.models",
    "params_matched": "membench.models", "register_model": "membench.models",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'membench' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
