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

from membench.checks import ConfigError  # noqa: E402
from membench.memtasks import Batch, Task, get_task, list_tasks, register_task  # noqa: E402
from membench.models import MemoryModel, build_model, list_models, params_matched, register_model  # noqa: E402

__all__ = [
    "Batch", "ConfigError", "MemoryModel", "Task", "build_model", "get_task", "list_models", "list_tasks",
    "params_matched", "register_model", "register_task",
]
