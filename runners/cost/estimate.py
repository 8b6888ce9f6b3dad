"""How long a trial is expected to take, from its family's own analytic FLOPs: the cost model behind
`time_cap = "auto"` and `membench plan`.

A training step of batch B at length T is taken to cost the larger of its arithmetic and its latency, and a
forward pass of evaluation a third of a step (the forward's share of both):

    step_seconds = max(W * 3 * F(B, T) / flops_rate,                   # forward + backward ~ 3x forward
                       step_latency + n_layers * T * token_latency)    # launches; a loop over tokens
    eval_seconds = sum over the eval slices of ceil(n_sequences / B) * step_seconds(F(B, T_slice)) / 3
    trial_seconds = steps * step_seconds + evaluations * eval_seconds  # every eval_every steps and at the end
    time_cap     = clamp(CAP_MARGIN * trial_seconds, MIN_AUTO_CAP, max_time_cap)

with F the model's forward FLOPs on its fast path (`MemoryModel.fast_path_flops`: `flops`, except where a fast
path does less work than the reference, as hyena's FFT; the longest segment of a mixture) and W the workers
sharing the GPU (`gpu_workers`): they share its arithmetic, while each waits on its own launches, so a sweep
of latency-bound trials runs about W times faster in all and a compute-bound one no faster. The three rates are
settings of the sweep (per cost class or per family, like any setting): `flops_rate`, the FLOP/s a small model's
training reaches on the device; `step_latency`, the seconds a step costs however small (kernel launches of an
eager step); `token_latency`, the seconds per token and layer (forward + backward) of a family whose fast path
still steps through the tokens one at a time (cuDNN's RNNs, the external memory's loop), 0 for the rest. A spec
that sets no `token_latency` takes each family's own, declared on its class (`MemoryModel.token_latency`: 5e-6 s
for cuDNN's RNNs and rnn_attention, 1e-5 s for the memory transformer, 1e-4 s for the external memory).
Evaluation counts because the time cap does (runners/train.py): every slice is scored every `eval_every`
steps, and the slices at 2x and 4x the trained length cost an attention model 4x and 16x per sequence.
CAP_MARGIN leaves room for a step slower than estimated; a trial that stops on a plateau or at the threshold
uses less.

Worked example (the standard preset's rates for an H100: 1e13 FLOP/s, 3 ms a step): its transformer, matched
to 230k parameters (width 96, vocabulary 64), does F = 4.1e10 FLOPs forward at T = 1024, B = 32, so a step is
max(3 * 4.1e10 / 1e13, 0.003) = 12 ms; at T = 64, F = 1.0e9 and the step is latency-bound, 3 ms; at T = 4096
(`--lengths ...,4096`), F = 4.7e11 and a step takes 0.14 s.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import statistics
from dataclasses import dataclass

import torch

from membench.models import build_model, model_class

CAP_MARGIN = 2.0  # the cap allows twice the estimated time (a slower step, a slower evaluation)
MIN_AUTO_CAP = 10.0  # seconds: no estimate is trusted below this (start-up, the first evaluation)


@dataclass(frozen=True)
class Rates:
    """What the cost model assumes of the device (see the module docstring)."""

    flops_rate: float  # FLOP/s of training
    step_latency: float = 0.0  # seconds per step, whatever its size
    token_latency: float | None = None  # seconds per token and layer of a loop over tokens; None: the family's own

    def of_family(self, model: str) -> Rates:
        """These rates for the family `model`: a token_latency left unset is the family's own.

            >>> unset, zero = Rates(1e13), Rates(1e13, token_latency=0.0)
            >>> unset.of_family("lstm").token_latency, unset.of_family("mlp").token_latency, zero.of_family("lstm")
            (5e-06, 0.0, Rates(flops_rate=10000000000000.0, step_latency=0.0, token_latency=0.0))
        """
        if self.token_latency is not None:
            return self
        return dataclasses.replace(self, token_latency=model_class(model).token_latency)


@functools.lru_cache(maxsize=4096)
def _forward_flops(model: str, params: str, vocab_size: int, d_model: int, n_layers: int, batch_size: int,
                   seq_len: int) -> int:
    device = "meta" if model_class(model).analytic_flops else "cpu"  # counted flops need a real forward
    with torch.device(device):
        built = build_model(model, vocab_size, d_model=d_model, n_layers=n_layers, **json.loads(params))
    return int(built.fast_path_flops(batch_size, seq_len))


def forward_flops(model: str, model_params: dict, vocab_size: int, d_model: int, n_layers: int,
                  batch_size: int, seq_len: int) -> int:
    """The family's forward FLOPs of one batch on its fast path: computed from a model built on the meta
    device (no memory), or, for a model whose FLOPs are counted (Hugging Face, imported), on a CPU forward.
    Cached per shape."""
    params = json.dumps(model_params, sort_keys=True)
    return _forward_flops(model, params, vocab_size, d_model, n_layers, batch_size, seq_len)


def step_seconds(flops: int, seq_len: int, n_layers: int, rates: Rates, workers: int = 1) -> float:
    """Estimated seconds of one training step whose forward pass costs `flops`, `workers` sharing the device,
    at one family's rates (`Rates.of_family`: its token_latency set)."""
    return max(workers * 3 * flops / rates.flops_rate,
               rates.step_latency + n_layers * seq_len * rates.token_latency)


