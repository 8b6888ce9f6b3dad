"""Helpers shared by test modules."""

import os
import sys

import pytest
import torch

# parametrise a test over devices: CUDA variants run when CUDA is present and skip cleanly otherwise
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]),
]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Run `membench ARGV` in-process: (exit code, stdout, stderr)."""
    from membench.runners.cli import main

    try:
        code = main(list(argv))
    except SystemExit as stop:  # argparse exits on its own errors
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def undo_plugin_side_effects(monkeypatch):
    """Plugins put folders on sys.path and in the environment (so worker processes see them too): a test module
    that imports this autouse fixture gets both restored after each test."""
    from membench.plugins import INCLUDE_ENV

    monkeypatch.setattr(sys, "path", list(sys.path))
    for var in ("PYTHONPATH", INCLUDE_ENV):
        old = os.environ.get(var)
        monkeypatch.setenv(var, old or "")  # records the value to restore, absent included
        if old is None:
            monkeypatch.delenv(var)
