"""The keys of a sweep spec and how each table of one is checked: every key, its check and its default.

One home for the schema that runners/spec.py reads and runners/reference_docs.py writes into docs/sweeps.md:

    SETTINGS      key -> (check, default): what a sweep expands into trials (lengths, seeds, sizes, ...) and
                  what each trial is given; at the top level and in a task, model or cost-class table
    TOP_KEYS      the other top-level keys (name, device, compile, executor, include, tasks, models, ...)
    TASK_KEYS     the keys of a [tasks.NAME] table besides SETTINGS; its train_mixture segments take
                  SEGMENT_KEYS and its eval slices SLICE_KEYS
    MODEL_KEYS    the keys of a [models.NAME] table besides SETTINGS
    OVERRIDES     the settings a command line may override

A setting that is a field of TrialConfig takes that field's default, so a default is written once.
`merge_settings` applies the levels of the precedence (defaults < top level < task < cost class < model <
command line); one size key (target_params, d_model, d_models) at a level replaces the others, and so does one
length key (lengths, train_length_range):

    >>> merged = merge_settings([{"target_params": 50_000}, {"d_model": 32}])
    >>> merged["d_model"], merged["target_params"], merged["steps"]
    (32, None, 1000)

An unknown key is an error naming the closest valid ones (`check_keys`); a task table is checked by building
its task and every segment and slice of it (`TaskTable`), so a bad spec fails before anything runs.
"""

from __future__ import annotations

import dataclasses

from membench import checks
from membench.checks import LIMITS, ConfigError
from membench.memtasks import get_task, task_class
from membench.registry import unknown_name_message
from membench.runners.executors import EXECUTORS
from membench.runners.step_loss import COMPILE_MODES
from membench.runners.trial import BUDGETS, EARLY_STOPS, TrialConfig, check_length_range


def _length_range(value, label: str) -> list[int]:
    """A train_length_range: two lengths [lo, hi], lo < hi, each within the length limit."""
    check_length_range(value, label)
    return checks.list_of(checks.limited(checks.integer(1), "length"))(value, label)


_TRIAL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrialConfig)
                   if f.default is not dataclasses.MISSING}
