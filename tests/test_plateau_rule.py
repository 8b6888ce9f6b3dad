"""The near-chance plateau rule: a plateau near chance is not convergence. It earns more steps (training goes
on to the budget) and, with a second_lr, a second run from the same initial weights; the rows say which
happened (chance_plateau). Tested on synthetic accuracy curves fed to the stop rule, then end to end."""

from __future__ import annotations

import math

import pytest
import torch

from membench.checks import ConfigError
from membench.runners.train import Training, TrainOutcome, train
from membench.runners.trial import EvalSlice, TrialConfig, run_trial

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
