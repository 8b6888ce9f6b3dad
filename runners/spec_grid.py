"""A checked spec expanded into trials: the grid of every (task, model) pair, each model sized at spec time.

`expand` takes the task tables and model points that runners/spec.py has read and checked and gives the
trials in run order. For each task, then each model point (a family with one point of its params grid,
`param_grid`), the settings are merged by precedence (runners/spec_keys.py) and the pair becomes

    lengths x widths x learning rates x seeds

trials (a train_length_range [lo, hi] is one length: trials trained on lengths drawn from lo..hi, its train
length hi), each with the eval slices of its length and the rates of the cost model by which time_cap = "auto"
is sized (runners/cost/estimate.py). Example: lengths [64, 128], target_params [1e5, 4e5], one learning
rate, seeds [0, 1] -> 2 x 2 x 1 x 2 = 8 trials of the pair.

Widths are d_models, d_model, or matched to each target_params at the task's vocabulary
(models.matched_width); every model is counted on the meta device (nothing is allocated) against the
parameter ceiling of membench.checks.LIMITS, and the batch and eval slice sizes against theirs. What the grid
drops is a note, never silence: a training length the task cannot do, a length above max_length, a model
brought in by "all" that no width matches (`Unmatched`; a model the spec names raises it), a softmax-attention
head width off the fast-kernel grid.
"""

from __future__ import annotations

import functools
import itertools
import json
from typing import NamedTuple

from membench import plugins
from membench.checks import ConfigError, check_limit
from membench.memtasks import task_class
from membench.models import count_params, fast_attention_width, matched_width, model_class
from membench.models.pretrained import is_pretrained
from membench.runners.cost import estimate
from membench.runners.spec_keys import TaskTable, merge_settings, slice_name
from membench.runners.trial import EvalSlice, Segment, TrialConfig


class Unmatched(ConfigError):
    """No width of a model is within match_tolerance of target_params (at a task's vocabulary)."""


class ModelPoint(NamedTuple):
    """One model of the sweep at one point of its params grid, with the settings it brings."""

    name: str  # the registered family
    params: dict  # one point of param_grid
    cost: dict  # the settings of its cost class's table
    settings: dict  # the settings of its own table
    chosen: bool  # named by the spec or the command line (else brought in by "all": skipped where unmatched)


def param_grid(params: dict, where: str) -> list[dict]:
    """A family's params with lists swept: {"window": [8, 16], "d_state": 8} -> two param sets, one per point
    of the grid (the product of every list, in the order given)."""
    axes = {k: v if isinstance(v, list) else [v] for k, v in params.items()}
    for key, values in axes.items():
        if not values:
            raise ConfigError(f"{where} params {key}: an empty list sweeps nothing; give at least one value")
    return [dict(zip(axes, point)) for point in itertools.product(*axes.values())]


def expand(tasks: list[TaskTable], models: list[ModelPoint], top: dict, flags: dict,
           workers: int = 1) -> tuple[list[TrialConfig], list[estimate.Rates], list[str]]:
    """(trials, their cost-model rates, notes) of every (task, model point) pair; `top` and `flags` are the
    settings of the spec's top level and of the command line, `workers` the processes sharing each GPU."""
    trials, rates, notes = [], [], []
    for task in tasks:
        task_trials, unmatched = [], 0
        for model in models:
            s = merge_settings([top, task.settings, model.cost, model.settings, flags])
            if is_pretrained(model.name):  # evaluated as it is, unless its own table asks for steps (fine-tuning)
                s["steps"] = model.settings.get("steps", 0)
            try:
                task_trials += _pair(task, model.name, model.params, s, notes, workers)
            except Unmatched as err:
                if model.chosen:
                    raise
                unmatched += 1
                _note(notes, f"{task.name}: {model.name} skipped: {err}")
        if not task_trials:
            why = "; ".join(n.split(": ", 1)[1] for n in notes if n.startswith(f"{task.name}: "))
            skipped = "every model was skipped" if unmatched == len(models) else "every training length was skipped"
            raise ConfigError(f"{task.where}: {skipped} ({why})")
        trials += [trial for trial, _ in task_trials]
        rates += [trial_rates for _, trial_rates in task_trials]
    return trials, rates, notes


