"""Sweep specs: a TOML file (or a spec shipped in runners/presets/) expanded into validated trials.

Shipped specs are of two kinds. Presets sweep every task and family (smoke, standard, full, compare) and
are named with `--preset NAME`. Recipes reproduce one published setup (they set `recipe`, e.g.
zoology_mqar) and are named with `--spec NAME`; `--spec` takes a file path too, and a path to an existing
file wins over a shipped name.

Schema: docs/sweeps.md lists every key with its default, generated from `SETTINGS` and `TOP_KEYS` below
by runners/reference_docs.py (tests/test_docs.py fails when the page is stale); `SETTINGS`' defaults are in
turn `TrialConfig`'s own field defaults wherever the setting is a field of a trial. An unknown key anywhere
is an error naming the closest valid keys.

Precedence (later wins): defaults < top level < task table < cost-class table < model table < command-line
flags (tasks, models, lengths, seeds, device, executor). With a train_mixture, the trial's train length is
the longest segment and `lengths` does not apply. Eval lengths the task cannot do (too short or too long)
are skipped; training lengths it cannot do are skipped with a note, and a task left with none is an error.

Validation builds every task, model and size (parameter matching, on the meta device) before anything
runs, so a bad spec fails with one line and writes nothing; a model from outside membench that raises while
it is built is named in that line (plugins.blamed_on). A model the spec does not name (an empty spec, or
`models = "all"`: every registered family) that cannot be matched to target_params at a task's vocabulary
is skipped for that task with a note; a model it names is an error. Sizes are bounded by membench.checks.LIMITS
(seeds < 2^32, tokens per sequence, batch_size x length, eval slice tokens, vocabulary, parameters of a
model, ...); eval slice names must be unique and non-empty, and cost-class tables must name a cost class.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from membench import checks, plugins
from membench.checks import LIMITS, ConfigError, check_limit
from membench.memtasks import get_task, list_tasks, task_class
from membench.models import count_params, family_params, fast_attention_width, list_models, matched_width, model_class
from membench.registry import unknown_name_message
from membench.runners.cost import estimate
from membench.runners.executors import EXECUTORS
from membench.runners.train import COMPILE_MODES
from membench.runners.trial import BUDGETS, EARLY_STOPS, EvalSlice, Segment, TrialConfig


def _shipped() -> dict[str, str]:
    """Name -> TOML text of every spec in runners/presets/."""
    folder = resources.files("membench.runners") / "presets"
    return {p.name.removesuffix(".toml"): p.read_text() for p in folder.iterdir() if p.name.endswith(".toml")}


_SHIPPED = _shipped()
SPECS: tuple[str, ...] = tuple(sorted(_SHIPPED))  # every shipped spec: --spec NAME
RECIPES: tuple[str, ...] = tuple(n for n in SPECS if "recipe" in tomllib.loads(_SHIPPED[n]))
PRESETS: tuple[str, ...] = tuple(n for n in SPECS if n not in RECIPES)  # --preset NAME


# settings: key -> (check, default). A setting that is a field of TrialConfig takes that field's default; the
# others (what a sweep expands into trials: lengths, seeds, sizes, ...) have theirs only here.
_TRIAL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrialConfig)
                   if f.default is not dataclasses.MISSING}
SETTINGS = {
    "lengths": (checks.list_of(checks.limited(checks.integer(1), "length")), [64, 128, 256]),
    "seeds": (checks.list_of(checks.limited(checks.integer(0), "seed")), [0]),
    "learning_rates": (checks.list_of(checks.number(0, LIMITS["learning_rate"], low_open=True)), [1e-3]),
    "steps": (checks.limited(checks.integer(1), "steps"), 1000),
    "time_cap": (checks.number_or("auto", 0, low_open=True), _TRIAL_DEFAULTS["time_cap"]),
    # time_cap = "auto": sized from the trial's FLOPs by the cost model of runners/cost/estimate.py
    "flops_rate": (checks.number(0, low_open=True), 1e13),
    "step_latency": (checks.number(0), 0.0),
    "token_latency": (checks.number(0), 0.0),
    "max_time_cap": (checks.number(0, low_open=True), 1800.0),
    "batch_size": (checks.integer(1), 32),
    "threshold": (checks.number(0, 1, low_open=True), _TRIAL_DEFAULTS["threshold"]),
    "early_stop": (checks.choice(EARLY_STOPS), _TRIAL_DEFAULTS["early_stop"]),
    "budget": (checks.choice(BUDGETS), _TRIAL_DEFAULTS["budget"]),
    "patience": (checks.integer(1), _TRIAL_DEFAULTS["patience"]),
    "min_delta": (checks.number(0, 1), _TRIAL_DEFAULTS["min_delta"]),
    "min_steps": (checks.integer(0), _TRIAL_DEFAULTS["min_steps"]),
    "eval_multipliers": (checks.list_of(checks.integer(1), allow_empty=True), [2, 4]),
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


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: its trials in run order, where to run them, and what was skipped (notes)."""

    name: str
    trials: tuple[TrialConfig, ...]
    description: str = ""
    device: str = "auto"
    compile: str = "none"
    executor: str = "local"
    cpu_threads: int | None = None
    cpu_workers: int | str = 1  # worker processes of a CPU sweep: a number, or "cores" (one per core)
    gpu_workers: int = 1  # worker processes sharing each GPU
    notes: tuple[str, ...] = ()
    rates: tuple = ()  # per trial: the cost model's Rates (runners/cost/estimate.py; membench plan)


