"""Shared test settings: CPU threads kept small (CI has 2 cores)."""

import torch

torch.set_num_threads(2)