def _pair(task: TaskTable, model: str, model_params: dict, s: dict, notes: list[str],
          workers: int) -> list[tuple[TrialConfig, estimate.Rates]]:
    """The trials of one (task, model) pair, lengths x widths x learning rates x seeds, each with the rates
    of the cost model (runners/cost/estimate.py) by which time_cap = "auto" is sized."""
    rates = estimate.Rates(s["flops_rate"], s["step_latency"], s["token_latency"])
    length_range = ()
    if task.segments is not None:
        if s["train_length_range"]:
            raise ConfigError(f"{task.where}: a train_mixture and a train_length_range cannot be combined; "
                              f"give the task lengths instead of the range, or drop its train_mixture")
        segments = tuple(Segment(p["seq_len"], p["params"], p.get("weight", 1.0)) for p in task.segments)
        lengths = [max(seg.seq_len for seg in segments)]
    elif s["train_length_range"]:
        segments, length_range = (), tuple(s["train_length_range"])
        _check_range(task, length_range)
        lengths = [length_range[1]]
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
    checkpoint = _checkpoint_size(model, model_params, s, task.where)  # a pretrained: model's (d_model, n_layers)
    trials = []
    for length in lengths:
        slices = _slices(task, length, s, notes)
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
        widths = [checkpoint[0]] if checkpoint else _widths(model, model_params, s, vocab, task.where)
        n_layers = checkpoint[1] if checkpoint else s["n_layers"]
        for d_model in widths:
            with plugins.blamed_on("model", model, f"while being built for {task.where} at d_model {d_model}"):
                if checkpoint is None:
                    _check_size(model, model_params, vocab, d_model, s["n_layers"], notes)
                time_cap = s["time_cap"]
                if time_cap == "auto" and checkpoint is None:
                    seconds = estimate.trial_seconds(model, model_params, vocab, d_model, s["n_layers"],
                                                     s["batch_size"], longest, s["steps"], s["eval_every"], slices,
                                                     rates, workers)
                    time_cap = estimate.auto_time_cap(sum(seconds), s["max_time_cap"])
            for lr in s["learning_rates"]:
                for seed in s["seeds"]:
                    trials.append((TrialConfig(
                        task=task.name, task_params=task.params, model=model, model_params=model_params,
                        d_model=d_model, n_layers=n_layers, train_len=length, seed=seed, lr=lr,
                        batch_size=s["batch_size"], steps=s["steps"], eval_slices=slices, time_cap=time_cap,
                        threshold=s["threshold"], eval_every=s["eval_every"], log_every=s["log_every"],
                        warmup=s["warmup"], weight_decay=s["weight_decay"], grad_clip=s["grad_clip"],
                        segments=segments, task_version=task_class(task.name).version,
                        early_stop=s["early_stop"], budget=s["budget"], patience=s["patience"],
                        min_delta=s["min_delta"], min_steps=s["min_steps"], train_length_range=length_range,
                        near_chance=s["near_chance"], second_lr=s["second_lr"],
                        shots=s["shots"], save_model=s["save_model"],
                    ), rates))
    return trials


def _checkpoint_size(model: str, model_params: dict, s: dict, where: str) -> tuple[int, int] | None:
    """(d_model, n_layers) of a pretrained: model, read from its checkpoint at its params' revision and
    trust_remote_code (the spec's sizes do not apply), or None for a family. A pretrained: model is evaluated as
    it is (steps = 0: the steps of the spec's top level, task tables and command line are the families') or
    fine-tuned (steps in its own model table); a family must train; only an hf: model can be saved."""
    if s["save_model"] and not model.startswith("hf:"):
        raise ConfigError(f"{where}: save_model writes Hugging Face folders of hf: models only; set save_model = "
                          f"false for {model}")
    if not is_pretrained(model):
        if s["steps"] == 0:
            raise ConfigError(f"{where}: steps = 0 evaluates without training, which only a pretrained: model can "
                              f"do; give {model} steps >= 1")
        return None
    return model_class(model).checkpoint_size(model_params.get("revision"), model_params.get("trust_remote_code",
                                                                                             False))


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


