"""Charts and `membench charts`: every chart file from synthetic tables, stable bytes on regeneration,
one colour per family everywhere, optional tables skipped cleanly, and one-line errors that write nothing."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from membench.runners.cli import main
from membench.runners.reporting.charts import CHARTS, Sweep, accuracy_vs_length, draw_charts, heatmap
from membench.runners.reporting.figures import count_label, family_styles
from membench.runners.reporting.results import read_results
from membench.runners.schema import RUNS_COLUMNS
from tests.helpers import run_cli
from tests.sweeps import known_runs, trial, write_sweep

STEMS = ["accuracy_vs_length", "heatmap", "accuracy_vs_lag", "length_generalisation", "accuracy_vs_eval_length",
         "accuracy_vs_cost", "training_curves"]


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """One synthetic sweep, published once with `membench charts` (the slow part, shared by the tests)."""
    directory = write_sweep(tmp_path_factory.mktemp("sweep"))
    assert main(["charts", str(directory)]) == 0
    return directory


def test_every_chart_is_written_as_png_and_svg(drawn):
    assert [c.__name__ for c in CHARTS] == STEMS
    for stem in STEMS:
        for fmt in ("png", "svg"):
            path = drawn / "charts" / f"{stem}.{fmt}"
            assert path.is_file() and path.stat().st_size > 1000, path
        assert (drawn / "charts" / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((drawn / "charts").glob(".*"))  # no temporary file left behind


def test_heatmap_writes_the_values_in_and_marks_failures(drawn):
    svg = (drawn / "charts" / "heatmap.svg").read_text()
    for text in ("0.95", "0.30*", "n/a", "mlp", "lstm", "gru"):  # a failed seed marked, a missing cell n/a
        assert text in svg


def test_a_timed_out_seed_is_marked_but_keeps_its_accuracy(tmp_path):
    runs = known_runs()
    capped = (runs["task"] == "copy") & (runs["model"] == "gru") & (runs["train_len"] == 128)
    runs.loc[capped, ["status", "error"]] = ["timeout", "time cap 10s reached"]
    sweep = Sweep.from_results(read_results(write_sweep(tmp_path / "sweep", runs)))
    heatmap(sweep, tmp_path)
    accuracy_vs_length(sweep, tmp_path)
    svg = (tmp_path / "heatmap.svg").read_text()
    assert "0.89+" in svg and "0.95+" not in svg and "+: a seed hit its time cap" in svg
    assert "stopped by its time cap" in (tmp_path / "accuracy_vs_length.svg").read_text()
    plain = Sweep.from_results(read_results(write_sweep(tmp_path / "plain")))
    heatmap(plain, tmp_path / "plain")
    accuracy_vs_length(plain, tmp_path / "plain")
    assert "0.89+" not in (tmp_path / "plain" / "heatmap.svg").read_text()
    assert "stopped by its time cap" not in (tmp_path / "plain" / "accuracy_vs_length.svg").read_text()


def test_regenerating_gives_identical_leaderboard_and_svgs(drawn, capsys):
    names = ["leaderboard.md", "leaderboard.csv", *[f"charts/{s}.svg" for s in STEMS]]
    before = {name: (drawn / name).read_bytes() for name in names}
    code, out, _ = run_cli(capsys, "charts", str(drawn))
    assert code == 0 and "| 1= | lstm |" in out
    assert {name: (drawn / name).read_bytes() for name in names} == before


def test_a_family_keeps_its_colour_whatever_the_sweep_holds():
    everyone = family_styles(["mlp", "rnn", "lstm", "gru"])
    subset = family_styles(["gru", "mlp"])
    assert subset["gru"] == everyone["gru"] and subset["mlp"] == everyone["mlp"]
    assert len({str(s["color"]) for s in everyone.values()}) == 4
    assert "unregistered_family" in family_styles(["unregistered_family", "lstm"])


def test_missing_lag_and_curve_tables_skip_only_their_charts(tmp_path):
    rows = trial("copy", "gru", 64, 0.95, generalisation=(0.9, 0.5)) + trial("copy", "lstm", 64, 0.5)
    directory = write_sweep(tmp_path, pd.DataFrame(rows, columns=RUNS_COLUMNS))
    (directory / "lags.csv").unlink()
    (directory / "curves.csv").write_text("")
    paths = draw_charts(read_results(directory), directory / "charts")
    assert sorted({p.stem for p in paths}) == sorted(set(STEMS) - {"accuracy_vs_lag", "training_curves"})


@pytest.mark.parametrize("case", ["missing", "empty", "no_runs"])
def test_bad_directory_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, case):
    target = tmp_path / "results"
    if case != "missing":
        target.mkdir()
    if case == "no_runs":
        (target / "lags.csv").write_text("trial_id\n")
    before = sorted(tmp_path.rglob("*"))
    code, out, err = run_cli(capsys, "charts", str(target))
    assert code == 2 and err.startswith("membench: error:") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and str(target) in err
    assert sorted(tmp_path.rglob("*")) == before


def test_cost_charts_are_drawn_from_cost_csv(tmp_path):
    directory = write_sweep(tmp_path, pd.DataFrame(trial("copy", "gru", 64, 0.95), columns=RUNS_COLUMNS))
    pd.DataFrame({"model": ["gru"] * 3, "seq_len": [64, 128, 256], "batch_size": [8] * 3,
                  "ms_per_step": [1.0, 2.0, 4.0], "peak_memory_mb": [1.0, 2.0, 4.0], "flops": [1e6, 2e6, 4e6],
                  "attention_flops": [0.0] * 3, "tflops_per_s": [1e-3] * 3, "tokens_per_second": [1e5] * 3,
                  "state_size": [64] * 3, "status": ["ok"] * 3, "device": ["cpu"] * 3}
                 ).to_csv(directory / "cost.csv", index=False)
    pd.DataFrame({"model": ["gru"], "time_exponent": [1.0], "memory_exponent": [1.0], "flops_exponent": [1.0],
                  "n_points": [3], "min_len": [64], "max_len": [256]}).to_csv(directory / "cost_fit.csv", index=False)
    paths = draw_charts(read_results(directory), directory / "charts")
    assert set(STEMS) < {p.stem for p in paths} and any(p.stem.startswith("cost_") for p in paths)
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)


def test_count_labels_are_short():
    assert [count_label(v) for v in (512, 50_000, 150_000, 1_250_000, 3e9, 0)] == [
        "512", "50k", "150k", "1.25M", "3B", "0"]


def test_accuracy_vs_length_draws_the_seed_interval_when_cells_have_seeds(tmp_path):
    rows = [row for seed, acc in enumerate((0.8, 0.9, 0.85)) for row in trial("copy", "lstm", 64, acc, seed=seed)]
    rows += [row for seed, acc in enumerate((0.8, 0.9)) for row in trial("copy", "lstm", 128, acc, seed=seed)]
    sweep = Sweep.from_results(read_results(write_sweep(tmp_path / "seeds", pd.DataFrame(rows, columns=RUNS_COLUMNS))))
    assert sweep.cells["ci_low"].notna().all() and (sweep.cells["ci_low"] < sweep.cells["ci_high"]).all()
    (tmp_path / "charts").mkdir()
    (svg,) = [p for p in accuracy_vs_length(sweep, tmp_path / "charts") if p.suffix == ".svg"]
    assert "95 % bootstrap interval over seeds" in svg.read_text()
    one_seed_rows = pd.DataFrame(rows[:4], columns=RUNS_COLUMNS)
    one_seed = Sweep.from_results(read_results(write_sweep(tmp_path / "one", one_seed_rows)))
    (svg,) = [p for p in accuracy_vs_length(one_seed, tmp_path / "charts") if p.suffix == ".svg"]
    assert "bootstrap" not in svg.read_text()


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: the charts are drawn in one process")
def test_charts_drawn_by_two_processes_are_the_bytes_one_process_draws(tmp_path):
    rows = trial("copy", "gru", 64, 0.95, generalisation=(0.9, 0.5)) + trial("copy", "lstm", 64, 0.5)
    directory = write_sweep(tmp_path, pd.DataFrame(rows, columns=RUNS_COLUMNS))
    results = read_results(directory)
    alone = draw_charts(results, tmp_path / "alone")
    shared = draw_charts(results, tmp_path / "shared", parallel=True)
    assert [p.name for p in shared] == [p.name for p in alone] and len(alone) >= 2 * len(STEMS) - 4
    assert all((tmp_path / "shared" / p.name).read_bytes() == p.read_bytes() for p in alone)