SETTINGS = {
    "lengths": (checks.list_of(checks.limited(checks.integer(1), "length")), [64, 128, 256]),
    # [lo, hi]: one trial per seed etc. trained on lengths drawn from lo..hi each step (replaces lengths)
    "train_length_range": (_length_range, _TRIAL_DEFAULTS["train_length_range"]),  # (): none
    "seeds": (checks.list_of(checks.limited(checks.integer(0), "seed")), [0]),
    "learning_rates": (checks.list_of(checks.number(0, LIMITS["learning_rate"], low_open=True)), [1e-3]),
    "steps": (checks.limited(checks.integer(0), "steps"), 1000),  # 0: evaluate a pretrained: model as it is
    "shots": (checks.integer(0), _TRIAL_DEFAULTS["shots"]),
    "save_model": (lambda value, label: checks.check_bool(label, value), _TRIAL_DEFAULTS["save_model"]),
    "time_cap": (checks.number_or("auto", 0, low_open=True), _TRIAL_DEFAULTS["time_cap"]),
    # time_cap = "auto": sized from the trial's FLOPs by the cost model of runners/cost/estimate.py
    "flops_rate": (checks.number(0, low_open=True), 1e13),
    "step_latency": (checks.number(0), 0.0),
    "token_latency": (checks.number(0), None),  # none: each family's own (MemoryModel.token_latency)
    "max_time_cap": (checks.number(0, low_open=True), 1800.0),
    "batch_size": (checks.integer(1), 32),
    "threshold": (checks.number(0, 1, low_open=True), _TRIAL_DEFAULTS["threshold"]),
    "early_stop": (checks.choice(EARLY_STOPS), _TRIAL_DEFAULTS["early_stop"]),
    "budget": (checks.choice(BUDGETS), _TRIAL_DEFAULTS["budget"]),
    "patience": (checks.integer(1), _TRIAL_DEFAULTS["patience"]),
    "min_delta": (checks.number(0, 1), _TRIAL_DEFAULTS["min_delta"]),
    "min_steps": (checks.integer(0), _TRIAL_DEFAULTS["min_steps"]),
    "near_chance": (checks.number(0, 1, high_open=True), _TRIAL_DEFAULTS["near_chance"]),
    "second_lr": (checks.number(0, LIMITS["learning_rate"]), _TRIAL_DEFAULTS["second_lr"]),
    "eval_multipliers": (checks.list_of(checks.integer(1), allow_empty=True), [2, 4]),
    "eval_lengths": (checks.list_of(checks.limited(checks.integer(1), "length"), allow_empty=True), []),
    "eval_sequences": (checks.limited(checks.integer(1), "eval_sequences"), 256),
    "max_eval_tokens": (checks.integer(1), None),  # None: eval_sequences at every length
    "eval_every": (checks.integer(1), _TRIAL_DEFAULTS["eval_every"]),
    "log_every": (checks.integer(1), _TRIAL_DEFAULTS["log_every"]),
    "warmup": (checks.number(0, 1, high_open=True), _TRIAL_DEFAULTS["warmup"]),
    "weight_decay": (checks.number(0), _TRIAL_DEFAULTS["weight_decay"]),
    "grad_clip": (checks.number(0, low_open=True), _TRIAL_DEFAULTS["grad_clip"]),
    "target_params": (checks.one_or_list(checks.limited(checks.integer(1), "params")), 100_000),
    "match_tolerance": (checks.number(0, low_open=True), 0.10),
    "d_model": (checks.limited(checks.integer(1), "d_model"), None),
    "d_models": (checks.list_of(checks.limited(checks.integer(1), "d_model")), None),
    "n_layers": (checks.limited(checks.integer(1), "n_layers"), 2),
    "max_length": (checks.integer(1), None),
}
_SIZE_KEYS = ("target_params", "d_model", "d_models")  # one excludes the others; the most specific wins
_LENGTH_KEYS = ("lengths", "train_length_range")  # the same: fixed lengths, or one range drawn from
TOP_KEYS = {"name": checks.text, "description": checks.text, "recipe": checks.text, "device": checks.device,
            "compile": checks.choice(COMPILE_MODES), "executor": checks.choice(EXECUTORS),
            "cpu_threads": checks.limited(checks.integer(1), "cpu_threads"), "cpu_workers": checks.cpu_workers,
            "gpu_workers": checks.limited(checks.integer(1), "gpu_workers"),
            "tasks": None, "models": None, "cost_classes": checks.table, "include": checks.list_of(checks.text)}
TASK_KEYS = {"task": checks.text, "params": checks.table, "train_mixture": None, "eval_slices": None}
MODEL_KEYS = {"model": checks.text, "params": checks.table}
SEGMENT_KEYS = {"seq_len": checks.limited(checks.integer(1), "length"), "params": checks.table,
                "weight": checks.number(0, low_open=True)}
SLICE_KEYS = {"name": checks.name, "seq_len": checks.limited(checks.integer(1), "length"), "params": checks.table,
              "n_sequences": checks.limited(checks.integer(1), "eval_sequences")}
OVERRIDES = ("tasks", "models", "lengths", "seeds", "device", "executor", "steps", "budget")


def check_keys(table: dict, valid: list[str], where: str) -> None:
    """ConfigError on the first key of `table` that is not in `valid`, naming the closest valid ones."""
    for key in table:
        if key not in valid:
            raise ConfigError(f"{where}: {unknown_name_message('key', key, sorted(valid))}")


def check_params(params: dict, valid: list[str], where: str) -> dict:
    """A copy of a task's or family's `params`; ConfigError on a param that is not one of `valid`."""
    for key in params:
        if key not in valid:
            raise ConfigError(f"{where}: {unknown_name_message('param', key, valid)}")
    return dict(params)