def _check_keys(table: dict, valid: list[str], where: str) -> None:
    for key in table:
        if key not in valid:
            raise ConfigError(f"{where}: {unknown_name_message('key', key, sorted(valid))}")


class Unmatched(ConfigError):
    """No width of a model is within match_tolerance of target_params (at a task's vocabulary)."""


def _named(value) -> set[str]:
    """The names a tasks/models value picks itself (not the registered ones that "all" brings in)."""
    if isinstance(value, list):
        return set(value)
    return {name for name in value if name != "all"} if isinstance(value, dict) else set()


def _settings(table: dict, where: str) -> dict:
    """The settings of one table, checked; d_model and target_params may not both be set in one table."""
    found = {k: SETTINGS[k][0](v, f"{where} {k}") for k, v in table.items() if k in SETTINGS}
    if sum(k in found for k in _SIZE_KEYS) > 1:
        raise ConfigError(f"{where}: set one of d_model (a fixed width), d_models (a sweep of widths) or "
                          f"target_params (matched widths), not several")
    return found


def _merge(levels: list[dict]) -> dict:
    merged = {k: default for k, (_, default) in SETTINGS.items()}
    for level in levels:
        for key in _SIZE_KEYS:
            if key in level:  # a size at a more specific level replaces the other size key
                merged.update(dict.fromkeys(_SIZE_KEYS), **{key: level[key]})
        merged.update({k: v for k, v in level.items() if k not in _SIZE_KEYS})
    return merged


def _read_source(preset: str | None, spec_file: str | None) -> tuple[dict, str, str]:
    """(parsed TOML, default name, label for messages)."""
    if (preset is None) == (spec_file is None):
        raise ConfigError("give exactly one of a preset (--preset NAME) or a spec file (--spec FILE)")
    path = Path(spec_file) if spec_file is not None else None
    if preset is not None:
        if preset in RECIPES:
            raise ConfigError(f"{preset} is a recipe, not a preset: run it with --spec {preset}")
        if preset not in PRESETS:
            raise ConfigError(unknown_name_message("preset", preset, list(PRESETS)))
        text, label, name = _SHIPPED[preset], f"preset {preset}", preset
    elif spec_file in SPECS and not path.is_file():
        text, label, name = _SHIPPED[spec_file], f"spec {spec_file}", spec_file
    elif path.suffix or len(path.parts) > 1 or path.exists():  # a file path
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ConfigError(f"cannot read spec file {spec_file}: {err.strerror or err}") from None
        try:
            text = data.decode("utf-8-sig")  # a byte-order mark (Windows editors write one) is accepted
        except UnicodeDecodeError as err:
            raise ConfigError(f"spec file {spec_file} is not UTF-8 text (byte {err.start}): give a TOML file") from None
        label, name = f"spec {path.name}", path.stem
    else:
        raise ConfigError(unknown_name_message("shipped spec", spec_file, list(SPECS))
                         + "; or give the path of a TOML file")
    try:
        return tomllib.loads(text), name, label
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{label} is not valid TOML: {err}") from None


