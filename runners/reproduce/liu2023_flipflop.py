"""liu2023_flipflop: Liu et al. (NeurIPS 2023), "Exposing Attention Glitches with Flip-Flop Language
Modeling": trained on FFL(0.8), a small LSTM reads the sparse FFL(0.98) stream without a single error, while
Transformers that have learned the task still make rare, sporadic errors there ("attention glitches").
Recipe: runners/presets/reproduce_liu2023_flipflop.toml, trained at 64 and at 256 tokens, each evaluated at
its own length on slices "L<length>" = FFL(0.8), "sparse" = FFL(0.98) and "dense" = FFL(0.1); every claim is
judged at each trained length.

The paper's numbers: the LSTM's errors are 0 on every test stream; the Transformers' errors on FFL(0.98) are
rare but not 0 (its main results, Section 3). Ours: errors / reads pooled over seeds per model and stream
(runners/reporting/error_rates.py: one row per trial and slice), with the exact 95 % Clopper-Pearson interval
of the pooled rate. Rules, fixed before any run:

    "no errors"    holds when the pooled errors are 0 (the interval's top says how few a rate that leaves)
    "rare errors"  holds when the pooled errors are > 0 and the rate is <= RARE (0.05); more is a wholesale
                   failure, not a glitch ("does not hold"); not comparable when the Transformer has not
                   learned its training stream (error rate on FFL(0.8) above LEARNED, 0.01): glitches are
                   the errors of a model that otherwise reads correctly

Worked example: 0 errors in 30,000 sparse reads (three seeds) give the rate 0 in [0, 1.23e-4]: "no errors"
holds; 3 Transformer errors in those reads, with 0.2 % errors on FFL(0.8), give 1e-4: "rare errors" holds.
"""

from __future__ import annotations

import pandas as pd

from membench.runners.reporting.error_rates import clopper_pearson, error_rate_table
from membench.runners.reproduce.claims import DOES_NOT_HOLD, HOLDS, NOT_COMPARABLE, Finding

RARE, LEARNED = 0.05, 0.01
TITLE = "Liu et al. 2023: flip-flop, the LSTM reads without errors, attention glitches"
SPEC = "reproduce_liu2023_flipflop"
SUMMARY = "Liu et al. (NeurIPS 2023): an LSTM makes no errors on sparse flip-flop, a Transformer rare ones"
SOURCE = "Liu et al. 2023, Section 3 (FFL(0.98) and FFL(0.1) test streams)"
METRIC = "error rate (errors / reads)"


def pooled(rates: pd.DataFrame, model: str, stream: str) -> tuple[int, int, int, str]:
    """(errors, reads, trials, per-seed errors as text) of `model` on slice `stream`, over its seeds (`rates`:
    the error-rate rows of one trained length)."""
    mine = rates[(rates["model"] == model) & (rates["slice"] == stream) & (rates["status"] == "ok")]
    per_seed = ", ".join(f"seed {int(r.seed)}: {int(r.errors)}/{int(r.reads)}" for r in mine.itertuples())
    return int(mine["errors"].sum()), int(mine["reads"].sum()), len(mine), per_seed


def _finding(claim: str, model: str, stream: str, paper: str, verdict: str, why: str, errors: int, reads: int,
             trials: int) -> Finding:
    low, high = clopper_pearson(errors, reads) if reads else (float("nan"), float("nan"))
    rate = errors / reads if reads else float("nan")
    return Finding(claim, f"{model} on {stream}", SOURCE, METRIC, paper, verdict, why, rate, low, high,
                   1.0 - rate, trials)


def _stream(slice_name: str, length: int) -> str:
    return f"{slice_name} ({length} tokens)"


def no_errors(rates: pd.DataFrame, model: str, stream: str, length: int) -> Finding:
    """"`model` makes no errors on `stream`" (trained and read at `length`): holds when the pooled errors are 0."""
    errors, reads, trials, per_seed = pooled(rates, model, stream)
    where = _stream(stream, length)
    claim = f"the {model} makes no errors on {where}"
    if not reads:
        return _finding(claim, model, where, "0 errors", NOT_COMPARABLE, f"no finished {model} trial read {where}",
                        0, 0, 0)
    why = f"{errors} errors in {reads:,} reads ({per_seed})"
    return _finding(claim, model, where, "0 errors", HOLDS if errors == 0 else DOES_NOT_HOLD, why, errors, reads,
                    trials)


def rare_errors(rates: pd.DataFrame, model: str, stream: str, trained_on: str, length: int) -> Finding:
    """"`model` makes rare errors on `stream`" (module rules), comparable once it has learned `trained_on`."""
    errors, reads, trials, per_seed = pooled(rates, model, stream)
    where = _stream(stream, length)
    claim = f"the {model} makes rare errors (glitches) on {where}"
    paper = "> 0, rare"
    if not reads:
        return _finding(claim, model, where, paper, NOT_COMPARABLE, f"no finished {model} trial read {where}",
                        0, 0, 0)
    train_errors, train_reads, _, _ = pooled(rates, model, trained_on)
    train_rate = train_errors / train_reads if train_reads else float("nan")
    if not train_rate <= LEARNED:
        why = (f"it has not learned its training stream: {train_rate:.3g} errors per read on {trained_on} "
               f"> {LEARNED}; its {errors} errors in {reads:,} {stream} reads are not glitches")
        return _finding(claim, model, where, paper, NOT_COMPARABLE, why, errors, reads, trials)
    rate = errors / reads
    ok = 0 < rate <= RARE
    rule = ("no error at all" if errors == 0 else f"rate {rate:.3g} {'<=' if ok else '>'} {RARE}")
    why = f"{errors} errors in {reads:,} reads: {rule} ({per_seed}); {trained_on} rate {train_rate:.3g}"
    return _finding(claim, model, where, paper, HOLDS if ok else DOES_NOT_HOLD, why, errors, reads, trials)


def judge(runs: pd.DataFrame) -> list[Finding]:
    """At each trained length: the LSTM's no-error claims (sparse, dense, its training stream) and the
    Transformer's glitches."""
    rates = error_rate_table(runs)
    findings = []
    for length, mine in rates.groupby("train_len", sort=True):
        length, trained_on = int(length), f"L{int(length)}"
        findings += [no_errors(mine, "lstm", "sparse", length), no_errors(mine, "lstm", "dense", length),
                     no_errors(mine, "lstm", trained_on, length),
                     rare_errors(mine, "transformer", "sparse", trained_on, length)]
    return findings
