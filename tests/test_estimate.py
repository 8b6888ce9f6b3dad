"""The cost model behind time_cap = "auto" and `membench plan` (runners/cost/estimate.py), and gpu_workers."""

from __future__ import annotations

import pytest
import torch

from membench.checks import ConfigError
from membench.models import build_model
from membench.runners import executors
from membench.runners.cost import estimate
from membench.runners.cost.estimate import Rates, auto_time_cap, forward_flops, step_seconds
from membench.runners.spec import load_spec
from membench.runners.trial import EvalSlice
from tests.helpers import run_cli, tiny_spec

COPY = {"copy": {"params": {"content_vocab": 4}}}


def test_forward_flops_are_the_familys_own():
    built = build_model("transformer", 16, d_model=32, n_layers=2)
    assert forward_flops("transformer", {}, 16, 32, 2, 4, 64) == built.flops(4, 64)


def test_a_step_costs_its_arithmetic_or_its_latency_whichever_is_larger():
    assert step_seconds(10**12, 64, 2, Rates(1e12, token_latency=0.0)) == pytest.approx(3.0)  # 3 x forward at 1e12
    assert step_seconds(10**6, 64, 2, Rates(1e12, step_latency=0.01, token_latency=0.0)) == pytest.approx(0.01)
    # a per-token loop: 2 layers x 1000 tokens x 1 ms
    assert step_seconds(10**6, 1000, 2, Rates(1e12, 0.01, token_latency=1e-3)) == pytest.approx(2.01)


def test_the_auto_cap_has_a_floor_a_ceiling_and_a_margin():
    assert auto_time_cap(100.0, 1e9) == pytest.approx(estimate.CAP_MARGIN * 100)
    assert auto_time_cap(1e-3, 1e9) == estimate.MIN_AUTO_CAP
    assert auto_time_cap(1e6, 60.0) == 60.0


def test_evaluation_costs_a_forward_per_eval_batch_at_every_evaluation():
    """3 evaluations (steps 100 and 200, and the final one at 250) of two slices: 64 sequences at length 32 in
    batches of 16 (4 forwards) and 10 at 64 (1 forward, the last batch short), each a third of a step."""
    rates = Rates(1e9, step_latency=0.03)
    slices = [EvalSlice("L32", 32, 64), EvalSlice("L64", 64, 10)]
    training, evaluating = estimate.trial_seconds("mlp", {}, 16, 16, 1, 16, 32, 250, 100, slices, rates)
    assert training == pytest.approx(250 * 0.03)  # latency-bound at these sizes
    assert evaluating == pytest.approx(3 * (4 + 1) * 0.01)
    assert estimate.evaluations(200, 100) == 2 and estimate.evaluations(1, 100) == 1
    flops_bound = Rates(1.0)  # 1 FLOP/s: the arithmetic dominates; an eval forward is F, a step 3F
    _, evaluating = estimate.trial_seconds("transformer", {}, 16, 16, 1, 16, 32, 100, 100, slices[:1], flops_bound)
    assert evaluating == pytest.approx(4 * forward_flops("transformer", {}, 16, 16, 1, 16, 32))


