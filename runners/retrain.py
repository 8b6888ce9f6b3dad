"""Give a results directory's under-trained cells a larger step budget, setting their first trials aside.

    membench run --preset reference_cpu --out DIR --retrain-under-trained 2

A trial is under-trained when it stopped at its step budget (or time cap) below the threshold while still
improving (runners/train.py). Its cell is the trial's config but for the seed. `--retrain-under-trained F`
replaces every trial of every cell of the sweep that has an under-trained trial in DIR (every seed, so the
seeds of a cell share one budget) by the same trial with F times its steps and time cap; so does a cell that
the same task and family beat at a longer trained length with a larger budget (`outdone_cells`: a flat curve
escapes the flag, but not that comparison), and, once, a cell that ended near chance where the family learned
the task at a shorter length (`faded_cells`: a slow start and forgetting look alike at a short budget). The other
cells are left as they are. What the flag changes is
recorded, so it is said once:

    DIR/retrained.json    {replaced trial id: the config of the trial that replaces it}: every later run of the
                          same sweep into DIR runs the replacement instead (a replacement may be replaced again)
    DIR/superseded/       the replaced trials' rows (runs.csv, lags.csv, curves.csv, slice_curves.csv) and their
                          trial files (trials/): a results directory of its own, so nothing is lost

Worked example: a sweep of 3 seeds of copy x lstm at 64 steps 700, whose seed 1 ended under-trained: with
`--retrain-under-trained 2` the three trials become three of 1,400 steps (new trial ids), the three first ones'
rows move to DIR/superseded/, and the run trains the new three. Run again with the flag, and only the cells still
under-trained at 1,400 steps grow, to 2,800.

Crash safety: retrained.json is written (atomically) before any row moves, and moving is idempotent: rows are
written into superseded/ before they leave the main tables (which the sweep rebuilds), so a run killed in between
finishes the move on its next start.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import pandas as pd

from membench.runners import tables
from membench.runners.errors import UsageError
from membench.runners.schema import as_bool
from membench.runners.trial import TrialConfig

OUTDONE_BY = 0.1  # a cell that a longer trained length of its family beats by this much runs again too
NEAR_CHANCE = 0.1  # a seed-mean scaled accuracy below this is near chance ...
LEARNED = 0.5  # ... and one of this or more is a task learned at that length (faded_cells)
RETRAINED_FILE = "retrained.json"
SUPERSEDED_DIR = "superseded"


def read_replacements(out: Path) -> dict[str, TrialConfig]:
    """DIR/retrained.json as {replaced trial id: replacing TrialConfig}; {} when there is none."""
    path = Path(out) / RETRAINED_FILE
    if not path.is_file():
        return {}
    try:
        return {old: TrialConfig.from_dict(config) for old, config in json.loads(path.read_bytes()).items()}
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise UsageError(f"{path} cannot be read as a map of replaced trials ({type(err).__name__}: {err}); restore "
                         f"it from version control, or delete it to run the sweep's first budgets again") from None


def apply_replacements(configs: dict[str, TrialConfig], replacements: dict[str, TrialConfig]
                       ) -> dict[str, TrialConfig]:
    """`configs` (trial id -> config) with every replaced trial swapped for its replacement (`replacement`).

        >>> from membench.runners.trial import EvalSlice
        >>> first = TrialConfig("copy", {}, "lstm", {}, 8, 1, 16, 0, 1e-3, 4, 10, (EvalSlice("L16", 16, 8),))
        >>> longer = retrained(first, 2.0)
        >>> list(apply_replacements({first.trial_id: first}, {first.trial_id: longer}).values())[0].steps
        20
    """
    result = {}
    for config in configs.values():
        config = replacement(config, replacements)
        result[config.trial_id] = config
    return result


def replacement(config: TrialConfig, replacements: dict[str, TrialConfig]) -> TrialConfig:
    """The trial that runs in place of `config`: itself, or its replacement's replacement, and so on."""
    seen = {config.trial_id}
    while config.trial_id in replacements:
        config = replacements[config.trial_id]
        if config.trial_id in seen:
            raise UsageError(f"{RETRAINED_FILE} replaces trial {config.trial_id} in a circle; delete its entries "
                             f"for {', '.join(sorted(seen))}")
        seen.add(config.trial_id)
    return config


