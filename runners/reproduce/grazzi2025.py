"""grazzi2025: Grazzi et al. (ICLR 2025), "Unlocking State-Tracking in Linear RNNs Through Negative
Eigenvalues": parity is solved by DeltaNet and Mamba once their state-transition eigenvalues may be
negative ([-1, 1]), not with the usual [0, 1]; an LSTM-like non-linear RNN solves it, mLSTM and a
Transformer do not. Recipe: runners/presets/reproduce_grazzi2025.toml.

The paper's numbers (its Chomsky-hierarchy table, Section 5.1; Table 3 of arXiv 2411.12537v5): scaled
accuracy on parity, trained on lengths 3-40 and tested on 40-256, over 3 seeds:

    Transformer 0.022   mLSTM 0.087   sLSTM 1.000   Mamba [0,1] 0.000   Mamba [-1,1] 1.000
    DeltaNet [0,1] 0.017   DeltaNet [-1,1] 1.000
    modular arithmetic without brackets: DeltaNet [0,1] 0.314, DeltaNet [-1,1] 0.971

Ours, per trial: the mean accuracy of the final parity over the evaluated lengths beyond training (64, 128,
256; `test_lengths`), scaled by the task's chance level (0.5); per model, the mean over seeds with its 95 %
interval (claims.py). The rules, fixed before any run:

    "solves"        (paper >= 0.9)  holds when our seed mean of scaled accuracy is >= SOLVED (0.9)
    "near chance"   (paper <= 0.1)  holds when our seed mean is <= NEAR_CHANCE (0.1)
    "[-1,1] beats [0,1]"            holds when the [-1,1] interval lies wholly above the [0,1] one and
                                    above near chance (a difference between two chance levels unlocks nothing)
    not comparable: no finished trial of the model, or a task membench does not have (modular arithmetic
    with operators: state_tracking's cyclic group is modular counting, a different language)

Worked example: seeds of DeltaNet [-1,1] scoring 0.99, 0.97 and 1.0 beyond training (scaled 0.98, 0.94,
1.0) give a seed mean of 0.973 >= 0.9: "solves parity" holds.
"""

from __future__ import annotations

import json

import pandas as pd

from membench.memtasks import get_task
from membench.runners.reproduce.claims import (
    DOES_NOT_HOLD,
    HOLDS,
    NEAR_CHANCE,
    NOT_COMPARABLE,
    Finding,
    scaled,
    seed_summary,
)

SOLVED = 0.9
TITLE = "Grazzi et al. 2025: parity with eigenvalues in [0, 1] against [-1, 1]"
SPEC = "reproduce_grazzi2025"
SUMMARY = "Grazzi et al. (ICLR 2025): negative eigenvalues let DeltaNet and Mamba solve parity"
SOURCE = "Grazzi et al. 2025, Section 5.1 table (arXiv v5 Table 3)"
METRIC = "scaled accuracy beyond training"
# (model as our variants are labelled, the paper's row, its number); what the number claims follows from the
# rules above (paper_claim)
PARITY = [
    ("deltanet [-1,1]", "DeltaNet [-1,1]", "1.000"),
    ("deltanet [0,1]", "DeltaNet [0,1]", "0.017"),
    ("ssm [-1,1]", "Mamba [-1,1]", "1.000"),
    ("ssm [0,1]", "Mamba [0,1]", "0.000"),
    ("lstm", "sLSTM", "1.000"),
    ("mlstm", "mLSTM", "0.087"),
    ("transformer", "Transformer", "0.022"),
]


def paper_claim(number: str) -> str:
    """What a paper's scaled accuracy claims under the module's rules: "solves" (>= SOLVED) or "near chance"
    (<= NEAR_CHANCE); a number between the two claims neither.

    >>> paper_claim("1.000"), paper_claim("0.087")
    ('solves', 'near chance')
    """
    if float(number) >= SOLVED:
        return "solves"
    if float(number) <= NEAR_CHANCE:
        return "near chance"
    raise ValueError(f"a paper's {number} is neither solved (>= {SOLVED}) nor near chance (<= {NEAR_CHANCE})")


def variant(model: str, model_params: str) -> str:
    """A trial's model as the paper names its rows: the eigenvalue range where the family has the switch.

    >>> variant("deltanet", '{"allow_neg_eigval": true}'), variant("lstm", "{}")
    ('deltanet [-1,1]', 'lstm')
    """
    params = json.loads(model_params) if isinstance(model_params, str) and model_params else {}
    if "allow_neg_eigval" not in params:
        return model
    return f"{model} {'[-1,1]' if params['allow_neg_eigval'] else '[0,1]'}"


