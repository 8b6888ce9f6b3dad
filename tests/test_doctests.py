"""The worked examples in module docstrings run as written (doctest), so the docs cannot go stale. Every module
of the package is searched: a module gains its test the moment its docstrings hold an example."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"membench": "membench", "memtasks": "membench.memtasks", "models": "membench.models",
           "runners": "membench.runners"}  # folder -> import name (pyproject's package-dir)
SLOW = {"membench.runners.contract"}  # its examples run the whole model contract (~30 s on 2 cores)
NEEDS = {"membench.models.hf": "transformers"}  # examples of an optional extra


def module_names() -> list[str]:
    names = []
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            if path.name != "__main__.py":
                names.append(".".join([package, *parts]))
    return names


def with_examples(names: list[str]) -> list:
    finder, found = doctest.DocTestFinder(), []
    for name in names:
        if name in NEEDS and importlib.util.find_spec(NEEDS[name]) is None:
            continue
        if any(test.examples for test in finder.find(importlib.import_module(name))):
            found.append(pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name)
    return found


def test_the_search_finds_the_package():
    names = module_names()
    expected = {"membench.runners.faults", "membench.models.scan", "membench.memtasks.tasks.associative_recall"}
    assert expected <= set(names)


@pytest.mark.parametrize("name", with_examples(module_names()))
def test_docstring_examples_run(name):
    flags = doctest.ELLIPSIS | doctest.IGNORE_EXCEPTION_DETAIL
    result = doctest.testmod(importlib.import_module(name), optionflags=flags)
    assert result.failed == 0
    assert result.attempted > 0, f"{name} has no example to run"
