"""A trial's rows: what a finished (or failed) trial adds to each results table, as the payload of its file.

runners.trial runs a trial; this module turns what it measured into the payload that runners.tables writes
as trials/<trial_id>.json, one list of rows per table of runners.schema, each row in its table's columns:

    {"trial_id": ..., "config": {...}, "runs": [row per eval slice], "lags": [...], "curves": [...],
     "slice_curves": [row per eval slice per evaluation]}

    runs          one row per eval slice: the config, the cost, the timing, the slice's metrics, the status
    lags          accuracy per lag bucket at each eval length (slices of one length pooled), lags counted in
                  symbols, and for a pretrained: model also in tokens (lag_unit)
    curves        the training curve: one row per evaluation
    slice_curves  every slice's accuracy at every evaluation

A failed trial (`failed_trial`, or run_trial's "oom", "diverged" and "error") still has one runs row per
slice, NaN where a metric is unknown, and no lags, curves or slice_curves rows; a slice that failed alone
gives its own status and error in its runs row. The cost columns come from the costs measured before
training (runners.trial.TrialCost), so they are known even when training failed. Every runs row records
where and with what it ran: device, precision, `git_commit()` and the torch version.
"""

from __future__ import annotations

import functools
import json
import math
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from membench.runners import metrics
from membench.runners.precision import precision_name
from membench.runners.schema import CURVES_COLUMNS, LAGS_COLUMNS, RUNS_COLUMNS

if TYPE_CHECKING:  # annotations only: runners.trial imports this module
    from membench.runners.train import TrainOutcome
    from membench.runners.trial import TrialConfig, TrialCost


def trial_payload(config: TrialConfig, task_params: dict, cost: TrialCost | None, model,
                  outcome: TrainOutcome | None, status: str, error: str, peak_mb: float, device: torch.device) -> dict:
    """The payload of `config`'s trial file (see the module doc): its rows of every table.

    `task_params`: the task's params with its defaults filled in (the config's own when the task could not
    be built); `cost`, `model`: the measured costs and the model they were asked of (None: not measured);
    `outcome`: what training and evaluation gave (None: training failed, no metrics); `status`, `error`:
    the trial's, overridden in a runs row by a slice that failed alone; `peak_mb`: peak memory (NaN: unknown).
    """
    return {
        "trial_id": config.trial_id,
        "config": config.to_dict(),
        "runs": _runs_rows(config, task_params, cost, model, outcome, status, error, peak_mb, device),
        "lags": _lag_rows(config, outcome),
        "curves": _curve_rows(config, outcome),
        "slice_curves": _slice_curve_rows(config, outcome),
    }


def failed_trial(config: TrialConfig, status: str, error: BaseException | str, device: str,
                 trace: str = "") -> dict:
    """The payload of a trial that failed before it had results, or whose process died before it could report:
    rows with NaN metrics, made from the config alone (nothing here calls user code that could raise again)."""
    reason = error if isinstance(error, str) else metrics.short_error(error)
    payload = trial_payload(config, config.task_params, None, None, None, status, reason, math.nan,
                            torch.device(device))
    return {**payload, "traceback": trace} if trace else payload


