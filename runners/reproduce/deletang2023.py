"""deletang2023: Delétang et al. (ICLR 2023), "Neural Networks and the Chomsky Hierarchy", where it overlaps
with membench: on Parity Check (a regular task), recurrent networks generalise to longer lengths, the
Transformer does not. It judges the runs of grazzi2025's recipe (runners/presets/reproduce_grazzi2025.toml:
an Elman RNN, an LSTM and a Transformer among them), with that module's per-trial numbers and rules.

The paper's numbers (Table 2, Parity Check): accuracy averaged over test lengths 41-500 after training on
lengths up to 40, the best over seeds and learning rates: RNN 100.0 %, LSTM 100.0 %, the Transformer near
chance (50 %). Ours: grazzi2025's accuracy of the final parity beyond training (64, 128, 256), scaled by
chance; plain accuracy beside it. Rules (grazzi2025's): "generalises" holds when our seed mean of scaled
accuracy is >= 0.9 (plain >= 0.95); "does not" holds when it is <= 0.1 (plain <= 0.55).

    >>> [f.model for f in judge(_example_runs())]
    ['rnn', 'lstm', 'transformer']
"""

from __future__ import annotations

import pandas as pd

from membench.runners.reproduce.claims import Finding
from membench.runners.reproduce.grazzi2025 import model_finding, parity_trials

TITLE = "Delétang et al. 2023: recurrent networks generalise parity, the Transformer does not"
SPEC = "reproduce_grazzi2025"
SUMMARY = "Delétang et al. (ICLR 2023): RNN and LSTM generalise parity to longer lengths, the Transformer does not"
SOURCE = "Delétang et al. 2023, Table 2 (Parity Check)"
CLAIMS = [  # (model, the paper's number, "solves" or "near chance")
    ("rnn", "1.000 (100.0 %)", "solves"),
    ("lstm", "1.000 (100.0 %)", "solves"),
    ("transformer", "near chance", "near chance"),
]


def judge(runs: pd.DataFrame) -> list[Finding]:
    """One finding per model of CLAIMS."""
    trials = parity_trials(runs)
    findings = []
    for model, paper, kind in CLAIMS:
        verb = "generalises" if kind == "solves" else "does not generalise"
        claim = f"the {model} {verb} parity to longer lengths"
        findings.append(model_finding(trials, model, paper, kind, claim, SOURCE, f"{model} of Table 2"))
    return findings


def _example_runs() -> pd.DataFrame:
    """A runs table of three one-seed parity trials (for the docstring's example)."""
    rows = [{"trial_id": model, "task": "state_tracking", "task_params": '{"group": "parity", "score": "all"}',
             "model": model, "model_params": "{}", "seed": 0, "status": "ok", "under_trained": False,
             "train_len": 40, "eval_len": 64, "accuracy": 0.5 if model == "transformer" else 1.0}
            for model in ("rnn", "lstm", "transformer")]
    return pd.DataFrame(rows)