def _entries(value, kind: str, registered: list[str], where: str) -> dict[str, dict]:
    """tasks/models value ("all", a list of names or a table of tables) -> {table name: table}."""
    if value is None or value == "all":
        return {name: {} for name in registered}
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return {name: {} for name in value}
    if isinstance(value, dict):
        everyone = checks.check_bool(f"{where}: [{kind}] all", value.get("all", False))
        tables = {name: checks.table(table, f"{where} [{kind}.{name}]")
                  for name, table in value.items() if name != "all"}
        return {**{name: {} for name in registered}, **tables} if everyone else tables
    raise ConfigError(f"{where}: {kind} must be \"all\", a list of names or tables [{kind}.NAME], got {value!r}")


def _select(entries: dict[str, dict], wanted: list[str] | None, kind: str, registered: list[str],
            key: str) -> dict[str, dict]:
    """Keep the entries named on the command line (by table name or registry name); add registered ones."""
    if wanted is None:
        return entries
    chosen = {}
    for name in wanted:
        matches = {k: v for k, v in entries.items() if name in (k, v.get(key, k))}
        if not matches:
            if name not in registered and not plugins.is_import_path(name):
                raise ConfigError(unknown_name_message(kind, name, sorted({*registered, *entries})))
            matches = {name: {}}
        chosen.update(matches)
    return chosen


def param_grid(params: dict, where: str) -> list[dict]:
    """A family's params with lists swept: {"window": [8, 16], "d_state": 8} -> two param sets, one per point
    of the grid (the product of every list, in the order given)."""
    axes = {k: v if isinstance(v, list) else [v] for k, v in params.items()}
    for key, values in axes.items():
        if not values:
            raise ConfigError(f"{where} params {key}: an empty list sweeps nothing; give at least one value")
    return [dict(zip(axes, point)) for point in itertools.product(*axes.values())]


def _check_params(params: dict, valid: list[str], where: str) -> dict:
    for key in params:
        if key not in valid:
            raise ConfigError(f"{where}: {unknown_name_message('param', key, valid)}")
    return dict(params)


@functools.lru_cache(maxsize=None)
def _matched_width(model: str, target: int, vocab: int, n_layers: int, tolerance: float, params_json: str) -> int:
    return matched_width(model, target, vocab, n_layers=n_layers, tolerance=tolerance, **json.loads(params_json))


@functools.lru_cache(maxsize=None)
def _check_model_size(model: str, vocab: int, d_model: int, n_layers: int, params_json: str) -> None:
    """The model must fit the size ceiling (counted on the meta device: nothing is allocated)."""
    try:
        n = count_params(model, vocab, d_model, n_layers, **json.loads(params_json))
    except ConfigError as err:
        raise ConfigError(f"model {model} cannot be built with d_model {d_model}, n_layers {n_layers}: {err}") from None
    check_limit(f"model {model} at d_model {d_model}, n_layers {n_layers}, vocab_size {vocab}: its parameter count",
                n, "params")


def _slice_name(seq_len: int, params: dict) -> str:
    return f"L{seq_len}" + "".join(f"-{k}{v}" for k, v in sorted(params.items()))


