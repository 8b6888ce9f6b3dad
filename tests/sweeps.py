"""Synthetic sweep tables for the reporting tests: runs, lags and curves rows whose leaderboard is known
(worked out by hand in tests/test_leaderboard.py), written as a results directory."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from membench.runners.schema import CURVES_COLUMNS, LAGS_COLUMNS, RUNS_COLUMNS

PARAMS = {"mlp": 1000, "lstm": 5000, "gru": 4000}
STATE = {"mlp": 0, "lstm": 256, "gru": 128}
NAN = float("nan")


def trial(task, model, train_len, accuracy, seed=0, status="ok", lr=1e-3, generalisation=(0.5, 0.25),
          task_params="{}", train_seconds=2.0):
    """Runs rows of one trial: its trained length, and 2x and 4x that length scaled by `generalisation`."""
    trial_id = f"{task}-{model}-{train_len}-{seed}-{lr}-{task_params}"
    failed = status != "ok"
    rows = []
    for factor, scale in ((1, 1.0), (2, generalisation[0]), (4, generalisation[1])):
        if failed and factor > 1:
            break
        eval_len = train_len * factor
        steps = 100 + seed  # the steps taken (early stopping) differ between seeds of one config
        flops = 6.0 * PARAMS[model] * 8 * train_len
        rows.append({
            "trial_id": trial_id, "task": task, "task_version": 1, "task_params": task_params, "model": model,
            "d_model": 32, "n_layers": 2, "params": PARAMS[model], "train_len": train_len, "eval_len": eval_len,
            "slice": f"L{eval_len}", "is_train_len": factor == 1, "seed": seed, "lr": lr, "batch_size": 8,
            "steps": NAN if failed else steps, "accuracy": NAN if failed else accuracy * scale,
            "exact_match": NAN if failed else (accuracy * scale) ** 4, "loss": NAN if failed else 1 - accuracy,
            "train_seconds": NAN if failed else train_seconds, "ms_per_step": 10.0 * train_len / 64,
            "tokens_per_second": 1e4, "peak_memory_mb": 10.0 + train_len / 64, "flops_per_step": flops,
            "tflops_per_s": 1e-3, "attention_flops_share": 0.0, "state_size": STATE[model],
            "time_to_accuracy_seconds": NAN, "time_to_accuracy_steps": NAN, "time_to_accuracy_tokens": NAN,
            "status": status, "error": "" if not failed else "out of memory", "device": "cpu",
            "git_commit": "abc1234", "torch_version": "2.13.0", "model_params": "{}",
            "scored": NAN if failed else 100, "compile_seconds": 0.0, "memory_flops_share": 0.0,
            "stop_reason": "" if failed else "threshold", "under_trained": False, "precision": "fp32",
        })
    if not failed:  # a sliced evaluation beside the plain one: it must not enter the leaderboard
        rows.append({**rows[0], "slice": f"L{train_len}-kv4", "accuracy": 0.0})
    return rows


def known_runs() -> pd.DataFrame:
    """Two tasks, three families; the expected leaderboard is worked out in `test_values_computed_by_hand`."""
    rows = []
    for model, accs in (("lstm", (1.0, 0.95, 0.5)), ("gru", (0.9, 0.89, 0.95)), ("mlp", (0.1, 0.1, 0.1))):
        for length, acc in zip((64, 128, 256), accs):
            rows += trial("copy", model, length, acc)
    rows += trial("recall", "lstm", 64, 1.0, seed=0) + trial("recall", "lstm", 64, 0.8, seed=1)
    rows += trial("recall", "lstm", 128, 0.6, seed=0) + trial("recall", "lstm", 128, NAN, seed=1, status="oom")
    rows += trial("recall", "gru", 64, 0.7, seed=0) + trial("recall", "gru", 64, 0.7, seed=1)
    rows += trial("recall", "gru", 64, 0.95, seed=0, lr=3e-3) + trial("recall", "gru", 64, 0.85, seed=1, lr=3e-3)
    # gru at recall 128: missing from the sweep
    rows += trial("recall", "mlp", 64, 0.2) + trial("recall", "mlp", 128, 0.2)
    return pd.DataFrame(rows, columns=RUNS_COLUMNS)


def lags_for(runs: pd.DataFrame) -> pd.DataFrame:
    """Per ok row: accuracy falling with lag from the row's accuracy, buckets 1 .. eval_len/2."""
    rows = []
    for _, r in runs[(runs["status"] == "ok") & ~runs["slice"].str.contains("-")].iterrows():
        bucket = 1
        while bucket < r["eval_len"]:
            acc = r["accuracy"] * (1.0 if bucket <= 16 else 16 / bucket)
            rows.append([r["trial_id"], r["task"], r["model"], r["train_len"], r["eval_len"], r["seed"], bucket,
                         acc, 10 * bucket, "symbols"])
            bucket *= 2
    return pd.DataFrame(rows, columns=LAGS_COLUMNS)


def curves_for(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    trials = runs[(runs["status"] == "ok") & (runs["eval_len"] == runs["train_len"])].drop_duplicates("trial_id")
    for _, r in trials.iterrows():
        for step in range(0, 101, 20):
            evaluated = step % 40 == 0 or step == 100
            rows.append([r["trial_id"], r["task"], r["model"], r["train_len"], r["seed"], step, step * 0.02,
                         step * 8 * r["train_len"], 3.0 * (1 - step / 120),
                         r["accuracy"] * step / 100 if evaluated else NAN])
    return pd.DataFrame(rows, columns=CURVES_COLUMNS)


def write_sweep(directory: Path, runs: pd.DataFrame | None = None) -> Path:
    """A sweep directory with runs.csv, lags.csv and curves.csv made from `runs` (default: known_runs)."""
    runs = known_runs() if runs is None else runs
    directory.mkdir(parents=True, exist_ok=True)
    runs.to_csv(directory / "runs.csv", index=False)
    lags_for(runs).to_csv(directory / "lags.csv", index=False)
    curves_for(runs).to_csv(directory / "curves.csv", index=False)
    return directory
