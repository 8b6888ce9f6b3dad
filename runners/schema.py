"""The schema of the four results tables: their columns, the statuses of a trial, and what each cell may hold.

One home for the tables' shape, imported by the code that makes rows (runners.rows), the code that writes
and reads the tables and trial files (runners.tables) and the reports; it imports none of them.

    table          columns (in order)                          one row per             named by (ROW_KEYS)
    runs           RUNS_COLUMNS                                trial and eval slice    trial_id, slice
    lags           LAGS_COLUMNS                                trial, length, bucket   trial_id, eval_len, lag_bucket
    curves         CURVES_COLUMNS                              trial and evaluation    trial_id, step
    slice_curves   SLICE_CURVES_COLUMNS                        ... and eval slice      trial_id, slice, step

A cell is valid when `cell_problems` finds nothing wrong with it: text in the text columns (STRING_COLUMNS),
one of STATUSES in `status`, true or false in the yes/no columns, otherwise a number (an integer for
lengths, seeds, steps and counts; in [0, 1] for a fraction; not negative except a seed or a loss), or empty
(NaN: a failed trial's unknown metric), except in the columns that name a row.
"""

from __future__ import annotations

import pandas as pd

STATUSES = ("ok", "oom", "diverged", "timeout", "error", "skipped")  # a trial's (or one slice's) outcome, runs.csv
# `status`; "skipped": a pretrained model's slice beyond its positions (the error column says why)

RUNS_COLUMNS = [
    "trial_id", "task", "task_version", "task_params", "model", "model_version", "model_params", "d_model", "n_layers",
    "params", "train_len", "train_len_min", "train_len_max", "eval_len", "slice", "is_train_len", "seed", "lr",
    "batch_size", "steps", "accuracy", "scaled_accuracy",
    "exact_match", "loss", "scored", "train_seconds", "compile_seconds", "ms_per_step", "tokens_per_second",
    "peak_memory_mb", "flops_per_step", "tflops_per_s", "attention_flops_share", "memory_flops_share", "state_size",
    "time_to_accuracy_seconds", "time_to_accuracy_steps", "time_to_accuracy_tokens", "stop_reason", "under_trained",
    "chance_plateau",
    "status", "error", "device", "precision", "git_commit", "torch_version",
    # what the model read (context_tokens: the length for a family; tokens of a pretrained model's text), the
    # chance level of its task, a pretrained model's choice accuracy and cost of reading (runners/pretrained_eval.py)
    "context_tokens", "chance_level", "accuracy_choice", "read_tokens_per_second", "read_peak_memory_mb",
    "kv_cache_bytes_per_token",
]
# lag_unit: "symbols" (the task's positions, every model) or "tokens" (a pretrained model's tokenizer)
LAGS_COLUMNS = ["trial_id", "task", "model", "train_len", "eval_len", "seed", "lag_bucket", "accuracy", "count",
                "lag_unit"]
CURVES_COLUMNS = ["trial_id", "task", "model", "train_len", "seed", "step", "seconds", "tokens", "train_loss",
                  "eval_accuracy"]
SLICE_CURVES_COLUMNS = ["trial_id", "task", "model", "d_model", "train_len", "seed", "slice", "eval_len", "step",
                        "seconds", "tokens", "accuracy"]
TABLES = {"runs": RUNS_COLUMNS, "lags": LAGS_COLUMNS, "curves": CURVES_COLUMNS, "slice_curves": SLICE_CURVES_COLUMNS}
# the columns that name one row of each table (a user's own columns follow a row through a rewrite by them)
ROW_KEYS = {"runs": ["trial_id", "slice"], "lags": ["trial_id", "eval_len", "lag_unit", "lag_bucket"],
            "curves": ["trial_id", "step"], "slice_curves": ["trial_id", "slice", "step"]}
# row-key columns added after their table was first written, and the value every earlier row had
KEYS_ADDED_LATER = {"lag_unit": "symbols"}

STRING_COLUMNS = {"chance_plateau": str,
                  "trial_id": str, "task": str, "task_params": str, "model_params": str, "model": str, "slice": str,
                  "status": str, "error": str, "device": str, "precision": str, "stop_reason": str, "git_commit": str,
                  "torch_version": str, "lag_unit": str}

# --- the checks of a table's values: one home for the tables read back and the trial files ---------------
_INTEGER = {"d_model", "n_layers", "params", "train_len", "train_len_min", "train_len_max", "eval_len", "seed",
            "batch_size", "steps", "lag_bucket",
            "count", "step", "tokens", "task_version", "model_version", "state_size", "time_to_accuracy_steps",
            "time_to_accuracy_tokens"}