def retrained(config: TrialConfig, factor: float) -> TrialConfig:
    """The same trial with `factor` times the steps (rounded up) and the time cap."""
    return dataclasses.replace(config, steps=math.ceil(config.steps * factor), time_cap=config.time_cap * factor)


def _cell(config: TrialConfig) -> str:
    fields = config.to_dict()
    del fields["seed"]
    return json.dumps(fields, sort_keys=True, default=str)


def _family(config: TrialConfig) -> str:
    """A cell's key but for its train length and what grows with it (budget, time cap, eval slices)."""
    fields = config.to_dict()
    for name in ("seed", "train_len", "steps", "time_cap", "eval_slices", "segments", "train_length_range"):
        fields.pop(name, None)
    return json.dumps(fields, sort_keys=True, default=str)


def outdone_cells(configs: dict[str, TrialConfig], runs: pd.DataFrame) -> set[str]:
    """The cells of `configs` that the same task and family beat at a longer trained length, with a larger
    step budget, by OUTDONE_BY or more (seed means of the accuracy at the trained length, from `runs`). A
    longer sequence is no easier to remember, so the shorter cell's budget held it back, even when its curve
    was too flat at the end for the under-trained flag: on n_back, deltanet sat at 0.67 after 500 steps at
    length 64 and reached 0.97 after 1,000 at 256.

        >>> from membench.runners.trial import EvalSlice
        >>> short = TrialConfig("copy", {}, "lstm", {}, 8, 1, 64, 0, 1e-3, 4, 500, (EvalSlice("L64", 64, 8),))
        >>> long = dataclasses.replace(short, train_len=256, steps=1000, eval_slices=(EvalSlice("L256", 256, 8),))
        >>> runs = pd.DataFrame({"trial_id": [short.trial_id, long.trial_id], "accuracy": [0.67, 0.97],
        ...                      "is_train_len": [True, True]})
        >>> outdone_cells({c.trial_id: c for c in (short, long)}, runs) == {_cell(short)}
        True
    """
    families = _seed_means_by_family(configs, runs, "accuracy")
    return {cell for cells in families.values() for cell, short, low in cells for _, long, high in cells
            if long.train_len > short.train_len and long.steps > short.steps
            and high >= low + OUTDONE_BY}  # NaN (a failed trial's accuracy) is never outdone nor outdoes


def _seed_means_by_family(configs: dict[str, TrialConfig], runs: pd.DataFrame, column: str
                          ) -> dict[str, list[tuple[str, TrialConfig, float]]]:
    """{family: [(cell, a config of it, the seed mean of `column` at the trained length)]} over the cells of
    `configs` that `runs` has rows of."""
    trained = runs[runs["is_train_len"].map(as_bool) & runs["trial_id"].isin(set(configs))]
    seeds: dict[str, tuple[TrialConfig, list[float]]] = {}  # cell -> (a config of it, its seeds' values)
    for trial_id, value in trained.groupby("trial_id")[column].mean().items():
        seeds.setdefault(_cell(configs[trial_id]), (configs[trial_id], []))[1].append(float(value))
    families: dict[str, list[tuple[str, TrialConfig, float]]] = {}
    for cell, (config, values) in seeds.items():
        families.setdefault(_family(config), []).append((cell, config, sum(values) / len(values)))
    return families