def _runs_rows(config: TrialConfig, task_params: dict, cost: TrialCost | None, model, outcome: TrainOutcome | None,
               status: str, error: str, peak_mb: float, device: torch.device) -> list[dict]:
    nan = math.nan
    if cost is not None:  # analytic cost, known even when training failed
        # the output head runs only on the gathered scored rows of each segment, not on all B*T positions
        head_rows = outcome.head_rows if outcome is not None and outcome.head_rows else [None] * len(config.segments)
        step_flops = [
            3 * (flops - model.head_flops(config.batch_size * s.seq_len)
                 + model.head_flops(rows if rows is not None else config.batch_size * s.seq_len))
            for s, flops, rows in zip(config.segments, cost.flops, head_rows)
        ]
        # per step: the mean over the steps taken, or over the mixture's weights before any step
        counts = outcome.segment_steps if outcome is not None and outcome.steps else [s.weight for s in config.segments]

        def mean_per_step(per_segment: list[float]) -> float:
            return sum(c * 3 * f for c, f in zip(counts, per_segment)) / sum(counts)

        mean_flops = sum(c * f for c, f in zip(counts, step_flops)) / sum(counts)
        attention_share = mean_per_step(cost.attention_flops) / mean_flops if mean_flops else nan
        memory_share = mean_per_step(cost.memory_flops) / mean_flops if mean_flops else nan
        params = cost.params
    else:
        mean_flops = attention_share = memory_share = params = nan
    common = {
        "trial_id": config.trial_id, "task": config.task, "task_version": config.task_version,
        "task_params": json.dumps(task_params, sort_keys=True, default=repr),
        "model": config.model, "model_version": config.model_version,
        "model_params": json.dumps(config.model_params, sort_keys=True), "d_model": config.d_model,
        "n_layers": config.n_layers, "params": params,
        "train_len": config.train_len, "train_len_min": config.trained_lengths()[0],
        "train_len_max": config.trained_lengths()[1], "seed": config.seed, "lr": config.lr,
        "batch_size": config.batch_size,
    }
    timing = dict.fromkeys(
        ["steps", "train_seconds", "compile_seconds", "ms_per_step", "tokens_per_second", "tflops_per_s",
         "time_to_accuracy_seconds", "time_to_accuracy_steps", "time_to_accuracy_tokens"], nan)
    if outcome is not None and outcome.steps > 0:
        seconds = outcome.train_seconds
        timing.update(
            steps=outcome.steps, train_seconds=seconds, compile_seconds=outcome.compile_seconds,
            ms_per_step=1000 * seconds / outcome.steps,
            tokens_per_second=outcome.tokens / seconds,
            tflops_per_s=mean_flops * outcome.steps / seconds / 1e12,
            time_to_accuracy_seconds=outcome.time_to_accuracy.get("seconds", nan),
            time_to_accuracy_steps=outcome.time_to_accuracy.get("steps", nan),
            time_to_accuracy_tokens=outcome.time_to_accuracy.get("tokens", nan),
        )
    elif outcome is not None:
        timing["steps"] = 0
    tail = {"device": metrics.device_name(device), "precision": _precision(device), "git_commit": git_commit(),
            "torch_version": torch.__version__}
    rows = []
    for s in config.eval_slices:
        result = outcome.slices.get(s.name) if outcome is not None else None
        row_status, row_error = status, error
        if result is not None and result.status != "ok":  # this slice alone failed (e.g. oom at 4x length)
            row_status, row_error = result.status, result.error
        scored = result is not None and result.status == "ok"
        row = {
            **common, **timing, **tail, "eval_len": s.seq_len, "slice": s.name,
            "is_train_len": s.seq_len == config.train_len,
            "accuracy": result.accuracy if scored else nan,
            "exact_match": result.exact_match if scored else nan,
            "loss": result.loss if scored else nan,
            "scored": result.scored if scored else nan,
            "peak_memory_mb": peak_mb, "flops_per_step": mean_flops, "attention_flops_share": attention_share,
            "memory_flops_share": memory_share,
            "state_size": cost.state_size[s.name] if cost is not None else nan,
            "status": row_status, "error": row_error,
            "stop_reason": outcome.stop_reason if outcome is not None else "",
            "under_trained": outcome.under_trained if outcome is not None else False,
            "chance_plateau": outcome.chance_plateau if outcome is not None else "",
            "scaled_accuracy": metrics.scaled_accuracy(result.accuracy, config.slice_task(s).chance_level)
            if scored else nan,
            **_text_columns(config, s, result),
        }
        rows.append({c: row[c] for c in RUNS_COLUMNS})
    return rows