def test_auto_caps_grow_with_the_trials_cost_and_a_number_stays_a_number(tmp_path):
    settings = dict(models=["transformer", "lstm"], lengths=[16, 256], steps=100, time_cap="auto", flops_rate=1e9,
                    max_time_cap=1e6)
    spec = load_spec(None, tiny_spec(tmp_path, COPY, **settings), {})
    caps = {(t.model, t.train_len): t.time_cap for t in spec.trials}
    assert caps[("transformer", 256)] > caps[("transformer", 16)] >= estimate.MIN_AUTO_CAP
    for trial, rates in zip(spec.trials, spec.rates):
        assert rates == Rates(1e9)
        flops = forward_flops(trial.model, {}, trial.vocab_size(), trial.d_model, trial.n_layers, trial.batch_size,
                              trial.train_len)
        seconds = step_seconds(flops, trial.train_len, trial.n_layers, rates.of_family(trial.model))
        assert estimate.trial_step_seconds(trial, rates) == seconds
        training, evaluating = estimate.trial_seconds(
            trial.model, {}, trial.vocab_size(), trial.d_model, trial.n_layers, trial.batch_size, trial.train_len,
            100, trial.eval_every, trial.eval_slices, rates)
        assert training == 100 * seconds and evaluating > 0
        assert trial.time_cap == auto_time_cap(training + evaluating, 1e6)
    fixed = load_spec(None, tiny_spec(tmp_path, COPY, file="fixed.toml", **{**settings, "time_cap": 30.0}), {})
    assert {t.time_cap for t in fixed.trials} == {30.0}


def test_a_family_table_sets_its_own_token_latency(tmp_path):
    path = tiny_spec(tmp_path, COPY, models=None, lengths=[64], time_cap="auto", flops_rate=1e15)
    with open(path, "a") as spec_file:
        spec_file.write('[models.mlp]\n[models.lstm]\ntoken_latency = 0.001\n')
    spec = load_spec(None, path, {})
    seconds = {t.model: estimate.trial_step_seconds(t, rates) for t, rates in zip(spec.trials, spec.rates)}
    assert seconds["lstm"] == pytest.approx(1 * 64 * 0.001)  # n_layers = 1 in the tiny spec
    assert seconds["mlp"] < 1e-3


def test_a_spec_without_token_latency_takes_each_familys_own_and_one_that_sets_it_overrides_it(tmp_path):
    from membench.models import model_class

    def step_seconds_of(spec_path) -> dict[str, float]:
        spec = load_spec(None, spec_path, {})
        return {t.model: estimate.trial_step_seconds(t, rates) for t, rates in zip(spec.trials, spec.rates)}

    settings = dict(models=["mlp", "lstm", "external_memory"], lengths=[64], time_cap="auto", flops_rate=1e15)
    own = step_seconds_of(tiny_spec(tmp_path, COPY, **settings))
    assert model_class("mlp").token_latency == 0.0 and own["mlp"] < 1e-4  # arithmetic only, at 1e15 FLOP/s
    for family in ("lstm", "external_memory"):
        assert model_class(family).token_latency > 0
        assert own[family] == pytest.approx(1 * 64 * model_class(family).token_latency)  # one layer, 64 tokens
    zero = step_seconds_of(tiny_spec(tmp_path, COPY, file="zero.toml", token_latency=0.0, **settings))
    assert all(zero[family] < 1e-4 for family in zero)  # a spec's 0 is a value, not "unset"


class UncountedMixer(torch.nn.Module):
    """A user's mixer that declares no flops: membench counts them on a real forward (not on meta)."""

    def __init__(self, d_model):
        super().__init__()
        self.proj = torch.nn.Linear(d_model, d_model)

    def forward(self, x):  # (B, T, D) -> (B, T, D), causal: per position
        return self.proj(x)


def test_a_model_whose_flops_are_counted_is_costed_on_a_real_forward(tmp_path):
    name = "tests.test_estimate:UncountedMixer"
    spec = load_spec(None, tiny_spec(tmp_path, COPY, models=[name], time_cap="auto", flops_rate=1e6), {})
    (trial,) = spec.trials
    counted = build_model(name, trial.vocab_size(), d_model=trial.d_model, n_layers=1).flops(trial.batch_size, 8)
    training, evaluating = estimate.trial_seconds(name, {}, trial.vocab_size(), trial.d_model, 1, trial.batch_size,
                                                  8, trial.steps, trial.eval_every, trial.eval_slices, Rates(1e6))
    assert counted > 0 and training == pytest.approx(trial.steps * 3 * counted / 1e6)
    assert trial.time_cap == auto_time_cap(training + evaluating, 1800.0)