def faded_cells(configs: dict[str, TrialConfig], runs: pd.DataFrame, grown: set[str] = frozenset()) -> set[str]:
    """The cells of `configs` that ended near chance (seed-mean scaled accuracy at the trained length below
    NEAR_CHANCE) though the same task and family learned the task at a shorter trained length (LEARNED or
    more), and that have not been grown yet (no trial of theirs in `grown`, the ids of replacing trials).
    Such a cell reads as the family forgetting with the length, but at a short budget a slow start looks the
    same: the transformer on noisy_recall sat near chance at every length after 800 steps, and at 1,600 two of
    its three seeds at 64 reached 0.99. A near-chance end is no convergence (as a near-chance plateau is not:
    runners/train.py), so the cell runs once more with a larger budget; what it reaches then is its result.

        >>> from membench.runners.trial import EvalSlice
        >>> short = TrialConfig("copy", {}, "lstm", {}, 8, 1, 64, 0, 1e-3, 4, 700, (EvalSlice("L64", 64, 8),))
        >>> long = dataclasses.replace(short, train_len=256, eval_slices=(EvalSlice("L256", 256, 8),))
        >>> runs = pd.DataFrame({"trial_id": [short.trial_id, long.trial_id], "scaled_accuracy": [0.96, 0.05],
        ...                      "is_train_len": [True, True]})
        >>> faded_cells({c.trial_id: c for c in (short, long)}, runs) == {_cell(long)}
        True
        >>> faded_cells({c.trial_id: c for c in (short, long)}, runs, grown={long.trial_id})
        set()
    """
    if "scaled_accuracy" not in runs:  # a table from before the column (a NaN one never counts either)
        return set()
    grown_cells = {_cell(configs[i]) for i in grown if i in configs}
    families = _seed_means_by_family(configs, runs, "scaled_accuracy")
    return {cell for cells in families.values() for cell, long, low in cells
            if low < NEAR_CHANCE and cell not in grown_cells
            and any(short.train_len < long.train_len and high >= LEARNED for _, short, high in cells)}


def replacements_for(configs: dict[str, TrialConfig], runs: pd.DataFrame, factor: float,
                     grown: set[str] = frozenset()) -> dict[str, TrialConfig]:
    """{trial id: its replacement} for every trial of `configs` whose cell has a trial that `runs` (a runs
    table) shows under-trained at its trained length, that a longer length outdid (outdone_cells), or that
    ended near chance where a shorter length was learned and has not been grown yet (faded_cells; `grown`:
    the ids of replacing trials)."""
    if not len(runs):
        return {}
    trained = runs[runs["is_train_len"].map(as_bool) & runs["under_trained"].map(as_bool)]
    under = ({_cell(configs[i]) for i in set(trained["trial_id"]) if i in configs} | outdone_cells(configs, runs)
             | faded_cells(configs, runs, grown))
    return {i: retrained(c, factor) for i, c in configs.items() if _cell(c) in under}


def record(out: Path, replacements: dict[str, TrialConfig], new: dict[str, TrialConfig]) -> None:
    """Add `new` to DIR/retrained.json (atomically) and to `replacements`."""
    replacements.update(new)
    text = json.dumps({old: config.to_dict() for old, config in sorted(replacements.items())}, indent=1,
                      sort_keys=True)
    tables.atomic_write_bytes(Path(out) / RETRAINED_FILE, (text + "\n").encode())


def set_aside(out: Path, replaced, finished: dict[str, dict], kept: dict[str, pd.DataFrame]) -> int:
    """Move the rows and trial files of the `replaced` trial ids out of `out` into out/superseded/, and out of
    `finished` (trial payloads) and `kept` (rows without a file), which the sweep then rebuilds the main tables
    from. Returns how many trials moved (0 when none of them is in `out` any more)."""
    ids = set(replaced)
    moving = {i: finished[i] for i in ids if i in finished}
    moving_rows = {name: rows[rows["trial_id"].isin(ids)] for name, rows in kept.items()}
    moved = set(moving) | {i for rows in moving_rows.values() for i in rows["trial_id"]}
    if not moved:
        return 0
    aside = Path(out) / SUPERSEDED_DIR
    (aside / tables.TRIALS_DIR).mkdir(parents=True, exist_ok=True)
    earlier = tables.kept_rows(aside, moved)  # what earlier moves put there, but these trials' rows
    rows = {}
    for name in tables.TABLES:
        parts = [t for t in (earlier.get(name), moving_rows.get(name)) if t is not None and len(t)]
        if parts:
            rows[name] = pd.concat(parts, ignore_index=True)
    tables.write_tables(aside, tables.frames(moving, rows))
    for trial_id in moving:
        source = Path(out) / tables.TRIALS_DIR / f"{trial_id}.json"
        if source.is_file():
            os.replace(source, aside / tables.TRIALS_DIR / source.name)
        del finished[trial_id]
    for name in list(kept):
        kept[name] = kept[name][~kept[name]["trial_id"].isin(ids)]
    return len(moved)
