"""`membench reproduce` (runners/commands/reproduce.py) and the reproductions (runners/reproduce/): the verdicts
committed in results/reproduce-*/claims.csv are the ones their judges give on the committed runs, a judge says
"does not hold" when a table is doctored against its claim, and bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from membench.checks import ConfigError
from membench.runners.reporting.results import read_results
from membench.runners.reproduce import get_reproduction, reproductions
from membench.runners.reproduce.claims import (
    DOES_NOT_HOLD,
    HOLDS,
    NOT_COMPARABLE,
    Finding,
    findings_table,
    write_findings,
)
from membench.runners.reproduce.liu2023_flipflop import judge as judge_flipflop
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
# results/reproduce-NAME -> the committed runs its verdicts were judged on
RUNS_OF = {"grazzi2025": "reproduce-grazzi2025", "deletang2023": "reproduce-grazzi2025",
           "liu2023_flipflop": "reproduce-liu2023_flipflop", "zoology_fig2": "frontier-cpu"}
COMMITTED = [name for name in RUNS_OF if (RESULTS / f"reproduce-{name}" / "claims.csv").is_file()]


def _runs(name: str) -> pd.DataFrame:
    return read_results(RESULTS / RUNS_OF[name]).runs


def _verdict(findings: list[Finding], model: str, claim_part: str = "") -> str:
    found = [f for f in findings if f.model == model and claim_part in f.claim]
    assert len(found) == 1, [f.claim for f in findings]
    return found[0].verdict


# --- the registry and the command line ----------------------------------------------------------
def test_every_reproduction_names_a_shipped_recipe_and_unknown_names_suggest_close_ones():
    from membench.runners.spec import SPECS

    assert set(reproductions()) == set(RUNS_OF)
    assert all(r.spec in SPECS for r in reproductions().values())
    with pytest.raises(ConfigError, match="did you mean 'grazzi2025'"):
        get_reproduction("grazzi2024")


def test_list_names_every_reproduction_and_its_recipe(capsys):
    code, out, _ = run_cli(capsys, "reproduce", "--list")
    assert code == 0
    for name, reproduction in reproductions().items():
        assert any(line.split()[:2] == [name, reproduction.spec] for line in out.splitlines())


@pytest.mark.parametrize("argv, message", [
    (["reproduce"], "give a reproduction"),
    (["reproduce", "grazzi2024", "--out", "{out}"], "unknown reproduction 'grazzi2024'"),
    (["reproduce", "grazzi2025"], "give --out DIR"),
    (["reproduce", "grazzi2025", "--verdicts-only", "{missing}"], "does not exist"),
    (["reproduce", "grazzi2025", "--verdicts-only", "{missing}", "--seeds", "0"], "--seeds only act on a run"),
    (["reproduce", "grazzi2025", "--verdicts-only", "{missing}", "--log", "mlflow"], "--log only act on a run"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(capsys, tmp_path, argv, message):
    out, missing = tmp_path / "out", tmp_path / "missing"
    argv = [a.format(out=out, missing=missing) for a in argv]
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not missing.exists()


def test_log_reaches_the_sweep_a_reproduction_runs(capsys, tmp_path, monkeypatch):
    from membench.runners.commands import reproduce

    class Stop(Exception):
        pass

    def sweep_stub(spec, out, **options):
        raise Stop(options["log"])

    monkeypatch.setattr(reproduce, "run_sweep", sweep_stub)
    with pytest.raises(Stop) as stopped:
        run_cli(capsys, "reproduce", "grazzi2025", "--out", str(tmp_path / "out"), "--log", "mlflow,tensorboard")
    assert stopped.value.args == (("mlflow", "tensorboard"),)


# --- the committed verdicts ---------------------------------------------------------------------
@pytest.mark.parametrize("name", COMMITTED)
def test_committed_claims_are_what_the_judge_finds_on_the_committed_runs(name):
    committed = pd.read_csv(RESULTS / f"reproduce-{name}" / "claims.csv", keep_default_na=False)
    found = findings_table(get_reproduction(name).judge(_runs(name)))
    assert committed["claim"].tolist() == found["claim"].tolist()
    assert committed["verdict"].tolist() == found["verdict"].tolist(), "re-run: membench reproduce NAME " \
        "--verdicts-only DIR --out results/reproduce-NAME"
    ours = pd.to_numeric(committed["ours"].replace("", math.nan))
    assert ours.fillna(-1).round(6).tolist() == found["ours"].fillna(-1).round(6).tolist()
    assert (RESULTS / f"reproduce-{name}" / "README.md").is_file()


@pytest.mark.skipif("grazzi2025" not in COMMITTED, reason="results/reproduce-grazzi2025 not committed yet")
def test_grazzi_judge_follows_the_eigenvalue_contrast_when_the_runs_are_doctored():
    runs = _runs("grazzi2025")
    judge = get_reproduction("grazzi2025").judge
    neg = runs["model"].eq("deltanet") & runs["model_params"].str.contains('"allow_neg_eigval": true')
    contrast, solves = "deltanet [-1,1] vs [0,1]", ("deltanet [-1,1]", "solves parity")
    before = judge(runs)
    assert _verdict(before, contrast) == HOLDS  # the committed runs: [-1,1] lies above [0,1]
    at_chance = judge(runs.assign(accuracy=runs["accuracy"].where(~neg, 0.5)))  # chance at every length
    assert _verdict(at_chance, contrast) == DOES_NOT_HOLD and _verdict(at_chance, *solves) == DOES_NOT_HOLD
    perfect = judge(runs.assign(accuracy=runs["accuracy"].where(~neg, 1.0)))
    assert _verdict(perfect, *solves) == HOLDS
    assert _verdict(at_chance, "lstm") == _verdict(before, "lstm")  # the other claims are untouched


@pytest.mark.skipif("liu2023_flipflop" not in COMMITTED, reason="results/reproduce-liu2023_flipflop not committed yet")
def test_flipflop_judge_says_does_not_hold_when_the_lstm_is_given_one_sparse_error():
    runs = _runs("liu2023_flipflop")
    row = runs.index[(runs["model"] == "lstm") & (runs["slice"] == "sparse")][0]
    doctored = runs.copy()
    doctored.loc[row, "accuracy"] = 1.0 - 1.0 / doctored.loc[row, "scored"]  # one error in its reads
    length = int(runs.loc[row, "train_len"])
    assert _verdict(judge_flipflop(doctored), f"lstm on sparse ({length} tokens)") == DOES_NOT_HOLD


def test_zoology_judge_tells_a_failure_of_attention_from_a_plateau_near_chance():
    runs = _runs("zoology_fig2")
    attention = runs["model"].eq("transformer") & runs["d_model"].eq(16)
    judge = get_reproduction("zoology_fig2").judge
    failed = judge(runs.assign(accuracy=runs["accuracy"].where(~attention, 0.5)))  # far above chance, below 0.9
    assert {f.verdict for f in failed if f.model.startswith("transformer")} == {DOES_NOT_HOLD}
    stuck = judge(runs.assign(accuracy=runs["accuracy"].where(~attention, 0.04)))  # chance is 1/32
    assert {f.verdict for f in stuck if f.model.startswith("transformer")} == {NOT_COMPARABLE}
    solved = judge(runs.assign(accuracy=runs["accuracy"].where(~runs["model"].eq("transformer"), 1.0)))
    assert {f.verdict for f in solved if f.model.startswith("transformer")} == {HOLDS}


# --- the rules on small synthetic tables ------------------------------------------------------------
def _flipflop_runs(errors: dict[tuple[str, str], int], reads: int = 1000) -> pd.DataFrame:
    rows = [{"trial_id": f"{model}{seed}", "task": "flip_flop", "model": model, "d_model": 32, "train_len": 64,
             "seed": seed, "lr": 3e-3, "slice": stream, "eval_len": 64, "status": "ok", "scored": reads,
             "accuracy": 1.0 - errors.get((model, stream), 0) / reads}
            for model in ("lstm", "transformer") for seed in (0, 1) for stream in ("L64", "sparse", "dense")]
    return pd.DataFrame(rows)


def test_flipflop_glitches_hold_only_for_a_transformer_that_learned_its_training_stream():
    rare = judge_flipflop(_flipflop_runs({("transformer", "sparse"): 3}))
    assert _verdict(rare, "transformer on sparse (64 tokens)") == HOLDS
    assert _verdict(rare, "lstm on sparse (64 tokens)") == HOLDS
    none = judge_flipflop(_flipflop_runs({}))
    assert _verdict(none, "transformer on sparse (64 tokens)") == DOES_NOT_HOLD  # no glitch at all
    wholesale = judge_flipflop(_flipflop_runs({("transformer", "sparse"): 300}))
    assert _verdict(wholesale, "transformer on sparse (64 tokens)") == DOES_NOT_HOLD  # 30 %: not a glitch
    unlearned = judge_flipflop(_flipflop_runs({("transformer", "sparse"): 3, ("transformer", "L64"): 50}))
    assert _verdict(unlearned, "transformer on sparse (64 tokens)") == NOT_COMPARABLE


def test_a_finding_rejects_an_unknown_verdict_and_the_files_carry_every_claim(tmp_path):
    with pytest.raises(ValueError, match="verdict"):
        Finding("c", "m", "s", "x", "1.0", "maybe", "why")
    findings = [Finding("solves", "lstm", "Table 1", "scaled accuracy", "1.000", HOLDS, "0.99 >= 0.9", 0.99, 0.98,
                        1.0, 0.995, 3),
                Finding("other task", "lstm", "Table 1", "scaled accuracy", "0.5", NOT_COMPARABLE, "no such task")]
    paths = write_findings(tmp_path, "A paper", findings)
    assert sorted(p.name for p in paths) == ["claims.csv", "claims.md", "claims.png", "claims.svg"]
    table = pd.read_csv(tmp_path / "claims.csv")
    assert table["verdict"].tolist() == [HOLDS, NOT_COMPARABLE]
    text = (tmp_path / "claims.md").read_text()
    assert "| solves | lstm |" in text and "[0.980, 1.000]" in text and "1 holds, 0 does not hold" in text


def test_parity_variants_name_the_eigenvalue_range():
    from membench.runners.reproduce.grazzi2025 import parity_trials

    rows = [{"trial_id": f"t{i}", "task": "state_tracking", "task_params": json.dumps({"group": "parity"}),
             "model": "ssm", "model_params": json.dumps({"allow_neg_eigval": neg}), "seed": 0, "status": "ok",
             "under_trained": False, "train_len": 40, "eval_len": length, "accuracy": acc}
            for i, (neg, acc) in enumerate([(True, 1.0), (False, 0.5)]) for length in (40, 64, 128)]
    rows[0]["accuracy"] = 0.0  # the trained length is not part of the score beyond training
    trials = parity_trials(pd.DataFrame(rows)).set_index("variant")
    assert trials.loc["ssm [-1,1]", "scaled"] == 1.0 and trials.loc["ssm [0,1]", "scaled"] == 0.0
    assert trials.loc["ssm [-1,1]", "test_lengths"] == "64,128"
