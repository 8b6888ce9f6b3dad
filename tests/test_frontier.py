"""The recall-versus-state frontier (runners/reporting/frontier.py): points, Pareto fronts, memory
efficiency, and a tiny two-width sweep that draws it in seconds."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from membench.runners.reporting.frontier import efficiency_table, frontier_table, has_sizes, pareto_front
from membench.runners.schema import RUNS_COLUMNS
from tests.helpers import run_cli, tiny_spec
from tests.sweeps import trial


def window_runs() -> pd.DataFrame:
    """sliding_window at three windows (the module docstring's example) and lstm at one size."""
    rows = []
    for window, state, accs in ((8, 2048, (0.40, 0.40)), (16, 4096, (0.93, 0.97)), (64, 16384, (0.93, 0.93))):
        for seed, acc in enumerate(accs):
            for row in trial("copy", "lstm", 64, acc, seed=seed, generalisation=(0.5, 0.5)):
                rows.append({**row, "model": "sliding_window", "model_params": json.dumps({"window": window}),
                             "state_size": state, "trial_id": f"{row['trial_id']}-w{window}"})
    rows += trial("copy", "lstm", 64, 0.5)
    return pd.DataFrame(rows, columns=RUNS_COLUMNS)


def test_points_fronts_and_memory_efficiency():
    runs = window_runs()
    assert has_sizes(runs) and not has_sizes(runs[runs["model"] == "lstm"])
    table = frontier_table(runs)
    plain = table[(table["slice"] == "L64") & (table["model"] == "sliding_window")].set_index("state_size")
    assert plain.loc[4096, "accuracy"] == pytest.approx(0.95) and plain.loc[4096, "seeds"] == 2
    assert plain.loc[4096, "ci_low"] <= 0.95 <= plain.loc[4096, "ci_high"]
    assert plain["on_pareto_front"].to_dict() == {2048: True, 4096: True, 16384: False}
    efficiency = efficiency_table(table).set_index("model")
    assert efficiency.loc["sliding_window", "state_for_0.9"] == 4096
    assert pd.isna(efficiency.loc["sliding_window", "state_for_0.99"])


def test_a_point_of_unknown_state_is_never_on_the_front():
    points = pd.DataFrame({"state_size": [float("nan"), 100.0, 50.0], "accuracy": [1.0, 0.9, 0.9]})
    assert pareto_front(points) == [2]


@pytest.mark.slow
def test_a_tiny_two_width_sweep_draws_the_frontier(tmp_path, capsys):
    spec = tiny_spec(tmp_path, {"copy": {"params": {"content_vocab": 4}}}, models=["lstm", "sliding_window"],
                     d_models=[8, 16], d_model=None, steps=4, eval_every=2, eval_sequences=8)
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "leaderboard", "--spec", spec, "--out", str(out), "--quiet")
    assert code == 0, err
    frontier = pd.read_csv(out / "frontier.csv")
    assert set(frontier["d_model"]) == {8, 16} and frontier["on_pareto_front"].any()
    assert "smallest state" in (out / "frontier.md").read_text()
    for stem in ("recall_vs_state", "recall_vs_width"):
        assert (out / "charts" / f"{stem}.svg").is_file() and (out / "charts" / f"{stem}.png").is_file()
    before = {p.name: p.read_bytes() for p in [out / "frontier.csv", out / "frontier.md",
                                                 out / "charts" / "recall_vs_state.svg"]}
    assert run_cli(capsys, "charts", str(out))[0] == 0
    assert {p.name: p.read_bytes() for p in [out / "frontier.csv", out / "frontier.md",
                                              out / "charts" / "recall_vs_state.svg"]} == before


def test_the_frontier_recipes_sweep_what_their_figures_need():
    from membench.runners.spec import RECIPES, load_spec

    assert {"zoology_fig2", "frontier_cpu"} <= set(RECIPES)
    fig2 = load_spec(None, "zoology_fig2").trials
    assert {t.d_model for t in fig2} == {64, 128, 256, 512} and len({t.lr for t in fig2}) == 4
    assert {(t.train_len, t.task_params["num_kv_pairs"]) for t in fig2} == {(64, 4), (128, 8), (256, 16), (512, 64)}
    assert {"transformer", "hyena", "based", "deltanet"} <= {t.model for t in fig2}
    cpu = load_spec(None, "frontier_cpu").trials
    assert {t.d_model for t in cpu} == {16, 32, 64} and all(t.budget == "plateau" for t in cpu)
    assert {t.model_params["window"] for t in cpu if t.model == "sliding_window"} == {8, 16, 32}
