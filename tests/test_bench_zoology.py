"""Wall time of the Zoology CPU twin, end to end (spec, training to 0.99 on every slice, tables).

    pytest -m benchmark --benchmark-enable tests/test_bench_zoology.py

A benchmark, not a unit test: how long it takes depends on the machine and its load; the unit test
(tests/test_zoology.py) checks only what it learns.
"""

from __future__ import annotations

import pytest

from membench.runners.cli import main

pytestmark = pytest.mark.benchmark


def test_zoology_cpu_twin_wall_time(benchmark, tmp_path_factory):
    def run() -> int:
        return main(["run", "--spec", "zoology_mqar_cpu", "--out", str(tmp_path_factory.mktemp("twin")), "--quiet"])

    assert benchmark.pedantic(run, rounds=1, iterations=1) == 0