def _text_columns(config: TrialConfig, s, result) -> dict:
    """context_tokens (a pretrained model's mean tokens per sequence; the slice's length for a family, whose
    tokens are the task's symbols), the task's chance level, and a pretrained model's choice accuracy and cost
    of reading (NaN where unknown). The chance level needs the task, built only for a trial that ran."""
    names = ("accuracy_choice", "read_tokens_per_second", "read_peak_memory_mb", "kv_cache_bytes_per_token")
    found = {n: getattr(result, n) if result is not None else math.nan for n in names}
    context = result.context_tokens if result is not None and not math.isnan(result.context_tokens) else s.seq_len
    chance = config.slice_task(s).chance_level if result is not None else math.nan
    return {**found, "context_tokens": context, "chance_level": chance}


def _precision(device: torch.device) -> str:
    """The `precision` of the trial's rows; '' when this process cannot see the device (a dead worker's GPU)."""
    if device.type == "cuda" and not torch.cuda.is_available():
        return ""
    return precision_name(device)


def _lag_rows(config: TrialConfig, outcome: TrainOutcome | None) -> list[dict]:
    """Accuracy by lag bucket at each eval length (slices of the same length are pooled)."""
    if outcome is None:
        return []
    pooled: dict[tuple[int, str], dict[int, list[int]]] = {}  # (eval_len, unit) -> bucket -> [correct, count]
    for s in config.eval_slices:
        result = outcome.slices.get(s.name)
        if result is None or result.status != "ok":
            continue
        for unit, lags in (("symbols", result.lags), ("tokens", result.token_lags)):  # tokens: pretrained models
            for bucket, (correct, count) in lags.items():
                cell = pooled.setdefault((s.seq_len, unit), {}).setdefault(bucket, [0, 0])
                cell[0] += correct
                cell[1] += count
    rows = [
        {"trial_id": config.trial_id, "task": config.task, "model": config.model, "train_len": config.train_len,
         "eval_len": eval_len, "seed": config.seed, "lag_bucket": bucket, "accuracy": correct / count,
         "count": count, "lag_unit": unit}
        for (eval_len, unit), buckets in sorted(pooled.items())
        for bucket, (correct, count) in sorted(buckets.items())
    ]
    return [{c: row[c] for c in LAGS_COLUMNS} for row in rows]


def _slice_curve_rows(config: TrialConfig, outcome: TrainOutcome | None) -> list[dict]:
    if outcome is None:
        return []
    lengths = {s.name: s.seq_len for s in config.eval_slices}
    return [{"trial_id": config.trial_id, "task": config.task, "model": config.model, "d_model": config.d_model,
             "train_len": config.train_len, "seed": config.seed, "slice": point["slice"],
             "eval_len": lengths[point["slice"]], "step": point["step"], "seconds": point["seconds"],
             "tokens": point["tokens"], "accuracy": point["accuracy"]}
            for point in outcome.slice_curve]


def _curve_rows(config: TrialConfig, outcome: TrainOutcome | None) -> list[dict]:
    if outcome is None:
        return []
    rows = [
        {"trial_id": config.trial_id, "task": config.task, "model": config.model, "train_len": config.train_len,
         "seed": config.seed, **point}
        for point in outcome.curve
    ]
    return [{c: row[c] for c in CURVES_COLUMNS} for row in rows]


# --- where a result came from: the runs rows' git_commit ------------------------------------------------
CODE_PATHS = ("membench", "memtasks", "models", "runners", "pyproject.toml")  # what a result depends on


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """Short commit of the checkout this code runs from, '+dirty' when its code (CODE_PATHS) has
    uncommitted changes, or '' outside a git checkout. Read once per process, when its first trial
    starts, so commits made while a sweep runs do not relabel the code it loaded."""
    return describe_checkout(Path(__file__).resolve().parent.parent)


def describe_checkout(root: Path) -> str:
    """'<short commit>[+dirty]' of the git checkout at `root` (see git_commit), '' if it is none."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root,
                              capture_output=True, text=True, timeout=5)
        changes = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
                                 cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    if head.returncode != 0:
        return ""
    return head.stdout.strip() + ("+dirty" if changes.returncode == 0 and changes.stdout.strip() else "")
