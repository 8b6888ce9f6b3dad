"""Sweep specs: a TOML file (or a spec shipped in runners/presets/) expanded into validated trials.

Shipped specs are of two kinds. Presets sweep every task and family (smoke, standard, full, compare) and
are named with `--preset NAME`. Recipes reproduce one published setup (they set `recipe`, e.g.
zoology_mqar) and are named with `--spec NAME`; `--spec` takes a file path too, and a path to an existing
file wins over a shipped name.

Three modules, in the order a spec passes through them: this one finds and reads the TOML, checks its top
level and model tables, applies the command-line overrides and returns the `SweepSpec`; runners/spec_keys.py
is the schema (every key, its check and its default) and checks each task table; runners/spec_grid.py
expands the checked tables into trials, sizing every model at spec time.

Schema: docs/sweeps.md lists every key with its default, generated from spec_keys' `SETTINGS` and `TOP_KEYS`
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

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from membench import checks, plugins
from membench.checks import ConfigError
from membench.memtasks import list_tasks
from membench.models import family_params, list_models, model_class
from membench.registry import unknown_name_message
from membench.runners.spec_grid import ModelPoint, expand, param_grid
from membench.runners.spec_keys import (
    MODEL_KEYS,
    OVERRIDES,
    SETTINGS,
    TOP_KEYS,
    TaskTable,
    check_keys,
    check_params,
    table_settings,
)
from membench.runners.trial import TrialConfig


def _shipped() -> dict[str, str]:
    """Name -> TOML text of every spec in runners/presets/."""
    folder = resources.files("membench.runners") / "presets"
    return {p.name.removesuffix(".toml"): p.read_text() for p in folder.iterdir() if p.name.endswith(".toml")}


_SHIPPED = _shipped()
SPECS: tuple[str, ...] = tuple(sorted(_SHIPPED))  # every shipped spec: --spec NAME
RECIPES: tuple[str, ...] = tuple(n for n in SPECS if "recipe" in tomllib.loads(_SHIPPED[n]))
PRESETS: tuple[str, ...] = tuple(n for n in SPECS if n not in RECIPES)  # --preset NAME


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


def _named(value) -> set[str]:
    """The names a tasks/models value picks itself (not the registered ones that "all" brings in)."""
    if isinstance(value, list):
        return set(value)
    return {name for name in value if name != "all"} if isinstance(value, dict) else set()


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


def load_spec(preset: str | None = None, spec_file: str | None = None, overrides: dict | None = None) -> SweepSpec:
    """Read a preset or a TOML spec file, apply command-line overrides and validate everything.

    `overrides` keys (None or absent = not given): tasks, models (lists of names), lengths (list of
    positive ints), seeds (list of ints >= 0), device, executor. Raises ConfigError (one line) on any error.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    check_keys(overrides, list(OVERRIDES), "overrides")
    raw, default_name, label = _read_source(preset, spec_file)
    check_keys(raw, [*TOP_KEYS, *SETTINGS], label)
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
    top_settings = table_settings(raw, label)
    flag_settings = {k: SETTINGS[k][0](overrides[k], f"--{k}") for k in ("lengths", "seeds", "steps", "budget")
                     if k in overrides}
    cost_tables = top.get("cost_classes", {})
    for cost_class, table in cost_tables.items():
        check_keys(checks.table(table, f"{label} [cost_classes.{cost_class}]"), list(SETTINGS),
                   f"{label} [cost_classes.{cost_class}]")

    task_entries = _select(_entries(raw.get("tasks"), "tasks", list_tasks(), label), overrides.get("tasks"),
                           "task", list_tasks(), "task")
    model_entries = _select(_entries(raw.get("models"), "models", list_models(), label), overrides.get("models"),
                            "model", list_models(), "model")
    named = set(overrides["models"]) if "models" in overrides else _named(raw.get("models"))
    tasks = [TaskTable(name, table, label) for name, table in task_entries.items()]
    models = _model_points(model_entries, named, cost_tables, label)
    if not tasks or not models:
        raise ConfigError(f"{label}: the sweep has no {'tasks' if not tasks else 'models'}")
    classes = sorted({model_class(m).cost_class for m in [*list_models(), *(m.name for m in models)]})
    for cost_class in cost_tables:  # a misspelt class would silently apply to no family
        if cost_class not in classes:
            raise ConfigError(f"{label}: {unknown_name_message('cost class', cost_class, classes)}")

    trials, rates, notes = expand(tasks, models, top_settings, flag_settings, top.get("gpu_workers", 1))
    # absent: SweepSpec's defaults
    spec_keys = ("description", "device", "compile", "executor", "cpu_threads", "cpu_workers", "gpu_workers")
    return SweepSpec(name=checks.text(raw.get("name", default_name), f"{label} name"), trials=tuple(trials),
                     notes=tuple(notes), rates=tuple(rates), **{k: top[k] for k in spec_keys if k in top})


def _model_points(entries: dict[str, dict], named: set[str], cost_tables: dict, label: str) -> list[ModelPoint]:
    """Each model table, checked, as one ModelPoint per point of its params grid (spec_grid.param_grid)."""
    points = []
    for table_name, table in entries.items():
        where = f"{label} [models.{table_name}]"
        check_keys(table, [*MODEL_KEYS, *SETTINGS], where)
        name = checks.text(table.get("model", table_name), f"{where} model")
        cost_class = model_class(name).cost_class
        params = check_params(checks.table(table.get("params", {}), f"{where} params"), list(family_params(name)),
                              where)
        cost = table_settings(cost_tables.get(cost_class, {}), f"{label} [cost_classes.{cost_class}]")
        chosen = table_name in named or name in named  # else brought in by "all": skipped where unmatched
        points += [ModelPoint(name, point, cost, table_settings(table, where), chosen)
                   for point in param_grid(params, where)]
    return points
