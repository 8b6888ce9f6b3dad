"""Which cells a sweep's budget is likely to leave under-trained, said before it runs (`membench plan`).

A trial is under-trained when it stops at its step budget or its time cap below the threshold while still
improving (runners/train.py): its accuracy may understate what the family can remember. Two things tell in
advance that a budget will do that to a trial:

    the time cap   the cost model (runners/cost/estimate.py) expects its `steps`, evaluations included, to take
                   longer than its time_cap: the cap, not the budget, will end it
    earlier runs   (`--against DIR`) a finished sweep holds a trial of the same cell (task and its params,
                   family and its params, width, layers, trained length) that was under-trained at a step
                   budget no larger than this one, or reached the threshold only after more steps than this
                   budget allows

A cell (task, family, trained length) is likely under-trained when any of its trials is. Worked example: the
smoke preset's external_memory trains 20 steps; against results/smoke-cpu, whose external_memory trials were
under-trained at 20 steps, every one of its cells is flagged "under-trained at 20 steps in results/smoke-cpu".
"""

from __future__ import annotations

import json

import pandas as pd

from membench.runners.cost.estimate import trial_seconds

CELL = ("task", "model", "train_len")


def cap_reason(trial, rates, workers: int = 1) -> str:
    """Why the time cap will likely end `trial` before its budget ('' when it should not)."""
    longest = max(s.seq_len for s in trial.segments)
    training, evaluating = trial_seconds(trial.model, trial.model_params, trial.vocab_size(), trial.d_model,
                                         trial.n_layers, trial.batch_size, longest, trial.steps, trial.eval_every,
                                         trial.eval_slices, rates, workers)
    if training + evaluating <= trial.time_cap:
        return ""
    return (f"its time cap ({trial.time_cap:g} s) comes before its {trial.steps} steps (about "
            f"{training + evaluating:.0f} s at the spec's rates)")


def earlier_reasons(runs: pd.DataFrame, directory: str) -> dict[tuple, list[tuple[int, int, str]]]:
    """From a finished sweep's runs.csv: per (task, model, model_params, d_model, n_layers, train_len), its
    trials' (steps budget evidence, kind, text): ("under", S) under-trained after S steps, ("needed", S) reached
    the threshold only at step S. Rows at the trained length only."""
    rows = runs[runs["eval_len"] == runs["train_len"]].drop_duplicates("trial_id")
    found: dict[tuple, list] = {}
    for row in rows.itertuples(index=False):
        key = (str(row.task).split("[")[0], row.model, str(row.model_params), int(row.d_model), int(row.n_layers),
               int(row.train_len), str(row.task_params))
        under = str(getattr(row, "under_trained", "")).strip().lower() in ("true", "1", "1.0")
        if under and pd.notna(row.steps):
            found.setdefault(key, []).append((int(row.steps), "under",
                                              f"under-trained after {int(row.steps)} steps in {directory}"))
        reached = getattr(row, "time_to_accuracy_steps", float("nan"))
        if pd.notna(reached):
            found.setdefault(key, []).append((int(reached), "needed",
                                              f"reached the threshold only after {int(reached)} steps in {directory}"))
    return found


def _matches(trial, key: tuple) -> bool:
    task, model, model_params, d_model, n_layers, train_len, task_params = key
    if (task, model, d_model, n_layers, train_len) != (trial.task, trial.model, trial.d_model, trial.n_layers,
                                                        trial.train_len):
        return False
    if model_params != json.dumps(trial.model_params, sort_keys=True):
        return False
    try:
        params = json.loads(task_params)
    except (TypeError, json.JSONDecodeError):
        return False
    return all(params.get(k) == v for k, v in trial.task_params.items())  # the run's params have defaults filled


def likely_under_trained(trials, rates, workers: int = 1, runs: pd.DataFrame | None = None,
                         directory: str = "") -> list[dict]:
    """The cells of `trials` (TrialConfigs, `rates` one per trial) likely to end under-trained, in sweep order:
    task, model, train_len, trials (how many of the cell's trials), why (the first reason found)."""
    evidence = earlier_reasons(runs, directory) if runs is not None else {}
    cells: dict[tuple, dict] = {}
    for trial, trial_rates in zip(trials, rates):
        why = cap_reason(trial, trial_rates, workers)
        if not why:
            for key, found in evidence.items():
                if _matches(trial, key):
                    why = next((text for steps, kind, text in found
                                if (kind == "under" and trial.steps <= steps) or (kind == "needed"
                                                                                  and steps > trial.steps)), "")
                    if why:
                        break
        if why:
            variant = json.dumps(trial.task_params, sort_keys=True)  # two tables of one task are two cells
            cell = cells.setdefault((trial.task, variant, trial.model, trial.train_len),
                                    {"task": trial.task, "model": trial.model, "train_len": trial.train_len,
                                     "trials": 0, "why": why})
            cell["trials"] += 1
    return list(cells.values())


def cell_count(trials) -> int:
    """How many cells (task, family, trained length) `trials` fill."""
    return len({(t.task, json.dumps(t.task_params, sort_keys=True), t.model, t.train_len) for t in trials})
