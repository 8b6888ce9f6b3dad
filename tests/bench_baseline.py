"""The benchmark baseline: `make bench` fails when generation, a training step or evaluation has become more than
25 % slower than benchmarks/baseline.json records.

Machines differ, so a benchmark is stored as its cost in calibrations: its best time divided by the best time of
a fixed workload (`calibration`: sorting, elementwise arithmetic and a matrix product, one torch thread) timed in
the same process just before the benchmark. A machine twice as fast halves both; a host that is busier for a
while slows the benchmark and the calibration beside it alike.

    cost        = best time of the benchmark / best time of the calibration timed before it   (calibrations)
    slowdown    = cost in this run / cost in the baseline
    regression  = slowdown > 1 + TOLERANCE (1.25)

Worked example: the baseline holds 12.0 calibrations for a generation benchmark. This run takes 70 ms beside a
5 ms calibration: 14.0 calibrations, slowdown 14.0 / 12.0 = 1.17, within 1.25. At 80 ms: 16.0 calibrations,
slowdown 1.33: a regression, and `make bench` fails.

Three uses:
    pytest -p tests.bench_baseline -m benchmark --benchmark-enable --benchmark-json=.benchmarks/latest.json
        as a pytest plugin: times the calibration before every benchmark, into its extra_info;
    python -m tests.bench_baseline check .benchmarks/latest.json
        compares that run with the baseline: a line per guarded benchmark, exit status 1 on a regression;
    python -m tests.bench_baseline update .benchmarks/latest.json
        writes the baseline from that run (`make bench-baseline` runs the guarded files and this).
Only the files of GUARDED_FILES are compared; a benchmark without a baseline entry is listed as new, and a
baseline entry not run (a CUDA benchmark on a CPU host) as not run: neither fails the check.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.helpers import best_wall_seconds

BASELINE = Path(__file__).resolve().parent.parent / "benchmarks" / "baseline.json"
GUARDED_FILES = ("tests/test_bench_tasks.py", "tests/test_bench_models.py", "tests/test_bench_eval.py")
TOLERANCE = 0.25  # a benchmark more than 25 % slower than its baseline fails `make bench`
CALIBRATION_ROUNDS = 5
ABOUT = (
    "Reference costs of the benchmarks of generation, training steps and evaluation (tests/bench_baseline.py). "
    "A cost is in calibrations: the benchmark's best time over the best time of a fixed workload (a sort, "
    "elementwise arithmetic and a matrix product on one torch thread) timed in the same process just before it, "
    "so that it carries from one machine to another. `make bench` fails when a cost exceeds its baseline by more "
    "than 25 %. Regenerate with `make bench-baseline` on an idle machine, after a deliberate change of speed."
)


# --- the calibration ---------------------------------------------------------------------------------
def calibration() -> None:
    """The fixed workload that a benchmark's time is divided by: a little of what the benchmarks do."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(256, 1024, generator=gen)  # (256, 1024)
    x.sort(dim=1)
    (x.log1p() * 3.0 + x).sum()
    x[:, :256] @ x[:, 256:512]  # (256, 256)


def calibration_seconds(rounds: int = CALIBRATION_ROUNDS) -> float:
    """Best wall time of `calibration` over `rounds` calls, after one warm-up call, on one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return best_wall_seconds(calibration, rounds)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _calibrate_before_benchmark(request):
    """With this module as a plugin: a benchmark's extra_info gets the calibration timed just before it."""
    if "benchmark" in request.fixturenames:
        benchmark = request.getfixturevalue("benchmark")
        if not benchmark.disabled:
            benchmark.extra_info["calibration_seconds"] = calibration_seconds()
    yield


# --- costs and their comparison ------------------------------------------------------------------------
def costs_from_run(run: dict) -> dict[str, float | None]:
    """pytest-benchmark's JSON (as a dict) -> {fullname: cost in calibrations} for the guarded files' benchmarks;
    None where the run has no calibration (pytest was run without `-p tests.bench_baseline`)."""
    costs = {}
    for entry in run.get("benchmarks", []):
        name = entry["fullname"]
        if not name.startswith(GUARDED_FILES):
            continue
        calibration_s = entry.get("extra_info", {}).get("calibration_seconds")
        costs[name] = entry["stats"]["min"] / calibration_s if calibration_s else None
    return costs