class _Task:
    """One task table, resolved: base params, mixture segments or None, explicit slices or None."""

    def __init__(self, table_name: str, table: dict, label: str) -> None:
        where = f"{label} [tasks.{table_name}]"
        _check_keys(table, [*TASK_KEYS, *SETTINGS], where)
        self.name = checks.text(table.get("task", table_name), f"{where} task")
        cls = task_class(self.name)
        fields = [f.name for f in dataclasses.fields(cls)]
        self.params = _check_params(checks.table(table.get("params", {}), f"{where} params"), fields, where)
        self.where, self.settings = where, _settings(table, where)
        self.task = self._build(self.params)
        self.segments = self._parts(table.get("train_mixture"), "train_mixture", SEGMENT_KEYS, fields)
        self.slices = self._parts(table.get("eval_slices"), "eval_slices", SLICE_KEYS, fields)
        if self.segments is not None and "lengths" in table:
            raise ConfigError(f"{where}: give lengths or train_mixture, not both")

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
            _check_keys(part, list(keys), at)
            if "seq_len" not in part:
                raise ConfigError(f"{at}: seq_len is required")
            checked = {k: keys[k](v, f"{at} {k}") for k, v in part.items()}
            checked["params"] = _check_params(checked.get("params", {}), fields, at)
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
                name = part.get("name", _slice_name(part["seq_len"], part["params"]))
                if name in seen:
                    raise ConfigError(f"{where}[{seen[name]}] and {where}[{i}] are both named {name!r}; "
                                      f"give each slice its own name")
                seen[name] = i
        return parts


