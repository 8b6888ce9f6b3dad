"""Published results reproduced: `membench reproduce NAME`. One module per result in this folder, found by
name as the commands are; each defines `TITLE`, `SPEC`, `SUMMARY` and `judge`, which `reproductions()`
gathers into a `Reproduction`:

    name     what `membench reproduce NAME` takes (the module's name)
    title    TITLE: the paper, and the result of it that is reproduced
    spec     SPEC: the shipped recipe that runs it (runners/presets/*.toml; `membench run --spec NAME` runs it too)
    summary  SUMMARY: one line for `membench reproduce --list`
    judge    a pure function of a sweep's runs.csv (as read by runners/reporting/results.py) returning one
             `Finding` per claim: the paper's number, ours with its interval, the verdict and why
             (runners/reproduce/claims.py); it never trains, so the verdicts of committed runs can be rebuilt

Two reproductions may share runs: deletang2023 judges the runs of grazzi2025's recipe (`spec` names it).

    >>> sorted(reproductions())
    ['deletang2023', 'grazzi2025', 'liu2023_flipflop', 'zoology_fig2']
    >>> get_reproduction("grazzi2025").spec
    'reproduce_grazzi2025'
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from membench.checks import ConfigError
from membench.registry import unknown_name_message
from membench.runners.reproduce.claims import Finding

_SHARED_MODULES = ("claims",)  # modules of this folder that are not reproductions


@dataclass(frozen=True)
class Reproduction:
    """A published result: the paper, the recipe that runs it and the function that judges its claims."""

    name: str
    title: str
    spec: str
    judge: Callable[[pd.DataFrame], list[Finding]]
    summary: str  # one line for `membench reproduce --list`


def reproductions() -> dict[str, Reproduction]:
    """Name -> Reproduction of every module of this folder, in name order."""
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name in _SHARED_MODULES:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found[info.name] = Reproduction(name=info.name, title=module.TITLE, spec=module.SPEC, judge=module.judge,
                                        summary=module.SUMMARY)
    return found


def get_reproduction(name: str) -> Reproduction:
    """The reproduction called `name`; ConfigError naming the close ones when there is none."""
    known = reproductions()
    if name not in known:
        raise ConfigError(unknown_name_message("reproduction", name, list(known))
                          + "; `membench reproduce --list` lists them")
    return known[name]
