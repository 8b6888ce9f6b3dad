"""The worked examples in module docstrings run as written (doctest), so the docs cannot go stale."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "membench", "membench.checks", "membench.registry", "membench.memtasks", "membench.models",
    "membench.runners.reporting.text", "membench.runners.reporting.results", "membench.runners.reporting.frontier",
    "membench.runners.reporting.intervals", "membench.runners.reporting.leaderboard",
    "membench.runners.precision", "membench.runners.doctor", "membench.runners.cost.estimate",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    flags = doctest.ELLIPSIS | doctest.IGNORE_EXCEPTION_DETAIL
    result = doctest.testmod(importlib.import_module(name), optionflags=flags)
    assert result.failed == 0
    assert result.attempted > 0, f"{name} has no example to run"
