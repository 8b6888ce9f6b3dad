"""`membench leaderboard` end to end: a tiny spec trained for real (2 tasks x 2 families x 2 lengths, a few
steps each), then the leaderboard files and charts; the default preset; bad input writes nothing."""

from __future__ import annotations

import pandas as pd
import pytest

from membench.runners.commands import leaderboard as command
from tests.helpers import run_cli, tiny_spec


def test_a_tiny_sweep_produces_the_leaderboard_and_charts(tmp_path, capsys):
    spec = tiny_spec(tmp_path, name="tiny", device="cpu", tasks=["copy", "associative_recall"],
                     models=["mlp", "lstm"], lengths=[8, 16], learning_rates=[3e-3], steps=6, time_cap=20.0,
                     batch_size=4, eval_sequences=4, eval_every=3, log_every=3, d_model=8)
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "leaderboard", "--spec", spec, "--out", str(out), "--quiet")
    assert code == 0, err
    board = pd.read_csv(out / "leaderboard.csv")
    assert sorted(board["model"]) == ["lstm", "mlp"] and board["rank"].tolist() == [1, 2]
    assert {"copy horizon", "associative_recall mean_accuracy"} <= set(board.columns)
    assert (board["trials"] == 4).all() and board["score"].between(0, 1).all()
    assert "| rank | model | score |" in (out / "leaderboard.md").read_text() and "| 1 |" in stdout
    charts = sorted(p.name for p in (out / "charts").iterdir())
    assert len([c for c in charts if c.endswith(".png")]) >= 5 and len(charts) == 2 * len(
        [c for c in charts if c.endswith(".png")])
    assert all((out / "charts" / c).stat().st_size > 0 for c in charts)


@pytest.mark.parametrize("cuda, expected", [(False, "smoke"), (True, "standard")])
def test_default_preset_follows_cuda(monkeypatch, cuda, expected):
    monkeypatch.setattr("torch.cuda.is_available", lambda: cuda)
    assert command.default_preset() == expected


@pytest.mark.parametrize("argv, fragment", [
    (["--preset", "bogus"], "unknown preset 'bogus'"),
    (["--preset", "smok"], "did you mean 'smoke'"),
    (["--spec", "no-such-spec.toml"], "cannot read spec file"),
    (["--preset", "smoke", "--spec", "x.toml"], "not allowed with"),
    (["--preset", "smoke", "--models", "lstn"], "did you mean 'lstm'"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, argv, fragment):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "leaderboard", *argv, "--out", str(out))
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