def test_a_bad_time_cap_says_auto_is_allowed(tmp_path):
    with pytest.raises(ConfigError, match="time_cap must be 'auto' or a number"):
        load_spec(None, tiny_spec(tmp_path, COPY, models=["mlp"], time_cap="soon"), {})


def test_plan_sums_each_familys_trials_and_prints_a_total(tmp_path, capsys):
    path = tiny_spec(tmp_path, COPY, models=["mlp", "lstm"], lengths=[8, 16], seeds=[0, 1], steps=50,
                     time_cap=20.0, step_latency=0.01)
    spec = load_spec(None, path, {})
    rows = estimate.plan(spec.trials, spec.rates)
    assert [r["model"] for r in rows] == ["mlp", "lstm"]
    assert [r["trials"] for r in rows] == [4, 4]
    assert rows[0]["cap_hours"] == pytest.approx(4 * 20 / 3600)
    # 50 latency-bound steps of 10 ms; 10 evaluations (every 5 steps) of 2 slices of 16 sequences in 2 batches
    # of 8, each batch a third of a step
    evaluating = 10 * 2 * 2 * 0.01 / 3
    assert rows[0]["eval_hours"] == pytest.approx(4 * evaluating / 3600)
    assert rows[0]["hours"] == pytest.approx(4 * (50 * 0.01 + evaluating) / 3600)
    code, out, err = run_cli(capsys, "plan", "--spec", path)
    assert code == 0 and err == ""
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert "8 trials" in out and total.split()[:2] == ["total", "8"]


def test_plan_prints_what_the_spec_skipped_as_run_does(tmp_path, capsys):
    path = tiny_spec(tmp_path, COPY, models=["mlp"], lengths=[8, 16], max_length=8)
    code, out, err = run_cli(capsys, "plan", "--spec", path)
    assert code == 0 and "1 trials" in out
    assert "note: copy: mlp at length 16 skipped (above max_length 8)" in err


def test_gpu_workers_put_several_workers_on_each_gpu(monkeypatch):
    gpus = {"cuda": ["cuda:0", "cuda:1"], "cpu": ["cpu"]}
    monkeypatch.setattr(executors, "local_devices", lambda device: gpus[device])
    monkeypatch.setattr(executors, "check_compile", lambda compile, device: None)
    runner = executors.make_executor("local", "cuda", gpu_workers=3)
    assert runner.devices == ["cuda:0"] * 3 + ["cuda:1"] * 3
    assert executors.make_executor("local", "cpu", gpu_workers=3).devices == ["cpu"]


@pytest.mark.slow
@pytest.mark.parametrize("preset, hours", [("standard", "11.4 trial-hours"), ("full", "2,521 GPU-hours")])
def test_the_gpu_presets_train_to_a_plateau_with_caps_from_cost_and_state_their_plan(preset, hours):
    """standard and full: 3 seeds, plateau budgets, auto caps; the estimate in each preset's comment is what
    `membench plan` computes from it now (a change to the preset or to a family's FLOPs shows here)."""
    from membench.runners.spec import _SHIPPED

    spec = load_spec(preset)
    assert {t.seed for t in spec.trials} == {0, 1, 2}
    assert {t.budget for t in spec.trials} == {"plateau"}
    assert len({t.time_cap for t in spec.trials}) > 10  # sized per trial, not one number
    rows = estimate.plan(spec.trials, spec.rates, spec.gpu_workers)
    trials, all_steps = sum(r["trials"] for r in rows), sum(r["hours"] for r in rows)
    comment = _SHIPPED[preset]
    assert f"{trials:,} trials" in comment
    assert hours in comment and float(hours.split()[0].replace(",", "")) == pytest.approx(all_steps, abs=0.5)