@dataclass(frozen=True)
class Verdict:
    """One guarded benchmark against its baseline: `line` says it in words, `failed` when it is a regression."""

    name: str
    line: str
    failed: bool


def compare(costs: dict[str, float | None], baseline: dict[str, float], tolerance: float = TOLERANCE) -> list[Verdict]:
    """Each benchmark of this run (cost in calibrations, or None without one) against its baseline cost.

    >>> [v.failed for v in compare({"a": 14.0, "b": 16.0}, {"a": 12.0, "b": 12.0})]
    [False, True]
    >>> compare({"b": 16.0}, {"b": 12.0})[0].line
    'FAIL b: 1.33x its baseline (16 calibrations, baseline 12; the limit is 1.25x)'
    """
    verdicts = []
    for name in sorted(set(costs) | set(baseline)):
        cost, reference = costs.get(name), baseline.get(name)
        if name not in costs:
            verdicts.append(Verdict(name, f"not run {name} (baseline {reference:.3g})", False))
        elif cost is None:
            verdicts.append(Verdict(name, f"FAIL {name}: no calibration; run it with `make bench` "
                                          f"(pytest -p tests.bench_baseline ...)", True))
        elif reference is None:
            verdicts.append(Verdict(name, f"new {name}: {cost:.3g} calibrations, no baseline yet "
                                          f"(make bench-baseline)", False))
        else:
            slowdown = cost / reference
            failed = slowdown > 1 + tolerance
            verdicts.append(Verdict(name, f"{'FAIL' if failed else 'ok'} {name}: {slowdown:.2f}x its baseline "
                                          f"({cost:.3g} calibrations, baseline {reference:.3g}; the limit is "
                                          f"{1 + tolerance:.2f}x)", failed))
    return verdicts


# --- the baseline file -----------------------------------------------------------------------------------
def read_baseline(path: Path | None = None) -> dict[str, float]:
    """{fullname: cost in calibrations} from the baseline file (BASELINE unless `path`)."""
    document = json.loads((path or BASELINE).read_text())
    return {name: entry["calibrations"] for name, entry in document["benchmarks"].items()}


def write_baseline(run: dict, path: Path | None = None) -> int:
    """Write the baseline (BASELINE unless `path`) from a run's JSON, its calibrated guarded benchmarks only;
    returns how many it holds."""
    path = path or BASELINE
    entries = {}
    for entry in run.get("benchmarks", []):
        cost = costs_from_run({"benchmarks": [entry]}).get(entry["fullname"])
        if cost is not None:
            entries[entry["fullname"]] = {"calibrations": round(cost, 4), "seconds": round(entry["stats"]["min"], 6)}
    document = {
        "about": ABOUT,
        "regenerate": "make bench-baseline",
        "tolerance": TOLERANCE,
        "measured_with": {"torch": torch.__version__, "python": platform.python_version(),
                          "machine": platform.machine(), "cpus": os.cpu_count()},
        "benchmarks": dict(sorted(entries.items())),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return len(entries)


def main(argv: list[str]) -> int:
    """`check RUN.json` (exit 1 on a regression) or `update RUN.json` (write the baseline); 2 on bad usage."""
    if len(argv) != 2 or argv[0] not in ("check", "update") or not Path(argv[1]).is_file():
        print("usage: python -m tests.bench_baseline check|update RUN.json (pytest-benchmark's --benchmark-json "
              "output of a run with -p tests.bench_baseline)", file=sys.stderr)
        return 2
    run = json.loads(Path(argv[1]).read_text())
    if argv[0] == "update":
        print(f"{BASELINE.name}: {write_baseline(run)} benchmarks written")
        return 0
    verdicts = compare(costs_from_run(run), read_baseline())
    for verdict in verdicts:
        print(verdict.line)
    failed = [v for v in verdicts if v.failed]
    print(f"{len(failed)} of {len(verdicts)} benchmarks slower than their baseline allows" if failed
          else f"every benchmark within {TOLERANCE:.0%} of its baseline")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
