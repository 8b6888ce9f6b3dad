"""results/reference-cpu, the reference leaderboard (recipe reference_cpu): its README states what its tables
hold, and once every trial of the recipe is in, the folder meets the bar a cited leaderboard must: every task x
every family, three lengths up to 256 or more, three seeds a cell, at most 10 % of the cells under-trained, and
it is the README's headline leaderboard."""

from __future__ import annotations

from pathlib import Path

import pytest

from membench.memtasks import list_tasks
from membench.models import list_models
from membench.runners.reporting.leaderboard import cell_table, trial_table
from membench.runners.reporting.results import read_results
from membench.runners.spec import load_spec

ROOT = Path(__file__).parent.parent
FOLDER = ROOT / "results" / "reference-cpu"
pytestmark = pytest.mark.skipif(not (FOLDER / "runs.csv").is_file(), reason="results/reference-cpu not committed")


@pytest.fixture(scope="module")
def reference():
    """(runs, the cells run so far, how many of them are under-trained, the recipe's number of trials)."""
    runs = read_results(FOLDER).runs
    cells = cell_table(trial_table(runs))
    cells = cells[cells["status"] != "missing"]
    return runs, cells, int((cells["under_trained"] > 0).sum()), len(load_spec("reference_cpu").trials)


def test_the_readme_states_the_trials_and_under_trained_cells_its_tables_hold(reference):
    runs, cells, under_trained, total = reference
    readme = (FOLDER / "README.md").read_text()
    assert f"{runs['trial_id'].nunique():,} of {total:,} trials" in readme, "update results/reference-cpu/README.md"
    assert f"{under_trained} of {len(cells)} cells" in readme, "update results/reference-cpu/README.md"


def test_a_complete_reference_run_meets_the_bar_and_heads_the_readme(reference):
    runs, cells, under_trained, total = reference
    if runs["trial_id"].nunique() < total:
        pytest.skip(f"the reference run is not complete: {runs['trial_id'].nunique()} of {total} trials")
    assert set(cells["task"]) == set(list_tasks()) and set(cells["model"]) == set(list_models())
    for task, lengths in cells.groupby("task")["train_len"]:
        assert lengths.nunique() >= 3 and lengths.max() >= 256, task
    assert (cells["seeds"] >= 3).all()
    assert under_trained <= 0.10 * len(cells), f"{under_trained} of {len(cells)} cells under-trained"
    headline = (ROOT / "README.md").read_text().split("\n## ")[1]  # the first section after the introduction
    assert "results/reference-cpu" in headline
    table = [line for line in (FOLDER / "leaderboard.md").read_text().splitlines() if line.startswith("|")]
    assert "\n".join(table) in headline, "copy results/reference-cpu/leaderboard.md's table into the README"
    assert "IN PROGRESS" not in (FOLDER / "README.md").read_text()


# --- the plateau rule's audit: results/reference-cpu/plateau-rule --------------------------------------------
def _audit_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("plateau_audit", FOLDER / "plateau-rule" / "audit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not (FOLDER / "plateau-rule" / "plateau_audit.csv").is_file(), reason="no audit committed")
def test_the_committed_audit_is_what_its_script_finds_and_shows_the_stop_the_docs_cite():
    import pandas as pd

    audit = _audit_module().audit()
    committed = pd.read_csv(FOLDER / "plateau-rule" / "plateau_audit.csv").set_index(["task", "model", "train_len",
                                                                                     "seed"])
    assert committed.index.tolist() == audit.index.tolist(), "run python results/reference-cpu/plateau-rule/audit.py"
    assert committed["gain"].round(4).tolist() == audit["gain"].round(4).tolist()
    cited = audit.loc[("associative_recall", "transformer", 256, 0)]  # docs/sweeps.md, docs/presets.md
    assert cited["accuracy"] < 0.2 and cited["steps"] == 450 and cited["stop_reason"] == "plateau"
    assert cited["accuracy_full"] >= 0.99 and cited["steps_full"] <= 700
