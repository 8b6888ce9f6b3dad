"""The manual's reference lists, generated from the code that defines them so that they cannot drift.

A page of docs/ holds a generated block between two marker lines; everything else on the page is prose:

    <!-- generated: spec-settings -->
    | key | default | what it sets |
    ...
    <!-- end generated: spec-settings -->

`python -m membench.runners.reference_docs docs/` rewrites every such block from the code (`--check` only
reports the stale ones and exits 1; tests/test_docs.py fails on a stale page). The blocks (BLOCKS):

    spec-settings   the sweep settings of runners/spec_keys.py (SETTINGS) with their defaults
    spec-top        the other top-level keys of a spec (TOP_KEYS), defaults from SweepSpec
    spec-tables     the keys of [tasks.NAME], [models.NAME], train_mixture segments and eval slices
    tables          every column of every table a results directory holds (runners/schema.py and the
                    reports), in each table's own column order
    families        membench's own model families, from the registry (what `membench models` lists)
    tasks           membench's own tasks, from the registry (what `membench tasks` lists)

Descriptions live here only where the code has none: SPEC_KEY_DOCS for spec keys and COLUMN_DOCS for
columns (a column of the same name means the same in every table, unless TABLE_COLUMN_DOCS says otherwise);
a key or column without a description is an error, so a new one cannot be left out of the manual.

    >>> print(markdown_rows(["key", "default"], [["a", "x | y"]]))
    | key | default |
    |---|---|
    | a | x \\| y |
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pandas as pd
import torch

COMMAND = "python -m membench.runners.reference_docs docs/"

# --- descriptions the code does not hold -------------------------------------------------------------------
SPEC_KEY_DOCS = {
    # settings (a sweep's top level, and overrides in a task, model or cost-class table)
    "lengths": "training lengths, one trial each",
    "seeds": "seeds of model initialisation, training data and eval sets, one trial each",
    "learning_rates": "peak learning rates, one trial each",
    "steps": "the step budget: at most this many training steps; 0 (only for a `pretrained:` model): evaluate "
             "it as it is",
    "shots": "a `pretrained:` model's evaluation: solved examples of the task put before each evaluated one",
    "save_model": "write each finished `hf:` model as a Hugging Face folder, `<out>/models/<trial_id>/`, that "
                  "`pretrained:` loads",
    "time_cap": "seconds a trial may take, evaluation included (status `timeout` after it; the final "
                "evaluation may take one more cap), or `\"auto\"`: twice the cost model's estimate of the "
                "whole trial from `flops_rate`, `step_latency` and `token_latency`, at least 10 s and at most "
                "`max_time_cap`",
    "flops_rate": "FLOP/s the device's training reaches (auto time caps, `membench plan`)",
    "step_latency": "seconds a step costs however small it is (kernel launches)",
    "token_latency": "seconds per token and layer of a family that loops over tokens (cuDNN's RNNs, the "
                     "external memory); none: each family's own (`MemoryModel.token_latency`)",
    "max_time_cap": "the largest auto time cap",
    "batch_size": "sequences per training step",
    "threshold": "stop training early once the evaluation accuracy reaches this",
    "early_stop": "which slices must reach `threshold`: {choices}",
    "budget": "one of {choices}: `fixed` trains to `steps`; `plateau` also stops once the mean accuracy of the "
              "early-stop slices has not risen by `min_delta` in `patience` evaluations",
    "patience": "evaluations without an improvement before a plateau stop",
    "min_delta": "the smallest gain that counts as an improvement (also what \"still improving\" means)",
    "min_steps": "no plateau stop before this many steps (a task can sit at chance for hundreds of steps "
                 "before a model learns it)",
    "near_chance": "plateau: a plateau whose scaled accuracy is below this is not convergence and trains on to "
                   "`steps` (0: off)",
    "second_lr": "with near_chance: a trial that ends near chance is run again from its initial weights at this "
                 "learning rate, the better run kept (0: none)",
    "eval_multipliers": "also evaluate at these multiples of the training length",
    "eval_lengths": "also evaluate at these lengths (those the task cannot do are skipped with a note)",
    "train_length_range": "[lo, hi]: train on lengths drawn uniformly from lo..hi each step (seeded), instead of "
                          "`lengths`; the train length is hi",
    "eval_sequences": "held-out sequences per eval slice",
    "max_eval_tokens": "at most this many tokens an eval slice: fewer sequences where `eval_sequences` x "
                       "length is more (a slice's own `n_sequences` stays); none: no limit",
    "eval_every": "steps between evaluations (early stop, time to accuracy)",
    "log_every": "steps between reads of the loss from the device",
    "warmup": "fraction of the steps of linear warm-up; then cosine decay to lr/10",
    "weight_decay": "AdamW's weight decay",
    "grad_clip": "the gradient norm is clipped to this",
    "target_params": "models are width-matched to this many parameters (a list sweeps several budgets)",
    "match_tolerance": "the matched count must be within this fraction of `target_params`",
    "d_model": "a fixed width instead of matching (the most specific of `target_params`, `d_model`, "
               "`d_models` wins)",
    "d_models": "a sweep of fixed widths, one trial each",
    "n_layers": "layers of every model",
    "max_length": "skip training lengths above this; none: no limit",
    # the other top-level keys
    "name": "the sweep's label",
    "description": "one line shown with the sweep",
    "recipe": "the published setup a shipped recipe reproduces (its presence makes a shipped spec a recipe)",
    "device": "`auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`",
    "compile": "one of {choices} (`cuda_graphs` needs CUDA and compute capability 8.0; `auto`: CUDA graphs on such "
               "a GPU for the families where capture helps, eager elsewhere)",
    "executor": "one of {choices} (Ray: one trial per GPU across a cluster)",
    "cpu_threads": "torch threads of a CPU trial; none: torch's choice",
    "cpu_workers": "worker processes of a sweep on the CPU, or `\"cores\"` (one per core); a trial's rows do "
                   "not depend on the worker that runs it (only timings do)",
    "gpu_workers": "worker processes sharing each GPU (their step timings slow each other down)",
    "tasks": "`\"all\"`, a list of names, or tables `[tasks.NAME]`; a name may be an import path "
             "`pkg.mod:Class`",
    "models": "`\"all\"`, a list of names, or tables `[models.NAME]`; a name may be an import path "
              "`pkg.mod:Class` or `hf:MODEL_TYPE`",
    "cost_classes": "tables `[cost_classes.\"O(n^2)\"]` of settings for every family of a cost class "
                    "(`O(n)`, `O(n*w)`, `O(n log n)`, `O(n^2)`)",
    "include": "plugin folders, relative to the spec file, whose `*.py` files are imported first",
    # [tasks.NAME], [models.NAME], segments and slices
    "task": "the task's name, when the table's key is not (to sweep one task with two param sets)",
    "model": "the family's name or import path, when the table's key is not",
    "params": "params: of the task (`membench tasks`) or family (`membench models`); in a model table a list "
              "sweeps a grid (`{ window = [8, 16], n_heads = [2, 4] }` is 4 configs); in a segment or slice, "
              "merged over the task's params",
    "train_mixture": "train on a mixture of segments instead of `lengths`; each step draws one segment in "
                     "proportion to its `weight` (the trial's train length is the longest segment)",
    "eval_slices": "named eval slices instead of `eval_multipliers`",
    "seq_len": "the segment's or slice's length",
    "weight": "the segment's share of the training steps (relative)",
    "n_sequences": "held-out sequences of the slice (default: `eval_sequences`)",
}
TOP_DEFAULT_TEXT = {"name": "the preset's or file's name", "recipe": "none", "tasks": '`"all"`',
                    "models": '`"all"`', "cost_classes": "none", "include": "none"}
TABLE_KEY_DEFAULT_TEXT = {("slice", "name"): '"L<seq_len>" plus "-<param><value>" per param',
                          ("slice", "n_sequences"): "`eval_sequences`", ("segment", "weight"): "required",
                          ("segment", "seq_len"): "required", ("slice", "seq_len"): "required"}

COLUMN_DOCS = {
    "trial_id": "hash of the trial's whole config and the task's and family's versions",
    "task": "task name", "task_version": "the task's `version` when the trial ran",
    "task_params": "the task's params (JSON)", "model": "family name or import path",
    "model_version": "the family's `version` when the trial ran", "model_params": "the family's params (JSON)",
    "d_model": "width", "n_layers": "layers", "params": "trainable parameters of the model",
    "train_len": "training length (the longest segment of a training mixture, the top of a length range)",
    "train_len_min": "the shortest length trained on (a range's lo, a mixture's shortest segment; else train_len)",
    "train_len_max": "the longest length trained on (equal to train_len)",
    "eval_len": "length of the evaluated sequences", "slice": "eval slice name: `L<eval_len>` for a plain "
    "length, the spec's name for a named slice", "is_train_len": "the slice's length is the training length",
    "seed": "the trial's seed", "lr": "peak learning rate", "batch_size": "sequences per training step",
    "steps": "training steps taken", "accuracy": "token accuracy at the scored positions",
    "exact_match": "share of sequences with every scored position right", "loss": "evaluation cross-entropy",
    "scored": "scored predictions: accuracy's denominator (flip-flop's reads in error_rates.csv)",
    "train_seconds": "training time, evaluation and compile warm-up excluded",
    "compile_seconds": "warm-up that compiles the captured step before the clock starts (0 when eager)",
    "ms_per_step": "milliseconds per training step", "tokens_per_second": "training tokens per second",
    "peak_memory_mb": "peak memory above what the trial started with (CUDA: max allocated; CPU: growth of "
                      "the process's peak resident memory)",
    "flops_per_step": "analytic FLOPs of a step, forward + backward", "tflops_per_s": "achieved TFLOP/s",
    "attention_flops_share": "share of a step's FLOPs in token-to-token attention",
    "memory_flops_share": "share of a step's FLOPs in a scan's or external memory's update and read",
    "state_size": "floats of memory carried per sequence at this length (empty: the model declares none)",
    "time_to_accuracy_seconds": "training seconds until the slice first reached the threshold (empty: never)",
    "time_to_accuracy_steps": "training steps until the slice first reached the threshold",
    "time_to_accuracy_tokens": "training tokens until the slice first reached the threshold",
    "stop_reason": "what ended training: threshold, plateau, budget or time_cap",
    "under_trained": "stopped by the budget or the time cap below the threshold while still improving",
    "chance_plateau": "what the near-chance rule did: more_steps (a plateau near chance trained on), "
                      "second_lr_better / second_lr_worse (run again at second_lr; these rows are the better run's), "
                      "or empty",
    "scaled_accuracy": "(accuracy - chance) / (1 - chance), chance the task's `chance_level` (Grazzi et al. 2025); "
                       "the accuracy itself for a task with an open answer set",
    "status": "ok, timeout, oom, diverged, error, or skipped (a `pretrained:` model's slice longer than its "
              "positions)", "error": "the exception's message when the trial failed",
    "device": "device the trial ran on", "precision": "number format of training: fp32 or bf16",
    "git_commit": "the checkout's commit, `+dirty` when the code had uncommitted changes",
    "torch_version": "torch's version",
    "context_tokens": "mean tokens per evaluated sequence: a `pretrained:` model's tokens of the text (shots "
                      "included), eval_len for a family",
    "chance_level": "accuracy of a uniform guess among the task's answer candidates (0: an open answer set)",
    "accuracy_choice": "a `pretrained:` model: share of answers whose gold is the likeliest candidate (summed "
                       "log-likelihood of its tokens); empty without candidates",
    "read_tokens_per_second": "a `pretrained:` model: tokens its forward passes read per second on this slice",
    "read_peak_memory_mb": "a `pretrained:` model: peak memory while reading this slice (as peak_memory_mb)",
    "kv_cache_bytes_per_token": "a `pretrained:` model: bytes of KV cache (or recurrent state) per token at "
                                "context_tokens, in its weights' dtype",
    "lag_unit": "what lag_bucket counts: symbols (the task's positions) or tokens (a `pretrained:` model's)",
    "lag_bucket": "lags in [b, 2b): how many tokens back the evidence lies",
    "count": "scored positions in the bucket", "step": "training step of the point",
    "seconds": "training seconds at the point", "tokens": "training tokens at the point",
    "train_loss": "training loss at the point (the latest read)", "eval_accuracy": "evaluation accuracy at the "
    "training length at the point (empty between evaluations)",
    "config": "the trial's config: model_params, d_model, n_layers, lr and batch_size joined by `|`",
    "seeds": "seeds averaged", "ci_low": "lower end of the 95 % interval", "ci_high": "upper end of the 95 % "
    "interval", "on_pareto_front": "no point of the family has a state as small and an accuracy as high, "
    "one strictly better", "reads": "scored reads of the slice", "errors": "wrong reads",
    "error_rate": "errors / reads", "min": "the lowest slice accuracy of the trial",
    "<slice>": "accuracy on that named slice, one column per slice in the spec's order",
    "seq_len": "sequence length", "flops": "analytic FLOPs of a step (3 x forward)",
    "attention_flops": "of which token-to-token attention", "memory_flops": "of which a scan's or external "
    "memory's update and read", "time_exponent": "fitted slope of log time per sequence against log length",
    "memory_exponent": "fitted slope of log memory per sequence against log length",
    "flops_exponent": "fitted slope of log FLOPs per sequence against log length",
    "n_points": "points the fit used (the upper half of the successful lengths, at least 2)",
    "min_len": "shortest length of the fit", "max_len": "longest length of the fit",
    "rank": "rank by score (ties: more horizon, fewer parameters, name)", "score": "mean over tasks of the "
    "mean accuracy", "trials": "trials of the family", "failed_trials": "trials that failed (counted 0)",
    "timeout_trials": "trials stopped by their time cap (counted at their accuracy)",
    "missing_cells": "cells the sweep has no trial of (counted 0)",
    "under_trained_cells": "cells whose chosen trials were under-trained (empty when not recorded)",
    "outdone_cells": "cells that a longer trained length of the task, trained for more steps, beat by 0.1 or more",
    "unevaluated_trials": "trials with no plain evaluation at the trained length (counted 0: see slices.md)",
    "<task> horizon": "longest trained length with accuracy >= 0.9 (0: none)",
    "<task> mean_accuracy": "mean over trained lengths of the cell accuracy",
    "score_ci_low": "95 % bootstrap interval of the score over seeds, low end (empty with one seed)",
    "score_ci_high": "high end of that interval",
    "<task> mean_accuracy_ci_low": "95 % bootstrap interval of the task's mean accuracy, low end",
    "<task> mean_accuracy_ci_high": "high end of that interval",
    "tied_rank": "rank of the first family whose score interval overlaps (shown as `2=`)",
}
TABLE_COLUMN_DOCS = {
    ("leaderboard", "kind"): "pretrained (a `pretrained:` model, evaluated as it is) or trained",
    ("leaderboard", "params"): "the family's largest model", ("leaderboard", "train_seconds"): "sum over "
    "its trials", ("leaderboard", "seeds"): "the most seeds of any of its cells",
    ("frontier", "params"): "parameters of the config", ("frontier", "accuracy"): "seed mean of the slice "
    "accuracy (a failed seed counts 0)", ("frontier", "state_size"): "floats carried at the slice's length",
    ("cost", "batch_size"): "sequences per step (about `--batch-tokens` tokens)",
    ("cost", "ms_per_step"): "median step time (forward + backward)", ("cost", "status"): "ok, oom, timeout "
    "or error (the family's last row)", ("cost", "peak_memory_mb"): "peak memory of a step above what was "
    "held before it", ("error_rates", "ci_low"): "exact 95 % Clopper-Pearson interval, low end",
    ("error_rates", "ci_high"): "exact 95 % Clopper-Pearson interval, high end",
    ("lags", "accuracy"): "accuracy at the scored positions of the bucket",
    ("slice_curves", "accuracy"): "the slice's accuracy at that evaluation",
}


# --- rendering ------------------------------------------------------------------------------------------------
def markdown_rows(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table whose cells may hold `|` (escaped)."""
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def toml_value(value) -> str:
    """A default as it is written in a spec: `[64, 128]`, `"auto"`, `true`; None is "none"."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, list):
        return "`[" + ", ".join(toml_value(v).strip("`") for v in value) + "]`"
    if isinstance(value, float):
        return f"`{format(value, 'g').replace('e+', 'e')}`"  # 1e13, 0.001, 600
    return f"`{value!r}`"


def _describe_key(key: str) -> str:
    from membench.runners.executors import EXECUTORS
    from membench.runners.step_loss import COMPILE_MODES
    from membench.runners.trial import BUDGETS, EARLY_STOPS

    choices = {"early_stop": EARLY_STOPS, "budget": BUDGETS, "compile": COMPILE_MODES, "executor": EXECUTORS}
    if key not in SPEC_KEY_DOCS:
        raise KeyError(f"spec key {key!r} has no description: add one to SPEC_KEY_DOCS in {__name__}")
    named = ", ".join(f"`{c}`" for c in choices.get(key, ()))
    return SPEC_KEY_DOCS[key].replace("{choices}", named)


def spec_settings() -> str:
    from membench.runners.spec_keys import SETTINGS

    rows = [[f"`{key}`", toml_value(default), _describe_key(key)] for key, (_, default) in SETTINGS.items()]
    return markdown_rows(["key", "default", "what it sets"], rows)


def spec_top() -> str:
    from membench.runners.spec import SweepSpec
    from membench.runners.spec_keys import SETTINGS, TOP_KEYS

    fields = {f.name: f.default for f in dataclasses.fields(SweepSpec) if f.default is not dataclasses.MISSING}
    rows = []
    for key in TOP_KEYS:
        default = TOP_DEFAULT_TEXT[key] if key in TOP_DEFAULT_TEXT else toml_value(fields[key])
        rows.append([f"`{key}`", default, _describe_key(key)])
    assert not set(TOP_KEYS) & set(SETTINGS)
    return markdown_rows(["key", "default", "what it sets"], rows)


def spec_tables() -> str:
    from membench.runners.spec_keys import MODEL_KEYS, SEGMENT_KEYS, SLICE_KEYS, TASK_KEYS

    tables = {"task": ("[tasks.NAME]", TASK_KEYS), "model": ("[models.NAME]", MODEL_KEYS),
              "segment": ("[[tasks.NAME.train_mixture]]", SEGMENT_KEYS),
              "slice": ("[[tasks.NAME.eval_slices]]", SLICE_KEYS)}
    rows = []
    for kind, (where, keys) in tables.items():
        for key in keys:
            default = TABLE_KEY_DEFAULT_TEXT.get((kind, key), "none")
            rows.append([f"`{where}`", f"`{key}`", default, _describe_key(key) if key != "name" else
                         "the slice's name in runs.csv (unique, non-empty)"])
    return markdown_rows(["table", "key", "default", "what it sets"], rows)


def _synthetic_runs() -> pd.DataFrame:
    """One ok runs.csv row of task "<task>" evaluated on a named slice "<slice>" and on its plain length: what
    the reports need to show every column they can write."""
    from membench.runners.schema import RUNS_COLUMNS

    row = dict.fromkeys(RUNS_COLUMNS, 0)
    row.update(trial_id="t", task="<task>", task_params="{}", model="m", model_params="{}", d_model=8, n_layers=1,
               params=100, train_len=8, eval_len=8, slice="L8", is_train_len=True, seed=0, lr=1e-3, batch_size=1,
               steps=1, accuracy=1.0, status="ok", stop_reason="threshold", under_trained=False, error="",
               device="cpu", precision="fp32", git_commit="x", torch_version=torch.__version__)
    return pd.DataFrame([row, {**row, "slice": "<slice>"}])


def table_columns() -> dict[str, tuple[str, list[str]]]:
    """Table name -> (file, its columns in order), from the code that writes each table."""
    from membench.runners.cost.fit import FIT_COLUMNS
    from membench.runners.cost.measure import COST_COLUMNS
    from membench.runners.reporting.error_rates import ERROR_COLUMNS
    from membench.runners.reporting.frontier import COLUMNS as FRONTIER_COLUMNS
    from membench.runners.reporting.leaderboard import build_leaderboard
    from membench.runners.reporting.slices import slice_table
    from membench.runners.schema import TABLES

    runs = _synthetic_runs()
    tables = {name: (f"{name}.csv", columns) for name, columns in TABLES.items()}
    tables["leaderboard"] = ("leaderboard.csv", list(build_leaderboard(runs)[0].columns))
    tables["slices"] = ("slices.csv", list(slice_table(runs).columns))
    tables["frontier"] = ("frontier.csv", FRONTIER_COLUMNS)
    tables["error_rates"] = ("error_rates.csv", ERROR_COLUMNS)
    tables["cost"] = ("cost.csv", COST_COLUMNS)
    tables["cost_fit"] = ("cost_fit.csv", FIT_COLUMNS)
    return tables


def column_doc(table: str, column: str) -> str:
    doc = TABLE_COLUMN_DOCS.get((table, column), COLUMN_DOCS.get(column))
    if doc is None:
        raise KeyError(f"column {column!r} of {table} has no description: add one to COLUMN_DOCS in {__name__}")
    return doc


def tables() -> str:
    parts = []
    for name, (file, columns) in table_columns().items():
        rows = [[f"`{c}`", column_doc(name, c)] for c in columns]
        parts.append(f"#### `{file}`\n\n" + markdown_rows(["column", "what it holds"], rows))
    return "\n\n".join(parts)


def families() -> str:
    from membench.models import MODELS, build_model, family_params, list_models, model_class

    rows = []
    for name in (n for n in list_models() if MODELS.source(n) == "membench"):  # not a user's plugin
        with torch.device("meta"):  # counts and sizes only: nothing is allocated
            model = build_model(name, 64, d_model=64, n_layers=2)
        state = model.state_size(1024)
        params = ", ".join(f"`{k}={v!r}`" for k, v in family_params(name).items()) or "-"
        rows.append([f"`{name}`", model_class(name).memory_mechanism, model_class(name).cost_class,
                     f"{model.num_params():,}", "unknown" if state is None else f"{state:,}", params])
    return ("Width 64, 2 layers, vocabulary 64; state in floats per sequence at length 1024 (`membench models` "
            "prints the same at any size).\n\n"
            + markdown_rows(["family", "memory mechanism", "cost", "params", "state@1024",
                             "family params (defaults)"], rows))


def tasks() -> str:
    from membench.memtasks import TASKS, list_tasks, task_class

    rows = []
    for name in (n for n in list_tasks() if TASKS.source(n) == "membench"):
        cls = task_class(name)
        params = ", ".join(f"`{f.name}={f.default!r}`" for f in dataclasses.fields(cls)) or "-"
        rows.append([f"`{name}`", str(cls.version), cls.description, params])
    return markdown_rows(["task", "version", "description", "params (defaults)"], rows)


BLOCKS = {"spec-settings": spec_settings, "spec-top": spec_top, "spec-tables": spec_tables, "tables": tables,
          "families": families, "tasks": tasks}
_BLOCK = re.compile(r"(<!-- generated: ([\w-]+) -->\n)(.*?)(<!-- end generated: \2 -->)", re.S)


def refreshed(text: str) -> str:
    """`text` with each generated block rendered anew from the code (an unknown block name is an error)."""
    def render(match):
        name = match.group(2)
        if name not in BLOCKS:
            raise KeyError(f"unknown generated block {name!r}: one of {', '.join(BLOCKS)}")
        return f"{match.group(1)}{BLOCKS[name]()}\n{match.group(4)}"
    return _BLOCK.sub(render, text)


def generated_blocks(text: str) -> list[str]:
    """The names of the generated blocks in a page."""
    return [m.group(2) for m in _BLOCK.finditer(text)]


def stale_pages(docs: Path) -> list[Path]:
    """The pages of `docs` whose generated blocks differ from the code."""
    return [p for p in sorted(Path(docs).glob("*.md")) if refreshed(p.read_text()) != p.read_text()]


def main(argv: list[str]) -> int:
    check = "--check" in argv
    folders = [a for a in argv if a != "--check"]
    if len(folders) != 1 or not Path(folders[0]).is_dir():
        sys.stderr.write(f"usage: {COMMAND} [--check]\n")
        return 2
    stale = stale_pages(Path(folders[0]))
    for page in stale:
        if check:
            print(f"stale: {page} (run `{COMMAND}`)")
        else:
            page.write_text(refreshed(page.read_text()))
            print(f"rewrote {page}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
