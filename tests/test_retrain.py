"""`--retrain-under-trained F`: under-trained cells run again at F times their steps, their first trials set aside.

A trial is marked under-trained by editing its trial file (whether a tiny run ends still improving is up to the
optimiser); everything else is a real sweep of the mlp on copy, two seeds at two lengths.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from membench.runners import retrain
from membench.runners.cli import main
from membench.runners.spec import load_spec
from membench.runners.sweep import run_sweep
from tests.helpers import tiny_spec


def _spec(tmp_path):
    return load_spec(None, tiny_spec(tmp_path, {"copy": {"params": {"content_vocab": 4}}}, models=["mlp"],
                                     lengths=[8, 12], seeds=[0, 1]), {})


def _mark_under_trained(out: Path, train_len: int, seed: int) -> str | None:
    """Edit the trial files so that (train_len, seed) alone says under-trained; returns its trial id (None:
    there is no such trial, and none says under-trained)."""
    marked = None
    for path in (out / "trials").glob("*.json"):
        payload = json.loads(path.read_text())
        under = payload["config"]["train_len"] == train_len and payload["config"]["seed"] == seed
        for row in payload["runs"]:
            row["under_trained"] = under
        path.write_text(json.dumps(payload))
        marked = payload["trial_id"] if under else marked
    return marked


@pytest.fixture
def swept(tmp_path):
    out = tmp_path / "out"
    spec = _spec(tmp_path)
    first = run_sweep(spec, out, progress=False)
    assert sorted(first["steps"].unique()) == [10] and first["trial_id"].nunique() == 4
    under = _mark_under_trained(out, 8, 1)
    assert under is not None
    return spec, out, first, under


def test_the_cell_of_an_under_trained_trial_runs_again_at_twice_its_steps_every_seed(swept):
    spec, out, first, under = swept
    runs = run_sweep(spec, out, progress=False, retrain_under_trained=2)

    trained = runs[runs["is_train_len"]].set_index(["train_len", "seed"])["steps"].sort_index()
    assert trained.to_dict() == {(8, 0): 20, (8, 1): 20, (12, 0): 10, (12, 1): 10}  # both seeds of L8, not L12
    old_l8 = set(first.loc[first["train_len"] == 8, "trial_id"])
    assert under in old_l8
    table = pd.read_csv(out / "runs.csv")
    assert not set(table["trial_id"]) & old_l8  # the first trials left the main tables ...
    aside = pd.read_csv(out / retrain.SUPERSEDED_DIR / "runs.csv")
    assert set(aside["trial_id"]) == old_l8  # ... for superseded/, rows and trial files
    assert {p.stem for p in (out / retrain.SUPERSEDED_DIR / "trials").glob("*.json")} == old_l8
    assert len(aside) == len(first[first["train_len"] == 8])
    for name in ("lags", "curves"):
        assert set(pd.read_csv(out / retrain.SUPERSEDED_DIR / f"{name}.csv")["trial_id"]) == old_l8
    replaced = json.loads((out / retrain.RETRAINED_FILE).read_text())
    assert set(replaced) == old_l8 and {c["steps"] for c in replaced.values()} == {20}


def test_a_later_run_without_the_flag_keeps_the_replacements(swept, capsys):
    spec, out, _, _ = swept
    run_sweep(spec, out, progress=False, retrain_under_trained=2)
    before = (out / "runs.csv").read_bytes()
    runs = run_sweep(spec, out, progress=True)
    assert "4 trials, 4 finished before, 0 to run" in capsys.readouterr().err
    assert sorted(runs.loc[runs["is_train_len"], "steps"]) == [10, 10, 20, 20]
    assert (out / "runs.csv").read_bytes() == before


def test_a_replacement_still_under_trained_grows_again(swept):
    spec, out, _, _ = swept
    run_sweep(spec, out, progress=False, retrain_under_trained=2)
    _mark_under_trained(out, 8, 0)  # (12's trials marked not under-trained again)
    runs = run_sweep(spec, out, progress=False, retrain_under_trained=1.5)
    assert sorted(runs.loc[runs["is_train_len"] & (runs["train_len"] == 8), "steps"]) == [30, 30]
    assert pd.read_csv(out / retrain.SUPERSEDED_DIR / "runs.csv")["trial_id"].nunique() == 4  # 2 first + 2 second


def _set_accuracy(out: Path, accuracy: dict[int, float], column: str = "accuracy") -> None:
    """Edit the trial files so that each trial's runs rows read `accuracy[its train_len]` in `column`."""
    for path in (out / "trials").glob("*.json"):
        payload = json.loads(path.read_text())
        for row in payload["runs"]:
            row[column] = accuracy[payload["config"]["train_len"]]
        path.write_text(json.dumps(payload))


