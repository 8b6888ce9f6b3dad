"""save_model = true, then `pretrained:` on the folder it wrote: the end-to-end check that rendering (plain mode),
tokenisation and scoring are membench's own. A trained hf:gpt2 trial is saved as a Hugging Face folder; evaluated
as `pretrained:<folder>` with steps = 0 at the same task, length, seed and batch size, it scores exactly the
accuracy, and the accuracy per lag, that its trial reported. No network."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.helpers import run_cli, tiny_spec, undo_plugin_side_effects  # noqa: F401 (autouse)

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

SAME = {"tasks": ["flip_flop"], "lengths": [16], "eval_multipliers": [2], "eval_sequences": 32, "batch_size": 8,
        "seeds": [3]}


def test_a_saved_trial_scores_its_own_accuracy_as_a_pretrained_model(tmp_path, capsys):
    trained_out, read_out = tmp_path / "trained", tmp_path / "read"
    spec = tiny_spec(tmp_path, file="train.toml", models=["hf:gpt2"], d_model=32, n_layers=1, steps=60,
                     eval_every=60, save_model=True, **SAME)
    code, _, err = run_cli(capsys, "run", "--spec", spec, "--out", str(trained_out), "--quiet")
    assert code == 0, err
    trained = pd.read_csv(trained_out / "runs.csv")
    (trial_id,) = set(trained["trial_id"])
    folder = trained_out / "models" / trial_id
    assert {"config.json", "tokenizer.json", "membench.json"} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / "membench.json").read_text())["rendering"] == "plain"
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging folder left behind

    spec = tiny_spec(tmp_path, file="read.toml", models=[f"pretrained:{folder}"], steps=0, **SAME)
    code, _, err = run_cli(capsys, "run", "--spec", spec, "--out", str(read_out), "--quiet")
    assert code == 0, err
    read = pd.read_csv(read_out / "runs.csv")
    assert list(read["status"]) == ["ok", "ok"] and list(read["steps"]) == [0, 0]
    both = trained.merge(read, on="slice", suffixes=("_trained", "_read"))
    assert len(both) == 2 and 0.0 < both["accuracy_trained"].min() < 1.0, "the check needs answers right and wrong"
    assert list(both["accuracy_read"]) == list(both["accuracy_trained"])
    assert list(both["scored_read"]) == list(both["scored_trained"])
    assert list(both["context_tokens_read"]) == list(both["eval_len_read"])  # one token per symbol

    lags = {name: pd.read_csv(out / "lags.csv") for name, out in (("trained", trained_out), ("read", read_out))}
    columns = ["eval_len", "lag_bucket", "accuracy", "count"]
    symbols = [lags[name].query("lag_unit == 'symbols'")[columns].reset_index(drop=True) for name in lags]
    pd.testing.assert_frame_equal(*symbols)
    tokens = lags["read"].query("lag_unit == 'tokens'")[columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(tokens, symbols[1])  # plain mode: a token per symbol, lags equal