def parity_trials(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per parity trial: variant, seed, status, under_trained, and its plain and scaled accuracy of
    the final parity averaged over the evaluated lengths beyond its training lengths (NaN for a failed one)."""
    mine = runs[(runs["task"].astype(str).str.startswith("state_tracking"))
                & runs["task_params"].astype(str).str.contains('"group": "parity"')]
    rows = []
    for trial_id, trial in mine.groupby("trial_id", sort=True):
        first = trial.iloc[0]
        beyond = trial[trial["eval_len"] > trial["train_len"]]
        accuracy = beyond["accuracy"].mean() if (trial["status"] == "ok").all() else float("nan")
        chance = get_task("state_tracking", **json.loads(first["task_params"])).chance_level
        rows.append({"trial_id": trial_id, "variant": variant(first["model"], first["model_params"]),
                     "seed": int(first["seed"]), "status": first["status"],
                     "under_trained": bool(trial["under_trained"].astype(bool).any()),
                     "test_lengths": ",".join(str(int(n)) for n in sorted(beyond["eval_len"].unique())),
                     "accuracy": accuracy, "scaled": scaled(accuracy, chance)})
    return pd.DataFrame(rows, columns=["trial_id", "variant", "seed", "status", "under_trained", "test_lengths",
                                       "accuracy", "scaled"])


def model_finding(trials: pd.DataFrame, model: str, paper: str, kind: str, claim: str, source: str,
                  paper_row: str) -> Finding:
    """The finding for one model's claim ("solves" or "near chance") under the module's rules."""
    mine = trials[(trials["variant"] == model) & trials["scaled"].notna()]
    if mine.empty:
        return Finding(claim, model, source, METRIC, paper, NOT_COMPARABLE,
                       f"no finished trial of {model} in these runs")
    summary = seed_summary(mine["scaled"], key=("parity", model))
    plain = float(mine["accuracy"].mean())
    lengths = mine["test_lengths"].iloc[0]
    if kind == "solves":
        ok = summary.mean >= SOLVED
        rule = f"seed mean {summary.mean:.3f} {'>=' if ok else '<'} {SOLVED} (solved)"
    else:
        ok = summary.mean <= NEAR_CHANCE
        rule = f"seed mean {summary.mean:.3f} {'<=' if ok else '>'} {NEAR_CHANCE} (near chance)"
    under = int(mine["under_trained"].sum())
    note = f"; {under} of {len(mine)} seeds stopped at the step budget still improving" if under else ""
    why = (f"{rule}; at lengths {lengths}, best seed {summary.best:.3f}; the paper's row is {paper_row}"
           f"{note}")
    return Finding(claim, model, source, METRIC, paper, HOLDS if ok else DOES_NOT_HOLD, why, summary.mean,
                   summary.low, summary.high, plain, summary.seeds)


def contrast_finding(trials: pd.DataFrame, family: str, paper_row: str) -> Finding:
    """"[-1,1] beats [0,1]" for one family: holds when the [-1,1] interval lies above the [0,1] one and above
    near chance."""
    claim = f"negative eigenvalues unlock parity in {paper_row}"
    paper = "0.983 (1.000 - 0.017)" if family == "deltanet" else "1.000 (1.000 - 0.000)"
    sides = {}
    for side in ("[-1,1]", "[0,1]"):
        values = trials.loc[(trials["variant"] == f"{family} {side}") & trials["scaled"].notna(), "scaled"]
        sides[side] = seed_summary(values, key=("parity", f"{family} {side}"))
    neg, pos = sides["[-1,1]"], sides["[0,1]"]
    if neg.seeds < 2 or pos.seeds < 2:
        return Finding(claim, f"{family} [-1,1] vs [0,1]", SOURCE, "scaled accuracy difference", paper,
                       NOT_COMPARABLE, f"an interval needs 2 seeds of each; have {neg.seeds} and {pos.seeds}")
    above = neg.low > pos.high
    ok = above and neg.low > NEAR_CHANCE
    why = (f"[-1,1] {neg.mean:.3f} [{neg.low:.3f}, {neg.high:.3f}] "
           f"{'lies above' if above else 'overlaps or lies below'} [0,1] {pos.mean:.3f} [{pos.low:.3f}, {pos.high:.3f}]"
           f"{'' if ok or not above else f', but not above near chance ({NEAR_CHANCE})'}")
    return Finding(claim, f"{family} [-1,1] vs [0,1]", SOURCE, "scaled accuracy difference", paper,
                   HOLDS if ok else DOES_NOT_HOLD, why, neg.mean - pos.mean, seeds=min(neg.seeds, pos.seeds))


def judge(runs: pd.DataFrame) -> list[Finding]:
    """Every claim of the module docstring, in its order."""
    trials = parity_trials(runs)
    findings = []
    for model, paper_row, paper in PARITY:
        kind = paper_claim(paper)
        claim = f"{paper_row} {'solves' if kind == 'solves' else 'does not solve'} parity beyond its training lengths"
        findings.append(model_finding(trials, model, paper, kind, claim, SOURCE, paper_row))
    findings.append(contrast_finding(trials, "deltanet", "DeltaNet"))
    findings.append(contrast_finding(trials, "ssm", "Mamba"))
    for model, paper in (("deltanet [-1,1]", "0.971"), ("deltanet [0,1]", "0.314")):
        findings.append(Finding(f"modular arithmetic without brackets: {model}", model, SOURCE,
                                "scaled accuracy", paper, NOT_COMPARABLE,
                                "membench has no modular-arithmetic task (expressions with operators); "
                                "state_tracking's cyclic group is modular counting, a different language"))
    return findings