@functools.lru_cache(maxsize=None)
def _matched_width(model: str, target: int, vocab: int, n_layers: int, tolerance: float, params_json: str) -> int:
    return matched_width(model, target, vocab, n_layers=n_layers, tolerance=tolerance, **json.loads(params_json))


def _check_size(model: str, model_params: dict, vocab: int, d_model: int, n_layers: int, notes: list[str]) -> None:
    """The model must fit the size ceiling; a softmax-attention width off the fast-kernel grid gets a note."""
    _check_model_size(model, vocab, d_model, n_layers, json.dumps(model_params, sort_keys=True))
    if not fast_attention_width(model, d_model, **model_params):
        _note(notes, f"{model}: d_model {d_model} gives a head width that is not a multiple of 8, so a GPU's "
                     f"attention may fall back to its slow math kernel (choose n_heads or target_params so "
                     f"that d_model / n_heads is a multiple of 8)")


@functools.lru_cache(maxsize=None)
def _check_model_size(model: str, vocab: int, d_model: int, n_layers: int, params_json: str) -> None:
    """The model must fit the size ceiling (counted on the meta device: nothing is allocated)."""
    try:
        n = count_params(model, vocab, d_model, n_layers, **json.loads(params_json))
    except ConfigError as err:
        raise ConfigError(f"model {model} cannot be built with d_model {d_model}, n_layers {n_layers}: {err}") from None
    check_limit(f"model {model} at d_model {d_model}, n_layers {n_layers}, vocab_size {vocab}: its parameter count",
                n, "params")


def _check_range(task: TaskTable, length_range: tuple[int, int]) -> None:
    """Every length of a train_length_range must be one the task can train at (one line naming the first
    that is not)."""
    low, high = length_range
    for length in range(low, high + 1):
        try:
            task.task.check_length(length)
        except ConfigError as err:
            raise ConfigError(f"{task.where} train_length_range [{low}, {high}]: length {length} is drawn from it "
                              f"but {err}; narrow the range") from None


def _slices(task: TaskTable, train_len: int, s: dict, notes: list[str]) -> tuple[EvalSlice, ...]:
    """Explicit slices, or the train length, its multiples and the eval_lengths, those the task can do (an
    eval_length it cannot do is skipped with a note)."""
    if task.slices is not None:
        return tuple(
            EvalSlice(p.get("name", slice_name(p["seq_len"], p["params"])), p["seq_len"],
                      p.get("n_sequences", _eval_sequences(s, p["seq_len"])), p["params"])
            for p in task.slices
        )
    slices = []
    for length in dict.fromkeys([train_len] + [train_len * m for m in s["eval_multipliers"]] + s["eval_lengths"]):
        try:
            task.task.check_length(length)
        except ConfigError as err:
            if length in s["eval_lengths"]:
                _note(notes, f"{task.name}: eval length {length} skipped: {err}")
            continue
        slices.append(EvalSlice(slice_name(length, {}), length, _eval_sequences(s, length)))
    return tuple(slices)


def _eval_sequences(s: dict, seq_len: int) -> int:
    """eval_sequences, or fewer where they would exceed max_eval_tokens at this length (at least one)."""
    if s["max_eval_tokens"] is None:
        return s["eval_sequences"]
    return max(1, min(s["eval_sequences"], s["max_eval_tokens"] // seq_len))


def _note(notes: list[str], text: str) -> None:
    if text not in notes:
        notes.append(text)