def table_settings(table: dict, where: str) -> dict:
    """The settings of one table, checked; d_model and target_params may not both be set in one table."""
    found = {k: SETTINGS[k][0](v, f"{where} {k}") for k, v in table.items() if k in SETTINGS}
    if sum(k in found for k in _SIZE_KEYS) > 1:
        raise ConfigError(f"{where}: set one of d_model (a fixed width), d_models (a sweep of widths) or "
                          f"target_params (matched widths), not several")
    if all(k in found for k in _LENGTH_KEYS):
        raise ConfigError(f"{where}: set lengths (one trial per length) or train_length_range (lengths drawn "
                          f"from [lo, hi] each step), not both")
    return found


def merge_settings(levels: list[dict]) -> dict:
    """Every setting: its default, overridden by each level in turn (see the module doc)."""
    merged = {k: default for k, (_, default) in SETTINGS.items()}
    for level in levels:
        for keys in (_SIZE_KEYS, _LENGTH_KEYS):
            for key in keys:
                if key in level:  # a size (lengths) at a more specific level replaces the other size (length) key
                    merged.update(dict.fromkeys(keys), **{key: level[key]})
        merged.update({k: v for k, v in level.items() if k not in _SIZE_KEYS + _LENGTH_KEYS})
    return merged


def slice_name(seq_len: int, params: dict) -> str:
    """The name of an eval slice that gives none: `slice_name(64, {"n_pairs": 8})` is "L64-n_pairs8"."""
    return f"L{seq_len}" + "".join(f"-{k}{v}" for k, v in sorted(params.items()))


class TaskTable:
    """One task table, checked: its task built from its params, its own settings, and its mixture segments
    and eval slices (None where the table gives none), each built and checked at its length."""

    def __init__(self, table_name: str, table: dict, label: str) -> None:
        where = f"{label} [tasks.{table_name}]"
        check_keys(table, [*TASK_KEYS, *SETTINGS], where)
        self.name = checks.text(table.get("task", table_name), f"{where} task")
        cls = task_class(self.name)
        fields = [f.name for f in dataclasses.fields(cls)]
        self.params = check_params(checks.table(table.get("params", {}), f"{where} params"), fields, where)
        self.where, self.settings = where, table_settings(table, where)
        self.task = self._build(self.params)
        self.segments = self._parts(table.get("train_mixture"), "train_mixture", SEGMENT_KEYS, fields)
        self.slices = self._parts(table.get("eval_slices"), "eval_slices", SLICE_KEYS, fields)
        for key in _LENGTH_KEYS:
            if self.segments is not None and key in table:
                raise ConfigError(f"{where}: give {key} or train_mixture, not both")

    def _build(self, params: dict, where: str | None = None):
        try:
            return get_task(self.name, **params)
        except ConfigError as err:
            raise ConfigError(f"{where or self.where}: {err}") from None

    def _parts(self, value, key: str, keys: dict, fields: list[str]) -> list[dict] | None:
        if value is None:
            return None
        where = f"{self.where} {key}"
        if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
            raise ConfigError(f"{where} must be a non-empty array of tables [[tasks.NAME.{key}]]")
        parts = []
        for i, part in enumerate(value):
            at = f"{where}[{i}]"
            check_keys(part, list(keys), at)
            if "seq_len" not in part:
                raise ConfigError(f"{at}: seq_len is required")
            checked = {k: keys[k](v, f"{at} {k}") for k, v in part.items()}
            checked["params"] = check_params(checked.get("params", {}), fields, at)
            task = self._build({**self.params, **checked["params"]}, at)
            try:
                task.check_length(checked["seq_len"])
            except ConfigError as err:
                raise ConfigError(f"{at}: {err}") from None
            checked["task"] = task
            parts.append(checked)
        if key == "eval_slices":  # one column per slice name: a second slice of a name would hide the first
            seen: dict[str, int] = {}
            for i, part in enumerate(parts):
                name = part.get("name", slice_name(part["seq_len"], part["params"]))
                if name in seen:
                    raise ConfigError(f"{where}[{seen[name]}] and {where}[{i}] are both named {name!r}; "
                                      f"give each slice its own name")
                seen[name] = i
        return parts
