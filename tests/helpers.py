"""Helpers shared by test modules."""

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
