"""zoology_fig2: Zoology (Arora et al., ICLR 2024), Figure 2, at the size of a 2-core CPU: on multi-query
associative recall (MQAR), attention recalls at every model width, while the gated-convolution and recurrent
families need a state that grows with the number of key-value pairs. Recipe: runners/presets/frontier_cpu.toml
(MQAR with 8 pairs at length 64 and 16 pairs at 128, widths 16, 32 and 64, one seed; its committed runs are
results/frontier-cpu).

The paper's claims (Figure 2, accuracy against model dimension, one panel per (length, pairs)): attention is
near 1.0 at every width of every panel; the other families fall as the pairs grow at a fixed width and
need a larger width (state) to recover. Ours, from runs.csv through runners/reporting/frontier.py: per task
and family, the accuracy of each width at the trained length, and the smallest state (floats) of a config
reaching 0.9. Rules, fixed before any verdict was read:

    attention at every width   per task, holds when the Transformer's lowest accuracy over the widths is
                               >= RECALLS (0.9); not comparable when that lowest one is near chance (a plateau
                               near chance is not convergence: claims.py), does not hold otherwise
    state grows with pairs     per family other than attention (and the sliding window, not in Figure 2):
                               with s8, s16 its smallest state reaching 0.9 at 8 and at 16 pairs, holds when
                               s16 > s8, or when 16 pairs are reached at no width while 8 pairs are; does not
                               hold when s16 <= s8 or only 16 pairs are reached; not comparable when neither is
                               reached (the widths swept do not show where its state suffices), or when 16 pairs
                               are reached at no width and a trial there stopped at its budget still improving or
                               the best there is near chance (under-training is not a need for more state)

With one seed there is no interval: the table says so.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from membench.memtasks import get_task
from membench.runners.reporting.frontier import efficiency_table, frontier_table
from membench.runners.reproduce.claims import DOES_NOT_HOLD, HOLDS, NOT_COMPARABLE, Finding, near_chance

RECALLS = 0.9
TITLE = "Zoology Figure 2 at CPU scale: attention recalls at every width, fixed states need to grow"
SPEC = "frontier_cpu"
SUMMARY = "Zoology (Arora et al. 2023) Figure 2: MQAR, attention at every width, other families need state"
SOURCE = "Arora et al. 2023 (Zoology), Figure 2"
ATTENTION, NOT_IN_FIGURE = "transformer", ("sliding_window",)


def _pairs(task: str) -> int | None:
    """The number of key-value pairs a task label names ("associative_recall[num_kv_pairs=16]" -> 16)."""
    marker = "num_kv_pairs="
    if marker not in task:
        return None
    return int(task.split(marker)[1].split(",")[0].rstrip("]"))


def chance_levels(runs: pd.DataFrame) -> dict[str, float]:
    """Task label -> the chance level of its task (from its params)."""
    firsts = runs.drop_duplicates("task")
    return {row.task: get_task("associative_recall", **json.loads(row.task_params)).chance_level
            for row in firsts.itertuples()}


def attention_findings(points: pd.DataFrame, chance: dict[str, float]) -> list[Finding]:
    """Per task: does attention recall at every width swept?"""
    findings = []
    for task, mine in points[points["model"] == ATTENTION].groupby("task", sort=True):
        by_width = mine.groupby("d_model")["accuracy"].max()
        lowest = float(by_width.min())
        widths = ", ".join(f"{int(w)}: {a:.3f}" for w, a in by_width.items())
        if lowest >= RECALLS:
            verdict, rule = HOLDS, f"lowest {lowest:.3f} >= {RECALLS}"
        elif near_chance(lowest, chance[task]):
            verdict, rule = NOT_COMPARABLE, (f"lowest {lowest:.3f} is near chance ({chance[task]:.3f}): the width "
                                             f"did not learn the task in the recipe's steps, which says nothing "
                                             f"of what attention can hold")
        else:
            verdict, rule = DOES_NOT_HOLD, f"lowest {lowest:.3f} < {RECALLS}"
        pairs = _pairs(task)
        findings.append(Finding(
            f"attention recalls MQAR at every width ({pairs} pairs)", f"{ATTENTION}, {pairs} pairs", SOURCE,
            "lowest accuracy over widths", "~1.0 at every width", verdict,
            f"{rule} (width: accuracy {widths}); one seed, no interval" if mine["seeds"].max() == 1
            else f"{rule} (width: accuracy {widths})", lowest, seeds=int(mine["seeds"].min())))
    return findings


def growth_finding(model: str, efficiency: pd.DataFrame, under_trained: pd.DataFrame, chance: dict[str, float],
                   seeds: int) -> Finding:
    """Does `model`'s state for 0.9 grow from the fewest to the most pairs swept? (module rules)"""
    mine = efficiency[efficiency["model"] == model].assign(pairs=lambda t: t["task"].map(_pairs)).sort_values("pairs")
    claim = f"{model} needs more state for more pairs"
    few, many = mine.iloc[0], mine.iloc[-1]
    s_few, s_many = few["state_for_0.9"], many["state_for_0.9"]
    label = f"state for 0.9 at {int(few['pairs'])} -> {int(many['pairs'])} pairs"
    shown = f"{_count(s_few)} -> {_count(s_many)} floats"
    paper = "grows"
    if math.isnan(s_few) and math.isnan(s_many):
        return Finding(claim, model, SOURCE, "state for 0.9 (floats)", paper, NOT_COMPARABLE,
                       f"no width swept reaches 0.9 at either ({few['best_accuracy']:.3f}, {many['best_accuracy']:.3f} "
                       f"at best)", seeds=seeds)
    if math.isnan(s_many):
        best = f"best {many['best_accuracy']:.3f} at {int(many['pairs'])} pairs"
        stuck = under_trained[(under_trained["model"] == model) & (under_trained["task"] == many["task"])]
        if stuck["under_trained"].any():
            return Finding(claim, model, SOURCE, "state for 0.9 (floats)", paper, NOT_COMPARABLE,
                           f"{label}: {shown} ({best}), but {int(stuck['under_trained'].sum())} trial(s) there "
                           f"stopped at the budget still improving", s_few, seeds=seeds)
        if near_chance(many["best_accuracy"], chance[many["task"]]):
            return Finding(claim, model, SOURCE, "state for 0.9 (floats)", paper, NOT_COMPARABLE,
                           f"{label}: {shown}, but the {best} is near chance ({chance[many['task']]:.3f}): not "
                           f"learnt in the recipe's steps, not a measured need for state", s_few, seeds=seeds)
        return Finding(claim, model, SOURCE, "state for 0.9 (floats)", paper, HOLDS, f"{label}: {shown} ({best})",
                       s_few, seeds=seeds)
    ok = not math.isnan(s_few) and s_many > s_few
    return Finding(claim, model, SOURCE, "state for 0.9 (floats)", paper, HOLDS if ok else DOES_NOT_HOLD,
                   f"{label}: {shown}", s_many, seeds=seeds)


def _count(value: float) -> str:
    return "none" if math.isnan(value) else f"{int(value):,}"


def judge(runs: pd.DataFrame) -> list[Finding]:
    """Attention's claim per task, then the state claim per other family."""
    mqar = runs[runs["task"].astype(str).str.startswith("associative_recall")]
    points = frontier_table(mqar)
    plain = points[points["eval_len"] == points["train_len"]]
    efficiency = efficiency_table(points)
    trained = mqar.groupby(["task", "model"], as_index=False)["under_trained"].any()
    chance = chance_levels(mqar)
    seeds = points.groupby("model")["seeds"].min()
    others = sorted(set(efficiency["model"]) - {ATTENTION, *NOT_IN_FIGURE})
    return attention_findings(plain, chance) + [growth_finding(m, efficiency, trained, chance, int(seeds[m]))
                                                for m in others]