_FRACTION = {"accuracy", "exact_match", "eval_accuracy", "attention_flops_share", "memory_flops_share",
             "chance_level", "accuracy_choice"}
_SIGNED = {"seed", "loss", "train_loss", "scaled_accuracy"}  # every other number is a count, size, time, rate or
# fraction: >= 0
_BOOLEAN = {"is_train_len", "under_trained"}  # True/False (or text or 0/1 that reads as one)
_REQUIRED = {"trial_id", "task", "model", "slice", "status", "is_train_len"}  # never empty
_TRUE, _FALSE = {"true", "1", "1.0"}, {"false", "0", "0.0"}  # the text of a yes/no cell, lower case


def cell_problems(name: str, table: pd.DataFrame) -> pd.Series:
    """Per row of `table` (table `name`, read from a CSV or made from trial files' rows): '' when its cells
    are valid, else its first bad cell, as "column C: V why". A cell is bad when it is: empty in trial_id,
    task, model, slice, status or is_train_len; not text in a text column; an unknown status; not true or
    false in a yes/no column; not a number (a bool is not one) in a numeric column; not an integer where one
    is due (lengths, seeds, steps, counts); outside [0, 1] for a fraction; negative, except in seed and the
    losses. Empty numeric cells are valid (NaN: a failed trial's metrics). Columns outside the schema (a
    user's own) are not checked.

        >>> rows = pd.DataFrame({"trial_id": ["ab12", "ab12"], "slice": ["L8", "L16"], "accuracy": [0.5, 5.0]})
        >>> cell_problems("runs", rows).tolist()
        ['', 'column accuracy: 5.0 is outside [0, 1]']
    """
    found = pd.Series("", index=table.index, dtype=object)
    for column in (c for c in TABLES[name] if c in table.columns):
        values = table[column]
        for bad, why in _bad_cells(column, values):
            first = bad & (found == "")
            found[first] = [f"column {column}: {v!r} {why}" for v in values[first]]
    return found


def _bad_cells(column: str, values: pd.Series) -> list[tuple[pd.Series, str]]:
    """(mask of bad cells, why) for each rule of cell_problems that applies to `column`, in order."""
    if column in STRING_COLUMNS:
        text = _each(values, lambda v: isinstance(v, str), pd.api.types.is_string_dtype(values.dtype))
        empty = values.isna() | (text & (values.astype(str).str.strip() == ""))
        rules = [(empty, "is empty")] if column in _REQUIRED else []
        rules.append((values.notna() & ~text, "is not text"))
        if column == "status":
            rules.append((~empty & ~values.isin(STATUSES), f"is not a status ({', '.join(STATUSES)})"))
        return rules
    if column in _BOOLEAN:
        readable = _each(values, lambda v: str(v).strip().lower() in _TRUE | _FALSE, values.dtype == bool)
        rules = [(values.isna(), "is empty")] if column in _REQUIRED else []
        return [*rules, (values.notna() & ~readable, "is not true or false")]
    numbers = pd.to_numeric(values, errors="coerce")
    a_bool = _each(values, lambda v: isinstance(v, bool), values.dtype == bool)
    rules = [((numbers.isna() & values.notna()) | a_bool, "is not a number")]
    if column in _INTEGER:
        rules.append((numbers.notna() & (numbers != numbers.round()), "is not an integer"))
    if column in _FRACTION:
        rules.append((numbers.notna() & ((numbers < 0) | (numbers > 1)), "is outside [0, 1]"))
    elif column not in _SIGNED:
        rules.append((numbers.notna() & (numbers < 0), "is negative"))
    return rules


def _each(values: pd.Series, test, typed: bool) -> pd.Series:
    """`test` of each value of an object column (mixed values: a trial file's, or a CSV column with text in
    it); for a column of one dtype, `typed` (what `test` gives for every value of that dtype)."""
    if values.dtype == object:
        return values.map(test).astype(bool)
    return pd.Series(bool(typed), index=values.index)


def as_bool(value) -> bool:
    """A yes/no cell's value, as written in a trial file (a bool) or read back from a CSV (its text).

        >>> [as_bool(v) for v in (True, "False", " true", 1.0, 0)]
        [True, False, True, True, False]
    """
    return str(value).strip().lower() in _TRUE
