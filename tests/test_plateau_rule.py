"""The near-chance plateau rule: a plateau near chance is not convergence. It earns more steps (training goes
on to the budget) and, with a second_lr, a second run from the same initial weights; the rows say which
happened (chance_plateau). Tested on synthetic accuracy curves fed to the stop rule, then end to end."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from membench.checks import ConfigError
from membench.runners.cost.under_training import cell_count, likely_under_trained
from membench.runners.reporting.charts import Sweep, accuracy_vs_cost, accuracy_vs_length, length_generalisation
from membench.runners.reporting.frontier import frontier_table, write_frontier
from membench.runners.reporting.results import read_results
from membench.runners.schema import RUNS_COLUMNS
from membench.runners.spec import load_spec
from membench.runners.train import Training, TrainOutcome, train
from membench.runners.trial import EvalSlice, TrialConfig, run_trial
from tests.helpers import run_cli
from tests.sweeps import known_runs, trial, write_sweep

CHANCE = 1 / 32  # MQAR with vocabulary 64: a value is one of 32 tokens


def config(**change) -> TrialConfig:
    fields = dict(task="associative_recall", task_params={"vocab_size": 64, "num_kv_pairs": 4}, model="mlp",
                  model_params={}, d_model=8, n_layers=1, train_len=32, seed=0, lr=1e-2, batch_size=8, steps=3000,
                  eval_every=100, log_every=100, eval_slices=(EvalSlice("L32", 32, 8),), budget="plateau",
                  patience=3, min_delta=0.01, min_steps=500, near_chance=0.1)
    return TrialConfig(**{**fields, **change})


def replay(curve: list[float], **change) -> tuple[int | None, TrainOutcome]:
    """Feed the stop rule one evaluation per 100 steps with these accuracies; (the step it stopped at, or
    None when it never stopped, and the outcome)."""
    cfg = config(**change)
    training = Training(cfg.build_model(), cfg, torch.device("cpu"), "none")
    assert training.chance == pytest.approx(CHANCE)
    for i, accuracy in enumerate(curve):
        training.out.steps = 100 * (i + 1)
        reached = {"L32"} if accuracy >= cfg.threshold else set()
        if training.stop_check({"L32": accuracy}, reached):
            return training.out.steps, training.out
    return None, training.out


# a long flat stretch near chance (0.04: scaled 0.009), then the sudden jump of an induction head at step 1,600
INDUCTION = [0.04] * 15 + [0.6, 0.995]


def test_a_plateau_near_chance_earns_more_steps_and_says_so():
    stopped, out = replay(INDUCTION)
    assert stopped == 1700  # not stopped inside the flat stretch: the jump is reached, then the threshold
    assert out.stop_reason == "threshold" and out.chance_plateau == "more_steps"
    old_rule, out = replay(INDUCTION, near_chance=0.0)  # the plain plateau rule stops at min_steps
    assert old_rule == 500 and out.stop_reason == "plateau" and out.chance_plateau == ""


def test_a_plateau_well_above_chance_still_stops():
    stopped, out = replay([0.3] * 20)  # scaled 0.28: above near_chance 0.1, a plateau like any other
    assert stopped == 500 and out.stop_reason == "plateau" and out.chance_plateau == ""
    stopped, out = replay([0.11] * 30)  # scaled 0.08: near chance, trains on to the budget
    assert stopped is None and out.chance_plateau == "more_steps"
    stopped, _ = replay([0.11] * 30, near_chance=0.05)  # a lower near_chance counts it as convergence
    assert stopped == 500


def test_the_near_chance_line_is_on_the_scaled_accuracy():
    cfg = config()
    training = Training(cfg.build_model(), cfg, torch.device("cpu"), "none")
    line = CHANCE + 0.1 * (1 - CHANCE)  # scaled accuracy 0.1
    assert training.near_chance(line - 1e-6) and not training.near_chance(line + 1e-6)
    assert not Training(cfg.build_model(), config(near_chance=0.0), torch.device("cpu"), "none").near_chance(0.0)


def fake_runs(monkeypatch, progress_at: dict[float, float]) -> list[float]:
    """Replace Training.run by one that writes the lr into the weights and returns `progress_at[lr]`; the
    learning rates it was run at are returned (filled as train() runs)."""
    seen = []

    def run(self, progress=False):
        seen.append(self.config.lr)
        with torch.no_grad():
            for p in self.model.parameters():
                p.fill_(self.config.lr)
        return TrainOutcome(steps=1, progress=progress_at[self.config.lr])

    monkeypatch.setattr(Training, "run", run)
    return seen


def test_a_run_that_ends_near_chance_is_run_again_at_the_second_lr_and_the_better_kept(monkeypatch):
    cfg = config(near_chance=0.1, second_lr=1e-3)
    seen = fake_runs(monkeypatch, {1e-2: 0.05, 1e-3: 0.9})
    model = cfg.build_model()
    out = train(model, cfg, torch.device("cpu"))
    assert seen == [1e-2, 1e-3] and out.chance_plateau == "second_lr_better" and out.progress == 0.9
    assert all(torch.all(p == 1e-3) for p in model.parameters())  # the kept run's weights

    seen = fake_runs(monkeypatch, {1e-2: 0.05, 1e-3: 0.04})
    model = cfg.build_model()
    out = train(model, cfg, torch.device("cpu"))
    assert out.chance_plateau == "second_lr_worse" and out.progress == 0.05
    assert all(torch.all(p == 1e-2) for p in model.parameters())  # the first run's weights, restored

    seen = fake_runs(monkeypatch, {1e-2: 0.5, 1e-3: 0.9})  # not near chance: one run
    out = train(cfg.build_model(), cfg, torch.device("cpu"))
    assert seen == [1e-2] and out.chance_plateau == ""


def test_the_second_run_starts_from_the_same_initial_weights(monkeypatch):
    cfg = config(near_chance=0.1, second_lr=1e-3)
    starts = []

    def run(self, progress=False):
        starts.append([p.detach().clone() for p in self.model.parameters()])
        with torch.no_grad():
            for p in self.model.parameters():
                p.add_(1.0)  # what training would change
        return TrainOutcome(steps=1, progress=0.0)

    monkeypatch.setattr(Training, "run", run)
    train(cfg.build_model(), cfg, torch.device("cpu"))
    assert len(starts) == 2 and all(torch.equal(a, b) for a, b in zip(*starts))


def test_rows_record_what_the_rule_did_and_the_scaled_accuracy():
    """End to end: an mlp cannot recall, so it ends near chance; at near_chance 0.5 (everything it reaches is
    "near chance") it is run again at the second learning rate."""
    payload = run_trial(config(steps=20, eval_every=10, min_steps=0, patience=1, near_chance=0.5, second_lr=1e-3))
    (row,) = payload["runs"]
    assert row["status"] == "ok" and row["chance_plateau"] in ("second_lr_better", "second_lr_worse")
    assert row["scaled_accuracy"] == pytest.approx((row["accuracy"] - CHANCE) / (1 - CHANCE))
    plain = run_trial(config(steps=20, eval_every=10, near_chance=0.0))["runs"][0]
    assert plain["chance_plateau"] == "" and not math.isnan(plain["scaled_accuracy"])


def test_the_rule_leaves_earlier_trial_ids_alone_and_is_validated():
    base = config(near_chance=0.0)
    fields = {k: v for k, v in base.to_dict().items() if k not in ("near_chance", "second_lr")}
    assert base.trial_id == TrialConfig.from_dict(fields).trial_id  # a trial made before the rule existed
    assert config(near_chance=0.1).trial_id != base.trial_id
    for bad in ({"near_chance": 1.0}, {"near_chance": -0.1}, {"near_chance": 0.0, "second_lr": 1e-3},
                {"second_lr": -1.0}):
        with pytest.raises(ConfigError, match="near_chance must be in"):
            config(**bad)


# --- membench plan: the cells a budget is likely to leave under-trained, said in advance -------------------
PLAN_SPEC = """
seeds = [0, 1]
d_model = 16
n_layers = 1
steps = STEPS
time_cap = CAP
flops_rate = 1e10
step_latency = 0.004
eval_multipliers = []
[tasks.copy]
lengths = [8, 16]
[models.lstm]
"""


def plan_for(tmp_path, steps: int, cap: float):
    path = tmp_path / f"plan-{steps}-{cap}.toml"
    path.write_text(PLAN_SPEC.replace("STEPS", str(steps)).replace("CAP", str(cap)))
    return load_spec(None, str(path), {})


def earlier_runs(spec, under_at: int, needed: float = math.nan):
    """runs.csv rows of an earlier sweep of `spec`'s length-8 trials: under-trained after `under_at` steps (0:
    not under-trained), reaching the threshold at step `needed`."""
    return pd.DataFrame([{
        "trial_id": f"t{t.seed}", "task": t.task, "task_params": json.dumps({"content_vocab": 8, **t.task_params}),
        "model": t.model, "model_params": json.dumps(t.model_params), "d_model": t.d_model, "n_layers": t.n_layers,
        "train_len": t.train_len, "eval_len": t.train_len, "steps": under_at or 100, "under_trained": bool(under_at),
        "time_to_accuracy_steps": needed} for t in spec.trials if t.train_len == 8])


def test_plan_names_the_cells_a_budget_will_leave_under_trained(tmp_path):
    spec = plan_for(tmp_path, steps=100, cap=600.0)
    assert cell_count(spec.trials) == 2 and likely_under_trained(spec.trials, spec.rates) == []
    capped = plan_for(tmp_path, steps=100, cap=0.01)  # 100 steps take ~0.4 s at these rates: the cap ends them
    cells = likely_under_trained(capped.trials, capped.rates)
    assert [(c["train_len"], c["trials"]) for c in cells] == [(8, 2), (16, 2)]
    assert "its time cap (0.01 s) comes before its 100 steps" in cells[0]["why"]
    # an earlier sweep: under-trained after 300 steps at length 8 -> a budget of 100 or 300 is short, 1,000 is not
    for steps, flagged in ((100, [8]), (300, [8]), (1000, [])):
        spec = plan_for(tmp_path, steps=steps, cap=600.0)
        cells = likely_under_trained(spec.trials, spec.rates, runs=earlier_runs(spec, 300), directory="DIR")
        assert [c["train_len"] for c in cells] == flagged
        assert all(c["why"] == "under-trained after 300 steps in DIR" for c in cells)
    spec = plan_for(tmp_path, steps=100, cap=600.0)  # reached the threshold at step 250: 100 steps are too few
    (cell,) = likely_under_trained(spec.trials, spec.rates, runs=earlier_runs(spec, 0, 250.0), directory="DIR")
    assert cell["why"] == "reached the threshold only after 250 steps in DIR"


def test_plan_prints_the_share_of_cells_likely_under_trained(tmp_path, capsys):
    spec = tmp_path / "capped.toml"
    spec.write_text(PLAN_SPEC.replace("STEPS", "100").replace("CAP", "0.01"))
    code, out, _ = run_cli(capsys, "plan", "--spec", str(spec))
    assert code == 0 and "likely under-trained, from the cost model" in out and "2 of 2 cells (100 %)" in out
    assert "copy lstm L8 (2 trial(s)): its time cap (0.01 s) comes before its 100 steps" in out


def test_the_frontier_marks_under_trained_points(tmp_path):
    """Two widths of lstm, the narrow one under-trained: frontier.csv counts it, frontier.md says it, and the
    charts draw its triangle (their legend names it)."""
    rows = []
    for d_model, accuracy in ((16, 0.3), (64, 0.95)):
        for row in trial("copy", "lstm", 64, accuracy):
            row.update(d_model=d_model, trial_id=f"w{d_model}", under_trained=d_model == 16)
            rows.append(row)
    runs = pd.DataFrame(rows, columns=RUNS_COLUMNS)
    table = frontier_table(runs)
    plain = table[table["slice"] == "L64"].set_index("d_model")
    assert plain["under_trained"].to_dict() == {16: 1, 64: 0}
    (md, csv), charts = write_frontier(runs, tmp_path)
    assert "| copy | 64 | lstm | 2 | 0.950 | " in md.read_text() and md.read_text().rstrip().endswith("| 1 |")
    assert "under_trained" in pd.read_csv(csv).columns
    assert "under-trained: stopped still improving" in (tmp_path / "charts" / "recall_vs_state.svg").read_text()


# --- the reference_cpu preset: the budgets above, on every task x every family ------------------------------
def test_reference_cpu_covers_every_task_and_family_at_three_lengths_to_256_with_three_seeds():
    from membench.memtasks import list_tasks
    from membench.models import list_models

    spec = load_spec("reference_cpu")
    trials = spec.trials
    assert {t.task for t in trials} == set(list_tasks()) and {t.model for t in trials} == set(list_models())
    for task in list_tasks():
        lengths = sorted({t.train_len for t in trials if t.task == task})
        assert len(lengths) >= 3 and lengths[-1] >= 256, task
    for t in trials:  # every cell: 3 seeds, evaluated beyond its length, trained to its budget (no plateau stop)
        assert max(s.seq_len for s in t.eval_slices) > t.train_len
        assert t.budget == "fixed" and t.patience >= 4
    cells = {}
    for t in trials:
        cells.setdefault((t.task, t.model, t.train_len), set()).add(t.seed)
    assert all(len(seeds) >= 3 for seeds in cells.values()) and len(cells) == 9 * 22 * 3 == len(trials) / 3


@pytest.mark.slow
def test_reference_cpu_states_its_plan():
    """The hours in the preset's comment are what `membench plan` computes from it now."""
    from membench.runners.cost.estimate import plan
    from membench.runners.spec import _SHIPPED

    spec = load_spec("reference_cpu")
    rows = plan(spec.trials, spec.rates)
    hours, evaluating = sum(r["hours"] for r in rows), sum(r["eval_hours"] for r in rows)
    comment = _SHIPPED["reference_cpu"]
    assert f"{hours:.1f} hours summed over the trials" in comment and f"({evaluating:.1f} of them" in comment
    assert likely_under_trained(spec.trials, spec.rates) == [] and "flags no cell for its time" in comment


def test_every_chart_with_points_marks_an_under_trained_cell(tmp_path):
    """lstm's copy cells under-trained: the triangle and its legend entry appear in the charts of accuracy
    against length, length ratio and cost; a sweep without under-training has neither."""
    label = "under-trained: stopped still improving"
    runs = known_runs()
    runs["under_trained"] = (runs["model"] == "lstm") & (runs["task"] == "copy")
    marked = Sweep.from_results(read_results(write_sweep(tmp_path / "marked", runs)))
    clean = Sweep.from_results(read_results(write_sweep(tmp_path / "clean", runs.assign(under_trained=False))))
    for chart in (accuracy_vs_length, length_generalisation, accuracy_vs_cost):
        svg = next(p for p in chart(marked, tmp_path / "marked") if p.suffix == ".svg").read_text()
        assert label in svg, chart.__name__
        svg = next(p for p in chart(clean, tmp_path / "clean") if p.suffix == ".svg").read_text()
        assert label not in svg, chart.__name__