def test_a_cell_near_chance_where_a_shorter_length_was_learned_runs_again_once(swept):
    spec, out, _, _ = swept
    _mark_under_trained(out, 8, 5)  # no trial says under-trained
    _set_accuracy(out, {8: 0.9, 12: 0.2}, "scaled_accuracy")  # above chance at 12: nothing changes
    runs = run_sweep(spec, out, progress=False, retrain_under_trained=2)
    assert sorted(runs.loc[runs["is_train_len"], "steps"]) == [10, 10, 10, 10]
    _set_accuracy(out, {8: 0.9, 12: 0.02}, "scaled_accuracy")  # learned at 8, near chance at 12
    runs = run_sweep(spec, out, progress=False, retrain_under_trained=2)
    trained = runs[runs["is_train_len"]].set_index(["train_len", "seed"])["steps"].sort_index()
    assert trained.to_dict() == {(8, 0): 10, (8, 1): 10, (12, 0): 20, (12, 1): 20}
    _mark_under_trained(out, 8, 5)
    _set_accuracy(out, {8: 0.9, 12: 0.02}, "scaled_accuracy")  # still near chance at twice the steps ...
    runs = run_sweep(spec, out, progress=False, retrain_under_trained=2)
    assert sorted(runs.loc[runs["is_train_len"] & (runs["train_len"] == 12), "steps"]) == [20, 20]  # ... it counts


def test_only_a_family_that_learned_a_shorter_length_makes_a_near_chance_cell_fade():
    from membench.runners.trial import EvalSlice, TrialConfig

    def config(train_len: int, seed: int = 0, lr: float = 1e-3) -> TrialConfig:
        return TrialConfig("copy", {}, "lstm", {}, 8, 1, train_len, seed, lr, 4, 500,
                           (EvalSlice(f"L{train_len}", train_len, 8),))

    def faded(*trials: tuple[TrialConfig, float]) -> list[int]:
        runs = pd.DataFrame({"trial_id": [c.trial_id for c, _ in trials], "scaled_accuracy": [a for _, a in trials],
                             "is_train_len": True})
        cells = retrain.faded_cells({c.trial_id: c for c, _ in trials}, runs)
        return sorted({c.train_len for c, _ in trials if retrain._cell(c) in cells})

    assert faded((config(64), 0.9), (config(128), 0.5), (config(256), 0.05)) == [256]
    assert faded((config(64), 0.9), (config(256), 0.1)) == []  # 0.1 is not near chance
    assert faded((config(64), 0.45), (config(256), 0.0)) == []  # nor is 0.45 learned: near chance everywhere
    assert faded((config(256), 0.9), (config(64), 0.0)) == []  # only a shorter length's success counts
    assert faded((config(64), 0.9), (config(256, lr=3e-3), 0.0)) == []  # another family config
    assert faded((config(64), 0.9), (config(256), float("nan"))) == []  # a failed trial: nothing
    # seed means: one seed at 0.3 lifts the cell's mean (0.15) off chance
    assert faded((config(64), 0.9), (config(256), 0.0), (config(256, seed=1), 0.3)) == []


def test_a_cell_a_longer_length_outdid_with_more_steps_runs_again(swept):
    spec, out, _, _ = swept
    _mark_under_trained(out, 12, 0)  # L12 first: 20 steps, L8 10
    runs = run_sweep(spec, out, progress=False, retrain_under_trained=2)
    assert sorted(runs.loc[runs["is_train_len"], "steps"]) == [10, 10, 20, 20]
    _mark_under_trained(out, 12, 5)  # no trial says under-trained any more ...
    _set_accuracy(out, {8: 0.55, 12: 0.64})  # ... and L12 beats L8 by less than OUTDONE_BY: nothing changes
    runs = run_sweep(spec, out, progress=False, retrain_under_trained=2)
    assert sorted(runs.loc[runs["is_train_len"] & (runs["train_len"] == 8), "steps"]) == [10, 10]
    _set_accuracy(out, {8: 0.55, 12: 0.95})  # the longer length, with twice the steps, does far better
    runs = run_sweep(spec, out, progress=False, retrain_under_trained=2)
    trained = runs[runs["is_train_len"]].set_index(["train_len", "seed"])["steps"].sort_index()
    assert trained.to_dict() == {(8, 0): 20, (8, 1): 20, (12, 0): 20, (12, 1): 20}  # L8's budget held it back


def test_only_a_longer_length_with_a_larger_budget_outdoes_a_cell():
    from membench.runners.trial import EvalSlice, TrialConfig

    def config(train_len: int, steps: int, seed: int = 0, lr: float = 1e-3) -> TrialConfig:
        return TrialConfig("copy", {}, "lstm", {}, 8, 1, train_len, seed, lr, 4, steps,
                           (EvalSlice(f"L{train_len}", train_len, 8),))

    def outdone(*trials: tuple[TrialConfig, float]) -> list[tuple[int, int]]:
        runs = pd.DataFrame({"trial_id": [c.trial_id for c, _ in trials], "accuracy": [a for _, a in trials],
                             "is_train_len": True})
        cells = retrain.outdone_cells({c.trial_id: c for c, _ in trials}, runs)
        return sorted({(c.train_len, c.steps) for c, _ in trials if retrain._cell(c) in cells})

    assert outdone((config(64, 500), 0.6), (config(256, 1000), 0.9)) == [(64, 500)]
    assert outdone((config(64, 500), 0.6), (config(256, 500), 0.9)) == []  # the same budget: length is the cause
    assert outdone((config(256, 500), 0.6), (config(64, 1000), 0.9)) == []  # only a longer length outdoes
    assert outdone((config(64, 500), 0.6), (config(256, 1000, lr=3e-3), 0.9)) == []  # another family config
    assert outdone((config(64, 500), 0.6), (config(256, 1000), float("nan"))) == []  # a failed trial: nothing
    # seed means: one seed of the short cell at 0.9 brings its mean to 0.75, within 0.1 of the long cell's 0.84
    assert outdone((config(64, 500), 0.6), (config(64, 500, seed=1), 0.9), (config(256, 1000), 0.84)) == []