@pytest.mark.slow
def test_standard_fits_its_two_hours_by_its_own_estimate_with_every_attention_head_on_the_flash_grid():
    """standard aims at 2 h on one GPU: at its own rates, with its workers side by side and stops after at most
    70 % of the budget (its comment's assumption), it fits; and no width leaves SDPA without flash kernels."""
    from membench.models import fast_attention_width

    spec = load_spec("standard")
    rows = estimate.plan(spec.trials, spec.rates, spec.gpu_workers)
    wall_hours = sum(r["hours"] for r in rows) / spec.gpu_workers
    assert 0.7 * wall_hours <= 2.0, f"{wall_hours:.2f} h at all steps"
    off_grid = {(t.model, t.d_model) for t in spec.trials
                if not fast_attention_width(t.model, t.d_model, **t.model_params)}
    assert off_grid == set() and not any("head width" in note for note in spec.notes)


def test_plan_against_a_finished_sweep_compares_estimated_and_measured_step_times(tmp_path, capsys):
    from membench.runners.sweep import run_sweep

    path = tiny_spec(tmp_path, COPY, models=["mlp", "lstm"], steps=4, eval_every=4, step_latency=0.01,
                     token_latency=0.0)
    spec = load_spec(None, path, {})
    runs = run_sweep(spec, tmp_path / "out", progress=False)
    rows = estimate.against(spec.trials, spec.rates, runs)
    assert [r["model"] for r in rows] == ["mlp", "lstm"] and all(r["trials"] == 1 for r in rows)
    measured = runs.drop_duplicates("trial_id").set_index("model")["ms_per_step"]
    for r in rows:  # the estimate is the latency floor: 10 ms a step
        assert r["median"] == pytest.approx(measured[r["model"]] / 10.0)
    code, out, _ = run_cli(capsys, "plan", "--spec", path, "--against", str(tmp_path / "out"))
    assert code == 0 and "measured / estimated ms per step" in out
    other = tiny_spec(tmp_path, COPY, file="other.toml", models=["gru"])
    code, _, err = run_cli(capsys, "plan", "--spec", other, "--against", str(tmp_path / "out"))
    assert code == 2 and "holds no trial of this spec" in err and err.count("\n") == 1


def test_the_cost_model_counts_hyenas_fft_not_its_direct_convolution():
    """fast_path_flops = flops for every family but hyena, whose FFT path replaces the O(T^2) taps."""
    from membench.models import list_models

    for name in list_models():
        model = build_model(name, 16, d_model=32, n_layers=2)
        if name != "hyena":
            assert model.fast_path_flops(2, 64) == model.flops(2, 64), name
    hyena = build_model("hyena", 16, d_model=32, n_layers=2)
    direct = hyena.memory_flops(8, 4096)
    assert hyena.fast_path_flops(8, 4096) < hyena.flops(8, 4096) - 0.9 * direct  # T log T, not T^2
    assert forward_flops("hyena", {}, 16, 32, 2, 8, 4096) == hyena.fast_path_flops(8, 4096)


def test_max_eval_tokens_caps_the_default_eval_sequences_not_a_slices_own(tmp_path):
    path = tiny_spec(tmp_path, COPY, models=["mlp"], lengths=[16], eval_multipliers=[2, 4], eval_sequences=16,
                     max_eval_tokens=512)
    (trial,) = load_spec(None, path, {}).trials
    assert {s.seq_len: s.n_sequences for s in trial.eval_slices} == {16: 16, 32: 16, 64: 8}
    named = tiny_spec(tmp_path, COPY, file="named.toml", models=["mlp"], lengths=[16], max_eval_tokens=512)
    with open(named, "a") as spec_file:
        spec_file.write("[[tasks.copy.eval_slices]]\nseq_len = 64\nn_sequences = 20\n"
                        "[[tasks.copy.eval_slices]]\nseq_len = 128\n")
    (trial,) = load_spec(None, named, {}).trials
    assert [s.n_sequences for s in trial.eval_slices] == [20, 4]
