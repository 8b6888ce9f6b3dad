"""The benchmark baseline's check (tests/bench_baseline.py), fed made-up timings: a guarded benchmark more than 25 %
slower than its baseline fails `make bench`, one less than 25 % slower passes; and the committed baseline is
well formed. Fast: nothing here times anything but the calibration."""

from __future__ import annotations

import json

import pytest

from tests import bench_baseline
from tests.bench_baseline import GUARDED_FILES, compare, costs_from_run, main, read_baseline, write_baseline

GENERATION = "tests/test_bench_tasks.py::test_associative_recall_20k_cpu_vs_per_row_numpy[T256-kv64]"
STEP = "tests/test_bench_models.py::test_step_time[transformer-T256-cpu]"


def run_json(timings: dict[str, tuple[float, float | None]]) -> dict:
    """pytest-benchmark's JSON layout for {fullname: (best seconds, calibration seconds or None)}."""
    return {"benchmarks": [
        {"fullname": name, "stats": {"min": best, "median": best * 1.1},
         "extra_info": {} if calibration is None else {"calibration_seconds": calibration}}
        for name, (best, calibration) in timings.items()
    ]}


def test_cost_is_the_best_time_in_calibrations_for_guarded_files_only():
    run = run_json({GENERATION: (0.070, 0.005), STEP: (0.2, None), "tests/test_bench_delta.py::test_x": (1.0, 0.01)})
    assert costs_from_run(run) == {GENERATION: pytest.approx(14.0), STEP: None}


@pytest.mark.parametrize("seconds, fails", [(0.060, False), (0.074, False), (0.076, True), (0.120, True),
                                            (0.030, False)])
def test_a_slowdown_over_25_percent_fails_and_under_it_passes(seconds, fails):
    """Baseline 12 calibrations; with a 5 ms calibration, 75 ms is exactly 1.25x."""
    verdicts = compare(costs_from_run(run_json({GENERATION: (seconds, 0.005)})), {GENERATION: 12.0})
    assert [v.failed for v in verdicts] == [fails]
    assert verdicts[0].line.startswith("FAIL" if fails else "ok")
    assert f"{seconds / 0.005 / 12.0:.2f}x its baseline" in verdicts[0].line


def test_a_faster_machine_with_the_same_code_passes():
    """Both the benchmark and its calibration twice as fast: the same cost."""
    slow = costs_from_run(run_json({STEP: (0.20, 0.010)}))
    fast = costs_from_run(run_json({STEP: (0.10, 0.005)}))
    assert not compare(fast, slow)[0].failed and fast == slow


def test_new_and_missing_benchmarks_are_listed_without_failing_and_uncalibrated_ones_fail():
    verdicts = {v.name: v for v in compare({GENERATION: 5.0, STEP: None}, {"tests/test_bench_eval.py::cuda": 3.0})}
    assert verdicts[GENERATION].line.startswith("new") and not verdicts[GENERATION].failed
    assert verdicts["tests/test_bench_eval.py::cuda"].line.startswith("not run")
    assert verdicts[STEP].failed and "make bench" in verdicts[STEP].line


def test_check_exits_1_on_a_regression_and_update_writes_a_baseline_that_checks_clean(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_baseline, "BASELINE", tmp_path / "baseline.json")
    reference, slower = tmp_path / "reference.json", tmp_path / "slower.json"
    reference.write_text(json.dumps(run_json({GENERATION: (0.060, 0.005), STEP: (0.2, 0.01)})))
    slower.write_text(json.dumps(run_json({GENERATION: (0.080, 0.005), STEP: (0.22, 0.01)})))

    assert main(["update", str(reference)]) == 0
    written = json.loads((tmp_path / "baseline.json").read_text())
    assert written["tolerance"] == 0.25 and "make bench-baseline" in written["about"]
    assert main(["check", str(reference)]) == 0
    assert main(["check", str(slower)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {GENERATION}: 1.33x" in out and f"ok {STEP}: 1.10x" in out
    assert "1 of 2 benchmarks slower than their baseline allows" in out


def test_bad_usage_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["check"]) == 2
    assert main(["compare", str(tmp_path)]) == 2
    assert main(["check", str(tmp_path / "missing.json")]) == 2
    assert capsys.readouterr().err.count("\n") == 3


def test_the_committed_baseline_covers_generation_steps_and_evaluation():
    document = json.loads(bench_baseline.BASELINE.read_text())
    assert document["tolerance"] == bench_baseline.TOLERANCE and document["regenerate"] == "make bench-baseline"
    costs = read_baseline()
    assert all(name.startswith(GUARDED_FILES) and cost > 0 for name, cost in costs.items())
    for guarded in GUARDED_FILES:  # each kind of benchmark has at least one reference
        assert any(name.startswith(guarded) for name in costs), guarded
    assert any("test_associative_recall_20k_cpu_vs_per_row_numpy" in name for name in costs)


def test_calibration_takes_milliseconds_and_restores_the_thread_count():
    import torch

    threads = torch.get_num_threads()
    seconds = bench_baseline.calibration_seconds(rounds=2)
    assert 0 < seconds < 1 and torch.get_num_threads() == threads


def test_write_baseline_keeps_only_calibrated_guarded_benchmarks(tmp_path):
    path = tmp_path / "b.json"
    count = write_baseline(run_json({GENERATION: (0.06, 0.005), STEP: (0.2, None), "tests/other.py::t": (1, 1)}), path)
    assert count == 1 and set(read_baseline(path)) == {GENERATION}
