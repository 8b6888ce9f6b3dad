"""Helpers shared by test modules."""

import pytest
import torch

# parametrise a test over devices: CUDA variants run when CUDA is present and skip cleanly otherwise
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]),
]
