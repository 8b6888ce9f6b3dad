"""Length generalisation: a trial trained on lengths drawn from [lo, hi] each step and evaluated at longer
lengths (train_length_range, eval_lengths); its rows record the trained range apart from the evaluated length."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from membench.checks import ConfigError
from membench.runners.reporting.charts import Sweep
from membench.runners.reporting.length_generalisation import (
    accuracy_vs_eval_length,
    length_table,
    write_length_generalisation,
)
from membench.runners.reporting.results import read_results
from membench.runners.schema import RUNS_COLUMNS
from membench.runners.spec import load_spec
from membench.runners.train import Training, length_schedule
from membench.runners.trial import EvalSlice, TrialConfig, run_trial
from tests.helpers import run_cli
from tests.sweeps import trial

BASE = dict(task="copy", task_params={}, model="mlp", model_params={}, d_model=8, n_layers=1, seed=0, lr=1e-2,
            batch_size=4, steps=30, eval_every=10, log_every=10)


def ranged(**change) -> TrialConfig:
    fields = dict(BASE, train_len=16, train_length_range=(6, 16),
                  eval_slices=(EvalSlice("L16", 16, 8), EvalSlice("L32", 32, 8)))
    return TrialConfig(**{**fields, **change})


def test_each_batch_has_a_length_drawn_from_the_range():
    config = ranged()
    training = Training(config.build_model(), config, torch.device("cpu"), "none")
    lengths = [training.draw(step)[0].shape[1] for step in range(config.steps)]  # (B, T) inputs: T
    assert all(6 <= n <= 16 for n in lengths)
    assert len(set(lengths)) >= 4  # they vary (30 draws from 11 lengths)
    assert lengths == training.lengths


def test_the_same_seed_draws_the_same_lengths_and_another_seed_others():
    assert length_schedule((6, 16), 50, seed=3) == length_schedule((6, 16), 50, seed=3)
    assert length_schedule((6, 16), 50, seed=3) != length_schedule((6, 16), 50, seed=4)
    assert set(length_schedule((6, 8), 200, seed=0)) == {6, 7, 8}  # both ends are drawn


def test_rows_carry_the_trained_range_and_the_evaluated_length():
    payload = run_trial(ranged())
    rows = {r["slice"]: r for r in payload["runs"]}
    assert [(r["train_len_min"], r["train_len_max"], r["eval_len"]) for r in rows.values()] == [
        (6, 16, 16), (6, 16, 32)]
    assert rows["L16"]["status"] == "ok" and rows["L16"]["is_train_len"] and not rows["L32"]["is_train_len"]
    steps = rows["L16"]["steps"]
    tokens = rows["L16"]["tokens_per_second"] * rows["L16"]["train_seconds"]  # tokens seen: B x the drawn lengths
    assert tokens == pytest.approx(4 * sum(length_schedule((6, 16), steps, seed=0)), rel=1e-6)
    plain = run_trial(TrialConfig(**BASE, train_len=16, eval_slices=(EvalSlice("L16", 16, 8),)))["runs"][0]
    assert (plain["train_len_min"], plain["train_len_max"]) == (16, 16)


def test_a_range_leaves_earlier_trial_ids_alone_and_reads_back():
    plain = TrialConfig(**BASE, train_len=16, eval_slices=(EvalSlice("L16", 16, 8),))
    assert plain.trial_id == TrialConfig(**BASE, train_len=16, eval_slices=(EvalSlice("L16", 16, 8),),
                                         train_length_range=()).trial_id
    config = ranged()
    assert config.trial_id != ranged(train_length_range=(8, 16)).trial_id
    again = TrialConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.trial_id == config.trial_id and again.label().endswith("L6-16 seed0 lr0.01")


def spec(tmp_path, text: str, name: str = "spec.toml"):
    path = tmp_path / name
    path.write_text('d_model = 8\nn_layers = 1\nsteps = 5\neval_multipliers = []\n' + text)
    return load_spec(None, str(path), {})


def test_a_spec_sweeps_a_range_and_evaluates_at_longer_lengths(tmp_path):
    loaded = spec(tmp_path, 'train_length_range = [32, 48]\neval_lengths = [96, 4, 128]\n'
                            '[tasks.associative_recall]\nparams = { num_kv_pairs = 4 }\n[models.lstm]\n')
    (trial,) = loaded.trials
    assert trial.train_length_range == (32, 48) and trial.train_len == 48
    assert [s.seq_len for s in trial.eval_slices] == [48, 96, 128]
    assert any("eval length 4 skipped" in note for note in loaded.notes)  # too short for 4 pairs
    # lengths at a more specific level (a task table, the command line) replace a range, and the reverse
    (plain,) = spec(tmp_path, 'train_length_range = [8, 16]\n[tasks.copy]\nlengths = [12]\n[models.lstm]\n').trials
    assert plain.train_length_range == () and plain.train_len == 12
    (back,) = spec(tmp_path, 'lengths = [12]\n[tasks.copy]\n[models.lstm]\ntrain_length_range = [4, 8]\n').trials
    assert back.train_length_range == (4, 8) and back.train_len == 8


@pytest.mark.parametrize("text, says", [
    ('train_length_range = [32, 8]\n[tasks.copy]\n', "lo < hi, got [32, 8]; write the shorter length first"),
    ('train_length_range = [8]\n[tasks.copy]\n', "must be two lengths [lo, hi]"),
    ('train_length_range = [0, 8]\n[tasks.copy]\n', "must be two lengths [lo, hi], integers >= 1"),
    ('train_length_range = [8, 8.5]\n[tasks.copy]\n', "must be two lengths [lo, hi]"),
    ('[tasks.copy]\nlengths = [8]\ntrain_length_range = [8, 16]\n', "set lengths (one trial per length) or "
                                                                      "train_length_range"),
    ('[tasks.copy]\ntrain_length_range = [8, 16]\n[[tasks.copy.train_mixture]]\nseq_len = 8\n',
     "give train_length_range or train_mixture, not both"),
    ('train_length_range = [8, 16]\n[tasks.copy]\n[[tasks.copy.train_mixture]]\nseq_len = 8\n',
     "a train_mixture and a train_length_range cannot be combined"),
    ('train_length_range = [2, 64]\n[tasks.associative_recall]\nparams = { num_kv_pairs = 8 }\n',
     "train_length_range [2, 64]: length 2 is drawn from it but seq_len=2 is too short"),
    ('eval_lengths = [0]\n[tasks.copy]\n', "eval_lengths[0]"),
])
def test_bad_ranges_are_one_line_errors(tmp_path, capsys, text, says):
    with pytest.raises(ConfigError) as err:
        spec(tmp_path, text + '[models.lstm]\n' if "[models" not in text else text)
    assert says in str(err.value) and "\n" not in str(err.value)
    path = tmp_path / "cli.toml"
    path.write_text(text)
    code, out, stderr = run_cli(capsys, "run", "--spec", str(path), "--out", str(tmp_path / "out"))
    assert code == 2 and stderr.count("\n") == 1 and says in stderr and not (tmp_path / "out").exists()



def test_the_table_and_chart_show_accuracy_against_evaluated_length_apart_from_the_trained_range(tmp_path):
    """A synthetic sweep: lstm trained on the range 16-64 (two seeds, one under-trained), gru on 64 alone;
    both evaluated at 64, 128 and 256. The table keeps the trained range beside each evaluated length."""
    def write_sweep(directory, runs):  # runs.csv alone: the chart and the table read nothing else
        directory.mkdir()
        runs.to_csv(directory / "runs.csv", index=False)
        return directory

    rows = trial("copy", "lstm", 64, 1.0, seed=0) + trial("copy", "lstm", 64, 0.8, seed=1)
    rows += trial("copy", "gru", 64, 0.6)
    for row in rows:
        row.update(train_len_min=16 if row["model"] == "lstm" else 64, train_len_max=64,
                   scaled_accuracy=row["accuracy"], under_trained=row["model"] == "lstm" and row["seed"] == 1)
    directory = write_sweep(tmp_path / "sweep", pd.DataFrame(rows, columns=RUNS_COLUMNS))
    results = read_results(directory)
    table = length_table(results.runs, results.runs["trial_id"]).set_index(["model", "eval_len"])
    assert table.loc[("lstm", 128), "accuracy"] == pytest.approx((1.0 + 0.8) * 0.5 / 2)  # 2x: generalisation 0.5
    assert (table.loc["lstm", "train_len_min"] == 16).all() and (table.loc["gru", "train_len_min"] == 64).all()
    assert table.loc[("lstm", 64), "inside"] and not table.loc[("lstm", 256), "inside"]
    assert table.loc[("lstm", 256), "under_trained"] == 1 and table.loc[("gru", 256), "under_trained"] == 0
    md, csv = write_length_generalisation(results)
    page = md.read_text()
    assert "## copy, trained on 16-64" in page and "## copy, trained on 64" in page and "64 (trained)" in page
    assert "0.450*" in page  # lstm at 128: the mean of 0.5 and 0.4, a seed under-trained
    assert pd.read_csv(csv)["eval_len"].tolist() == [64, 128, 256, 64, 128, 256]
    drawn = accuracy_vs_eval_length(Sweep.from_results(results), tmp_path)
    assert [p.name for p in drawn] == ["accuracy_vs_eval_length.png", "accuracy_vs_eval_length.svg"]
    only_trained = pd.DataFrame([r for r in rows if r["eval_len"] == 64], columns=RUNS_COLUMNS)
    plain = read_results(write_sweep(tmp_path / "plain", only_trained))
    assert write_length_generalisation(plain) == []
    assert accuracy_vs_eval_length(Sweep.from_results(plain), tmp_path) == []