def load_spec(preset: str | None = None, spec_file: str | None = None, overrides: dict | None = None) -> SweepSpec:
    """Read a preset or a TOML spec file, apply command-line overrides and validate everything.

    `overrides` keys (None or absent = not given): tasks, models (lists of names), lengths (list of
    positive ints), seeds (list of ints >= 0), device, executor. Raises ValueError (one line) on any error.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    _check_keys(overrides, list(OVERRIDES), "overrides")
    raw, default_name, label = _read_source(preset, spec_file)
    _check_keys(raw, [*TOP_KEYS, *SETTINGS], label)
    top = {k: check(raw[k], f"{label} {k}") for k, check in TOP_KEYS.items() if check and k in raw}
    home = Path(spec_file).parent if spec_file is not None and Path(spec_file).is_file() else Path.cwd()
    for folder in top.get("include", []):  # plugin folders first: they register tasks and models
        try:
            plugins.include(home / folder)
        except ConfigError as err:
            raise ConfigError(f"{label}: {err}") from None
    for key in ("device", "executor"):
        if key in overrides:
            top[key] = TOP_KEYS[key](overrides[key], f"--{key}")
    top_settings = _settings(raw, label)
    flag_settings = {k: SETTINGS[k][0](overrides[k], f"--{k}") for k in ("lengths", "seeds", "steps", "budget")
                     if k in overrides}
    cost_tables = top.get("cost_classes", {})
    for cost_class, table in cost_tables.items():
        _check_keys(checks.table(table, f"{label} [cost_classes.{cost_class}]"), list(SETTINGS),
                    f"{label} [cost_classes.{cost_class}]")

    task_entries = _select(_entries(raw.get("tasks"), "tasks", list_tasks(), label), overrides.get("tasks"),
                           "task", list_tasks(), "task")
    model_entries = _select(_entries(raw.get("models"), "models", list_models(), label), overrides.get("models"),
                            "model", list_models(), "model")
    named = set(overrides["models"]) if "models" in overrides else _named(raw.get("models"))
    tasks = [_Task(name, table, label) for name, table in task_entries.items()]
    models = []
    for table_name, table in model_entries.items():
        where = f"{label} [models.{table_name}]"
        _check_keys(table, [*MODEL_KEYS, *SETTINGS], where)
        name = checks.text(table.get("model", table_name), f"{where} model")
        cls = model_class(name)
        params = _check_params(checks.table(table.get("params", {}), f"{where} params"), list(family_params(name)),
                               where)
        cost = _settings(cost_tables.get(cls.cost_class, {}), f"{label} [cost_classes.{cls.cost_class}]")
        chosen = table_name in named or name in named  # else brought in by "all": skipped where unmatched
        models += [(name, point, cost, _settings(table, where), chosen) for point in param_grid(params, where)]
    if not tasks or not models:
        raise ConfigError(f"{label}: the sweep has no {'tasks' if not tasks else 'models'}")
    classes = sorted({model_class(m).cost_class for m in [*list_models(), *(m[0] for m in models)]})
    for cost_class in cost_tables:  # a misspelt class would silently apply to no family
        if cost_class not in classes:
            raise ConfigError(f"{label}: {unknown_name_message('cost class', cost_class, classes)}")

    trials, rates, notes = [], [], []
    for task in tasks:
        task_trials, unmatched = [], 0
        for model, model_params, cost, model_settings, chosen in models:
            s = _merge([top_settings, task.settings, cost, model_settings, flag_settings])
            try:
                task_trials += _expand(task, model, model_params, s, notes, top.get("gpu_workers", 1))
            except Unmatched as err:
                if chosen:
                    raise
                unmatched += 1
                _note(notes, f"{task.name}: {model} skipped: {err}")
        if not task_trials:
            why = "; ".join(n.split(": ", 1)[1] for n in notes if n.startswith(f"{task.name}: "))
            skipped = "every model was skipped" if unmatched == len(models) else "every training length was skipped"
            raise ConfigError(f"{task.where}: {skipped} ({why})")
        trials += [trial for trial, _ in task_trials]
        rates += [trial_rates for _, trial_rates in task_trials]
    # absent: SweepSpec's defaults
    spec_keys = ("description", "device", "compile", "executor", "cpu_threads", "cpu_workers", "gpu_workers")
    return SweepSpec(name=checks.text(raw.get("name", default_name), f"{label} name"), trials=tuple(trials),
                     notes=tuple(notes), rates=tuple(rates), **{k: top[k] for k in spec_keys if k in top})


def _expand(task: _Task, model: str, model_params: dict, s: dict, notes: list[str],
            workers: int = 1) -> list[tuple[TrialConfig, estimate.Rates]]:
    """The trials of one (task, model) pair, lengths x widths x learning rates x seeds, each with the rates
    of the cost model (runners/cost/estimate.py) by which time_cap = "auto" is sized."""
    rates = estimate.Rates(s["flops_rate"], s["step_latency"], s["token_latency"])
    if task.segments is not None:
        segments = tuple(Segment(p["seq_len"], p["params"], p.get("weight", 1.0)) for p in task.segments)
        lengths = [max(seg.seq_len for seg in segments)]
    else:
        segments, lengths = (), []
        for length in dict.fromkeys(s["lengths"]):
            try:
                task.task.check_length(length)
                lengths.append(length)
            except ConfigError as err:
                _note(notes, f"{task.name}: training length {length} skipped: {err}")
    if s["max_length"] is not None:
        for length in [n for n in lengths if n > s["max_length"]]:
            _note(notes, f"{task.name}: {model} at length {length} skipped (above max_length {s['max_length']})")
        lengths = [n for n in lengths if n <= s["max_length"]]
    trials = []
    for length in lengths:
        slices = _slices(task, length, s)
        longest = max([seg.seq_len for seg in segments] or [length])
        parts = (task.segments or []) + (task.slices or [])
        vocab = max([task.task.vocab_size] + [p["task"].vocab_size for p in parts])
        check_limit(f"{task.where} vocab_size", vocab, "vocab_size")
        for seg_len in [seg.seq_len for seg in segments] or [length]:
            check_limit(f"{task.where} batch_size x length ({s['batch_size']} x {seg_len})",
                        s["batch_size"] * seg_len, "batch_tokens")
        for sl in slices:
            check_limit(f"{task.where} eval slice {sl.name!r} n_sequences x seq_len ({sl.n_sequences} x {sl.seq_len})",
                        sl.n_sequences * sl.seq_len, "eval_tokens")
        for d_model in _widths(model, model_params, s, vocab, task.where):
            with plugins.blamed_on("model", model, f"while being built for {task.where} at d_model {d_model}"):
                _check_size(model, model_params, vocab, d_model, s["n_layers"], notes)
                time_cap = s["time_cap"]
                if time_cap == "auto":
                    seconds = estimate.trial_seconds(model, model_params, vocab, d_model, s["n_layers"],
                                                     s["batch_size"], longest, s["steps"], s["eval_every"], slices,
                                                     rates, workers)
                    time_cap = estimate.auto_time_cap(sum(seconds), s["max_time_cap"])
            for lr in s["learning_rates"]:
                for seed in s["seeds"]:
                    trials.append((TrialConfig(
                        task=task.name, task_params=task.params, model=model, model_params=model_params,
                        d_model=d_model, n_layers=s["n_layers"], train_len=length, seed=seed, lr=lr,
                        batch_size=s["batch_size"], steps=s["steps"], eval_slices=slices, time_cap=time_cap,
                        threshold=s["threshold"], eval_every=s["eval_every"], log_every=s["log_every"],
                        warmup=s["warmup"], weight_decay=s["weight_decay"], grad_clip=s["grad_clip"],
                        segments=segments, task_version=task_class(task.name).version,
                        early_stop=s["early_stop"], budget=s["budget"], patience=s["patience"],
                        min_delta=s["min_delta"], min_steps=s["min_steps"],
                    ), rates))
    return trials


def _widths(model: str, model_params: dict, s: dict, vocab: int, where: str) -> list[int]:
    """The widths of a (task, model) pair: d_models, d_model, or the widths matched to each target_params."""
    if s["d_models"] is not None:
        return list(dict.fromkeys(s["d_models"]))
    if s["d_model"] is not None:
        return [s["d_model"]]
    targets = s["target_params"] if isinstance(s["target_params"], list) else [s["target_params"]]
    try:
        with plugins.blamed_on("model", model, f"while being matched to target_params for {where}"):
            return list(dict.fromkeys(
                _matched_width(model, target, vocab, s["n_layers"], s["match_tolerance"],
                               json.dumps(model_params, sort_keys=True))
                for target in targets))
    except plugins.PluginError:
        raise
    except ConfigError as err:
        raise Unmatched(f"{where}, vocab_size {vocab}: {err}; or raise match_tolerance, "
                        f"or give this model a fixed d_model") from None


def _check_size(model: str, model_params: dict, vocab: int, d_model: int, n_layers: int, notes: list[str]) -> None:
    """The model must fit the size ceiling; a softmax-attention width off the fast-kernel grid gets a note."""
    _check_model_size(model, vocab, d_model, n_layers, json.dumps(model_params, sort_keys=True))
    if not fast_attention_width(model, d_model, **model_params):
        _note(notes, f"{model}: d_model {d_model} gives a head width that is not a multiple of 8, so a GPU's "
                     f"attention may fall back to its slow math kernel (choose n_heads or target_params so "
                     f"that d_model / n_heads is a multiple of 8)")


def _slices(task: _Task, train_len: int, s: dict) -> tuple[EvalSlice, ...]:
    """Explicit slices, or the train length and its multiples that the task can do."""
    if task.slices is not None:
        return tuple(
            EvalSlice(p.get("name", _slice_name(p["seq_len"], p["params"])), p["seq_len"],
                      p.get("n_sequences", _eval_sequences(s, p["seq_len"])), p["params"])
            for p in task.slices
        )
    slices = []
    for length in dict.fromkeys([train_len] + [train_len * m for m in s["eval_multipliers"]]):
        try:
            task.task.check_length(length)
        except ConfigError:
            continue
        slices.append(EvalSlice(_slice_name(length, {}), length, _eval_sequences(s, length)))
    return tuple(slices)


def _eval_sequences(s: dict, seq_len: int) -> int:
    """eval_sequences, or fewer where they would exceed max_eval_tokens at this length (at least one)."""
    if s["max_eval_tokens"] is None:
        return s["eval_sequences"]
    return max(1, min(s["eval_sequences"], s["max_eval_tokens"] // seq_len))


def _note(notes: list[str], text: str) -> None:
    if text not in notes:
        notes.append(text)
