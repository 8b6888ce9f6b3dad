"""The audit of this folder's plateau stops: every trial of results/frontier-cpu that stopped on a plateau, trained
again to its full step budget (the same trial: task, family, width, seed, so the same data, weights and schedule;
only `budget = "fixed"`, which stops early at the threshold alone). Run from the repository root:

    python results/frontier-cpu/plateau-audit/audit.py          # trains what is missing (resumes), then compares
    python results/frontier-cpu/plateau-audit/audit.py --compare  # compares what is there

A stopped trial still gaining at the full budget (under-trained) then trains once more at twice the budget, into
longer/ (the recipe's budget is where the verdicts are judged; the longer run says whether they depend on it).

The trials train into this folder (runs.csv and the other tables, as any sweep's). plateau_audit.csv gets one row
per stopped trial: accuracy and steps at the stop, the accuracy the full-budget run had at that same step (it
must be the stop's accuracy: the two runs are one run up to there), then accuracy, steps and under-trained flag
at the full budget, and for the under-trained ones accuracy and flag at twice the budget. claims_audited.csv is
results/reproduce-zoology_fig2's judge run on this folder's runs with the full-budget trials in place of the
stopped ones (and beside them, the twice-the-budget trials in place of the under-trained ones); the script
prints every claim whose verdict moves.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pandas as pd

from membench.runners.reporting.results import read_results
from membench.runners.reproduce import get_reproduction
from membench.runners.reproduce.claims import findings_table
from membench.runners.retrain import retrained
from membench.runners.spec import load_spec
from membench.runners.sweep import run_sweep

HERE = Path(__file__).parent
LONGER = HERE / "longer"
STOPPED = HERE.parent
KEYS = ["task", "model", "d_model", "model_params", "train_len", "seed"]


def at_train_length(folder: Path) -> pd.DataFrame:
    runs = pd.read_csv(folder / "runs.csv")
    return runs[runs["is_train_len"]]


def stopped_trials() -> pd.DataFrame:
    runs = at_train_length(STOPPED)
    return runs[runs["stop_reason"].eq("plateau")]


def train() -> None:
    """Every plateau-stopped trial of the recipe again, with a fixed budget, into this folder."""
    spec = load_spec(spec_file="frontier_cpu")
    stopped = set(stopped_trials()["trial_id"])
    trials = tuple(dataclasses.replace(t, budget="fixed") for t in spec.trials if t.trial_id in stopped)
    assert len(trials) == len(stopped), f"{len(stopped) - len(trials)} stopped trials are not the recipe's"
    run_sweep(dataclasses.replace(spec, name="frontier_cpu_plateau_audit", trials=trials), HERE)
    still = set(at_train_length(HERE).query("under_trained")["trial_id"])
    longer = tuple(retrained(t, 2) for t in trials if t.trial_id in still)
    run_sweep(dataclasses.replace(spec, name="frontier_cpu_plateau_audit_longer", trials=longer), LONGER)


def audit() -> pd.DataFrame:
    stopped = stopped_trials().set_index(KEYS)[["accuracy", "steps"]]
    full = at_train_length(HERE)
    curves = pd.read_csv(HERE / "curves.csv")
    full = full.set_index(KEYS)[["trial_id", "accuracy", "steps", "stop_reason", "under_trained"]]
    merged = stopped.join(full.add_suffix("_full").rename(columns={"trial_id_full": "trial_id"}), how="inner")
    at_stop = curves.set_index(["trial_id", "step"])["eval_accuracy"]
    merged["accuracy_full_at_stop"] = [at_stop.get((t, s)) for t, s in zip(merged["trial_id"], merged["steps"])]
    merged["gain"] = merged["accuracy_full"] - merged["accuracy"]
    if (LONGER / "runs.csv").is_file():
        longer = at_train_length(LONGER).set_index(KEYS)[["accuracy", "steps", "under_trained"]]
        merged = merged.join(longer.add_suffix("_2x"))
    columns = ["accuracy", "steps", "accuracy_full_at_stop", "accuracy_full", "steps_full", "stop_reason_full",
               "under_trained_full", "gain", "accuracy_2x", "steps_2x", "under_trained_2x"]
    return merged[columns].sort_index()


def replaced(runs: pd.DataFrame, replacements: pd.DataFrame) -> pd.DataFrame:
    """`runs` with every trial of the same task, family, width, length and seed as one of `replacements` swapped
    for it."""
    key = runs[KEYS].astype(str).agg("|".join, axis=1)
    new = replacements[KEYS].astype(str).agg("|".join, axis=1)
    return pd.concat([runs[~key.isin(set(new))], replacements], ignore_index=True)


def claims_audited() -> pd.DataFrame:
    """The Zoology Figure 2 claims as committed, beside the verdicts judged with the full-budget trials in place
    of the stopped ones, and with the twice-the-budget trials in place of those still under-trained."""
    judge = get_reproduction("zoology_fig2").judge
    full = replaced(read_results(STOPPED).runs, read_results(HERE).runs)
    committed = pd.read_csv(STOPPED.parent / "reproduce-zoology_fig2" / "claims.csv", keep_default_na=False)
    table = pd.DataFrame({"claim": committed["claim"], "verdict": committed["verdict"], "ours": committed["ours"]})
    for name, runs in [("full", full), ("2x", replaced(full, read_results(LONGER).runs))]:
        found = findings_table(judge(runs))
        assert committed["claim"].tolist() == found["claim"].tolist()
        table[f"verdict_{name}"], table[f"ours_{name}"] = found["verdict"], found["ours"].round(4)
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", action="store_true", help="compare only; train nothing")
    if not parser.parse_args().compare:
        train()
    table = audit()
    table.round(4).to_csv(HERE / "plateau_audit.csv")
    print(table.round(3).to_string())
    print(f"{len(table)} stopped trials; gained >= 0.05: {int((table['gain'] >= 0.05).sum())}, "
          f">= 0.5: {int((table['gain'] >= 0.5).sum())}; largest gain {table['gain'].max():.3f}")
    claims = claims_audited()
    claims.to_csv(HERE / "claims_audited.csv", index=False)
    moved = claims[(claims["verdict"] != claims["verdict_full"]) | (claims["verdict"] != claims["verdict_2x"])]
    print(f"Zoology Figure 2 verdicts that move with the longer trials: {len(moved)} of {len(claims)}")
    if len(moved):
        print(moved.to_string())