def test_no_under_trained_cell_changes_nothing(tmp_path):
    spec, out = _spec(tmp_path), tmp_path / "out"
    run_sweep(spec, out, progress=False)
    _mark_under_trained(out, 8, 5)  # no such trial: every trial marked not under-trained
    before = set(pd.read_csv(out / "runs.csv")["trial_id"])
    runs = run_sweep(spec, out, progress=False, retrain_under_trained=2)
    assert set(runs["trial_id"]) == set(pd.read_csv(out / "runs.csv")["trial_id"]) == before
    assert not (out / retrain.RETRAINED_FILE).exists() and not (out / retrain.SUPERSEDED_DIR).exists()


def test_a_move_cut_short_is_finished_by_the_next_run(swept):
    """retrained.json written, rows not moved yet (a kill in between), trial files gone (a fresh clone)."""
    spec, out, first, under = swept
    configs = {t.trial_id: t for t in spec.trials}
    runs = run_sweep(spec, out, progress=False)  # nothing runs: the tables catch up with the edited trial files
    retrain.record(out, {}, retrain.replacements_for(configs, runs, 2))
    for path in (out / "trials").glob("*.json"):
        path.unlink()  # every row is now a kept row, without a file
    run_sweep(spec, out, progress=False)
    table = pd.read_csv(out / "runs.csv")
    assert table["trial_id"].nunique() == 4 and sorted(table.loc[table["is_train_len"], "steps"]) == [10, 10, 20, 20]
    assert set(pd.read_csv(out / retrain.SUPERSEDED_DIR / "runs.csv")["trial_id"]) == set(
        first.loc[first["train_len"] == 8, "trial_id"])


@pytest.mark.parametrize("factor", ["1", "0.5", "two", "nan", "1000"])
def test_a_factor_that_does_not_grow_the_budget_is_one_line(tmp_path, capsys, factor):
    code = None
    try:
        code = main(["run", "--spec", tiny_spec(tmp_path, models=["mlp"]), "--out", str(tmp_path / "out"),
                     "--retrain-under-trained", factor])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert "--retrain-under-trained: must be a number above 1" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_plan_against_the_directory_plans_the_larger_budgets(swept, tmp_path, capsys):
    spec, out, _, _ = swept
    run_sweep(spec, out, progress=False, retrain_under_trained=2)
    spec_file = str(tmp_path / "spec.toml")

    def trials_measured() -> int:  # the trials of the spec that plan finds measured in out
        capsys.readouterr()
        assert main(["plan", "--spec", spec_file, "--against", str(out)]) == 0
        shown = capsys.readouterr().out.split("measured / estimated ms per step")[1]
        return int(next(line for line in shown.splitlines() if line.startswith("mlp")).split()[1])

    assert trials_measured() == 4  # two first at 12, two replacements at 8
    (out / retrain.RETRAINED_FILE).unlink()
    assert trials_measured() == 2  # the first trials at 8 left for superseded/


def test_plan_against_a_run_with_under_trained_cells_says_how_to_run_them_again(swept, tmp_path, capsys):
    _, out, _, _ = swept
    spec_file = str(tmp_path / "spec.toml")
    main(["run", "--spec", spec_file, "--out", str(out), "--quiet"])  # the tables catch up with the edited file
    capsys.readouterr()
    assert main(["plan", "--spec", spec_file, "--against", str(out)]) == 0
    shown = capsys.readouterr().out
    assert f"copy mlp L8 (2 trial(s)): under-trained after 10 steps in {out}" in shown
    assert f"membench run --spec {spec_file} --out {out} --retrain-under-trained 2" in shown


def test_plan_against_a_run_names_the_near_chance_cells_the_flag_would_grow(swept, tmp_path, capsys):
    _, out, _, _ = swept
    _mark_under_trained(out, 8, 5)
    _set_accuracy(out, {8: 0.9, 12: 0.02}, "scaled_accuracy")
    spec_file = str(tmp_path / "spec.toml")
    main(["run", "--spec", spec_file, "--out", str(out), "--quiet"])  # the tables catch up with the edited files
    capsys.readouterr()
    assert main(["plan", "--spec", spec_file, "--against", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "(and 1 cell(s) near chance where a shorter length was learned)" in shown
    assert f"--out {out} --retrain-under-trained 2" in shown
