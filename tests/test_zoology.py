"""Zoology's MQAR recipe: the shipped spec expands to exactly the recipe, `--spec NAME` finds shipped specs,
and the CPU twin of the recipe learns every slice, stopping at the first evaluation where all reach 0.99."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from membench.models import build_model
from membench.models.families.transformer import GatedConv
from membench.models.layers import SelfAttention
from membench.runners.cli import main
from membench.runners.spec import PRESETS, RECIPES, SPECS, load_spec

ZOOLOGY_MODEL = {"mixer_pattern": "conv,attention", "mlp_ratio": 0, "position": "none", "n_heads": 1,
                 "conv_kernel": 3, "conv_residual": True}


# --- the shipped recipe ----------------------------------------------------------------------------
def test_zoology_spec_is_the_recipe():
    spec = load_spec(None, "zoology_mqar")
    assert spec.name == "zoology_mqar" and spec.compile == "auto" and spec.device == "auto"
    assert sorted(t.d_model for t in spec.trials) == [64, 128]
    for trial in spec.trials:
        assert (trial.task, trial.model, trial.model_params) == ("associative_recall", "transformer", ZOOLOGY_MODEL)
        assert trial.task_params == {"vocab_size": 8192, "power_a": 0.01} and trial.vocab_size() == 8192
        assert (trial.n_layers, trial.batch_size, trial.lr, trial.weight_decay) == (2, 256, 1e-3, 0.1)
        assert (trial.threshold, trial.early_stop, trial.train_len) == (0.99, "all_slices", 256)
        assert trial.steps == 64 * 180_000 // 256  # Zoology's 64 epochs of the 180k-sequence mixture
        assert [(s.seq_len, s.params["num_kv_pairs"], s.weight) for s in trial.segments] == [
            (64, 4, 100_000), (128, 8, 20_000), (256, 16, 20_000), (256, 32, 20_000), (256, 64, 20_000)]
        assert [(s.name, s.seq_len, s.params, s.n_sequences) for s in trial.eval_slices] == [
            (f"L{n}-kv{k}", n, {"num_kv_pairs": k}, 1000)
            for n, k in [(64, 4), (64, 8), (64, 16), (128, 32), (256, 64), (512, 128), (1024, 256)]]


@pytest.mark.parametrize("d_model", [64, 128])
def test_zoology_model_is_conv_then_attention_without_mlp_or_positions(d_model):
    model = build_model("transformer", 8192, d_model=d_model, n_layers=2, **ZOOLOGY_MODEL)
    conv, attention = (block.mixer for block in model.blocks)
    assert isinstance(conv, GatedConv) and isinstance(attention, SelfAttention)
    assert conv.conv.conv.groups == d_model and conv.conv.kernel_size == 3  # depthwise, kernel 3
    assert conv.residual  # BaseConv returns conv(x) * proj(x) + x
    assert attention.n_heads == 1 and attention.rotary is None
    assert all(block.mlp is None for block in model.blocks)
    # causal: changing the last token leaves every earlier output unchanged
    tokens = torch.randint(0, 8192, (2, 12))
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 8192
    with torch.no_grad():
        assert torch.allclose(model(tokens)[:, :-1], model(changed)[:, :-1], atol=1e-5)


def test_recipes_are_specs_not_presets():
    assert {"zoology_mqar", "zoology_mqar_cpu"} <= set(RECIPES) and not set(RECIPES) & set(PRESETS)
    assert set(SPECS) == set(PRESETS) | set(RECIPES) and {"smoke", "standard"} <= set(PRESETS)
    with pytest.raises(ValueError, match="is a recipe, not a preset: run it with --spec zoology_mqar"):
        load_spec("zoology_mqar", None, {})


def test_a_file_path_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "zoology_mqar").write_text('name = "mine"\nd_model = 8\nmodels = ["mlp"]\ntasks = ["copy"]\n')
    assert load_spec(None, "zoology_mqar").name == "mine"
    assert load_spec(None, "zoology_mqar_cpu").name == "zoology_mqar_cpu"


@pytest.mark.parametrize("argv, message", [
    (["run", "--spec", "zoology_mqr"], "unknown shipped spec 'zoology_mqr'; did you mean 'zoology_mqar' or "
                                       "'zoology_mqar_cpu'"),
    (["run", "--spec", "missing.toml"], "cannot read spec file missing.toml"),
    (["run", "--preset", "zoology_mqar"], "run it with --spec zoology_mqar"),
    (["leaderboard", "--preset", "zoology_mqar"], "run it with --spec zoology_mqar"),
])
def test_bad_spec_names_are_one_line_errors(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--out", "out", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("membench: error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()


# --- the CPU twin, end to end --------------------------------------------------------------------------
@pytest.mark.slow
def test_cpu_twin_learns_every_slice_and_records_time_to_accuracy(tmp_path, capsys):
    (trial,) = load_spec(None, "zoology_mqar_cpu").trials
    assert trial.model_params == ZOOLOGY_MODEL and trial.early_stop == "all_slices" and len(trial.eval_slices) == 7
    assert main(["run", "--spec", "zoology_mqar_cpu", "--out", str(tmp_path), "--quiet"]) == 0
    assert "1 trials: 1 ok" in capsys.readouterr().out
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert len(runs) == 7 and (runs["status"] == "ok").all()
    assert (runs["accuracy"] >= 0.99).all(), runs[["slice", "accuracy"]]
    steps = runs["steps"].iloc[0]
    assert steps < trial.steps  # stopped early ...
    assert (runs["time_to_accuracy_steps"] == steps).all()  # ... at the first evaluation with every slice at 0.99
    assert (runs["time_to_accuracy_tokens"] > 0).all()
    assert 0 < runs["time_to_accuracy_seconds"].iloc[0] <= runs["train_seconds"].iloc[0]
    curves = pd.read_csv(tmp_path / "curves.csv")
    assert curves["eval_accuracy"].notna().sum() == steps // trial.eval_every
    assert not math.isnan(curves["train_loss"].iloc[-1])
    assert main(["charts", str(tmp_path)]) == 0  # the slice table: every slice of the one trial, and its min
    assert not (tmp_path / "leaderboard.md").exists()  # named slices only: no leaderboard of zeros
    table = pd.read_csv(tmp_path / "slices.csv")
    assert len(table) == 1 and table["min"].iloc[0] == runs["accuracy"].min() >= 0.99
    assert [c for c in table.columns if c.startswith("L")] == [s.name for s in trial.eval_slices]