def auto_time_cap(seconds: float, max_time_cap: float) -> float:
    """The time cap of a trial expected to take `seconds` (`trial_seconds`), rounded to 0.1 s.

        >>> auto_time_cap(450.0, 1800.0), auto_time_cap(9.0, 1800.0), auto_time_cap(1.0, 60.0), auto_time_cap(1e4, 60.0)
        (900.0, 18.0, 10.0, 60.0)
    """
    return round(min(max(CAP_MARGIN * seconds, MIN_AUTO_CAP), max_time_cap), 1)


def model_step_seconds(model: str, model_params: dict, vocab_size: int, d_model: int, n_layers: int,
                       batch_size: int, seq_len: int, rates: Rates, workers: int = 1) -> float:
    """The cost model's seconds per training step of this model on (batch_size, seq_len) batches."""
    flops = forward_flops(model, model_params, vocab_size, d_model, n_layers, batch_size, seq_len)
    return step_seconds(flops, seq_len, n_layers, rates.of_family(model), workers)


def evaluations(steps: int, eval_every: int) -> int:
    """How many evaluations a trial of `steps` makes: every `eval_every` steps, and a final one unless the
    last step was just evaluated (runners/train.py).

        >>> evaluations(2000, 100), evaluations(250, 100), evaluations(50, 100)
        (20, 3, 1)
    """
    return steps // eval_every + (steps % eval_every > 0)


def trial_seconds(model: str, model_params: dict, vocab_size: int, d_model: int, n_layers: int, batch_size: int,
                  seq_len: int, steps: int, eval_every: int, slices, rates: Rates,
                  workers: int = 1) -> tuple[float, float]:
    """(training, evaluation) seconds of a trial that runs all its `steps` on (batch_size, seq_len) batches and
    scores its eval `slices` (each with seq_len and n_sequences) at every evaluation."""
    def seconds(length: int) -> float:
        return model_step_seconds(model, model_params, vocab_size, d_model, n_layers, batch_size, length, rates,
                                  workers)

    one_evaluation = sum(-(-s.n_sequences // batch_size) * seconds(s.seq_len) / 3 for s in slices)
    return steps * seconds(seq_len), evaluations(steps, eval_every) * one_evaluation


def _longest(trial) -> int:
    return max(segment.seq_len for segment in trial.segments)


def trial_step_seconds(trial, rates: Rates, workers: int = 1) -> float:
    """The cost model's seconds per step of `trial` (a TrialConfig), at its longest segment."""
    return model_step_seconds(trial.model, trial.model_params, trial.vocab_size(), trial.d_model, trial.n_layers,
                              trial.batch_size, _longest(trial), rates, workers)


def plan(trials, rates, workers: int = 1) -> list[dict]:
    """Per family, in sweep order: trials, the estimated hours if every trial ran all its steps (at its
    `rates`, one Rates per trial), evaluation included and also given apart, and the sum of its time caps in
    hours (what the sweep can take at most), each summed over the trials (divide by the workers side by side
    for the wall time)."""
    rows: dict[str, dict] = {}
    for trial, trial_rates in zip(trials, rates):
        training, evaluating = trial_seconds(
            trial.model, trial.model_params, trial.vocab_size(), trial.d_model, trial.n_layers, trial.batch_size,
            _longest(trial), trial.steps, trial.eval_every, trial.eval_slices, trial_rates, workers)
        row = rows.setdefault(trial.model, {"model": trial.model, "trials": 0, "hours": 0.0, "eval_hours": 0.0,
                                            "cap_hours": 0.0, "longest": 0})
        row["trials"] += 1
        row["hours"] += (training + evaluating) / 3600
        row["eval_hours"] += evaluating / 3600
        row["cap_hours"] += trial.time_cap / 3600
        row["longest"] = max(row["longest"], trial.train_len)
    return list(rows.values())


def against(trials, rates, runs, workers: int = 1) -> list[dict]:
    """Per family: how the cost model's step times compare with those a finished sweep measured (`runs`, its
    runs.csv), over the trials of this spec that it holds: the median of measured / estimated ms per step
    (above 1: the device is slower than the rates say; divide flops_rate, or multiply step_latency, by it)."""
    measured = runs.drop_duplicates("trial_id").set_index("trial_id")["ms_per_step"].dropna()
    ratios: dict[str, list[float]] = {}
    for trial, trial_rates in zip(trials, rates):
        if trial.trial_id in measured.index:
            estimate_ms = 1000 * trial_step_seconds(trial, trial_rates, workers)
            ratios.setdefault(trial.model, []).append(float(measured[trial.trial_id]) / estimate_ms)
    return [{"model": model, "trials": len(r), "median": statistics.median(r), "low": min(r), "high": max(r)}
            for model, r in ratios.items()]
