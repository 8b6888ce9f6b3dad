"""The install: torch and the device ("torch"), torch's version against what pyproject.toml requires
("torch version"), and the precision the runner picks for the device ("precision").

    >>> _version("2.6.0+cu124") >= _version("2.6")
    True
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

from membench.runners import precision
from membench.runners.doctor.report import describe
from membench.runners.doctor.rows import Check, verdict

CHECKOUT = Path(__file__).resolve().parents[2]  # runners/doctor/install.py -> the checkout's root


def required_torch() -> str:
    """The torch version pyproject.toml requires: the checkout's file when run from one, else the installed
    package's metadata ("0" when neither says)."""
    from importlib.metadata import PackageNotFoundError, requires

    pyproject = CHECKOUT / "pyproject.toml"
    try:
        text = pyproject.read_text() if pyproject.exists() else "\n".join(requires("membench") or [])
    except PackageNotFoundError:
        text = ""
    found = re.search(r"torch\s*>=\s*([0-9][0-9.]*)", text)
    return found.group(1) if found else "0"


def _version(text: str) -> tuple[int, ...]:
    """The first three numbers of a version, without its local part: "2.6.0+cu124" -> (2, 6, 0)."""
    return tuple(int(p) for p in re.findall(r"\d+", text.split("+")[0])[:3])


def check_torch(device):
    cuda = f", CUDA {torch.version.cuda}" if torch.version.cuda else ""
    about = f"torch {torch.__version__}{cuda}, python {sys.version.split()[0]}, {describe(device)}"
    yield Check("torch", "pass", about)
    need = required_torch()
    yield verdict(_version(torch.__version__) >= _version(need), "torch version",
                  f"{torch.__version__} >= {need} (pyproject.toml)", "too old: pip install -U torch")


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
