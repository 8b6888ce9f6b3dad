"""Shared test settings. One torch thread: the tests use tiny models, for which a second thread costs more
in synchronisation than it gains, and CI has only 2 cores."""

import torch

torch.set_num_threads(1)
