"""Exponent fitting (runners/cost/fit.py): exact power laws recovered, noise tolerated, too few points -> NaN."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from membench.runners.cost.fit import FIT_COLUMNS, fit_costs, fit_exponent, upper_points

LENGTHS = [128, 256, 512, 1024, 2048, 4096]


@pytest.mark.parametrize("exponent", [0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 7e9])
def test_exact_power_laws_are_recovered(exponent, scale):
    values = [scale * n**exponent for n in LENGTHS]
    assert fit_exponent(LENGTHS, values) == pytest.approx(exponent, abs=1e-6)


def test_the_upper_half_of_the_points_is_used():
    # flat up to 512, then quadratic: the top three points (512, 1024, 2048 of five) see only the quadratic
    lengths = [128, 256, 512, 1024, 2048]
    values = [5.0, 5.0, 5.0, 20.0, 80.0]
    x, _ = upper_points(lengths, values)
    assert list(x) == [512, 1024, 2048]
    assert fit_exponent(lengths, values) == pytest.approx(2.0)
    whole_range = np.polyfit(np.log(lengths), np.log(values), 1)[0]
    assert whole_range < 1.5  # what a fit over every point would have said
    assert fit_exponent(lengths, [9.0, 1.0, 1.0, 4.0, 16.0]) == pytest.approx(2.0)
    # order of the rows does not matter
    assert fit_exponent(lengths[::-1], [16.0, 4.0, 1.0, 1.0, 9.0]) == pytest.approx(2.0)


def test_at_least_two_points_are_used():
    assert list(upper_points([128, 256, 512], [1, 2, 4])[0]) == [256, 512]
    assert list(upper_points([128, 256], [1, 2])[0]) == [128, 256]
    assert fit_exponent([128, 256], [3.0, 6.0]) == pytest.approx(1.0)


@pytest.mark.parametrize("exponent", [1.0, 2.0])
def test_noise_is_tolerated(exponent):
    rng = np.random.default_rng(0)
    for _ in range(20):
        noise = np.exp(rng.normal(0.0, 0.05, len(LENGTHS)))  # about +-5% per point
        values = [n**exponent * e for n, e in zip(LENGTHS, noise)]
        assert abs(fit_exponent(LENGTHS, values) - exponent) < 0.2


@pytest.mark.parametrize(
    "lengths,values",
    [
        ([], []),
        ([512], [3.0]),
        ([256, 512], [3.0, math.nan]),  # NaN measurements are dropped
        ([256, 512], [0.0, 4.0]),  # so are non-positive ones (no logarithm)
        ([256, 512, 1024], [-1.0, math.inf, 2.0]),
        ([512, 512, 512], [1.0, 2.0, 3.0]),  # a single distinct length has no slope
    ],
)
def test_too_few_points_give_nan(lengths, values):
    assert math.isnan(fit_exponent(lengths, values))


def _cost_rows(model, lengths, ms, memory, flops, batch_tokens=4096, status=None):
    rows = []
    for i, n in enumerate(lengths):
        rows.append({
            "model": model, "seq_len": n, "batch_size": max(1, batch_tokens // n), "ms_per_step": ms(n),
            "peak_memory_mb": memory(n), "flops": flops(n), "status": (status or {}).get(n, "ok"),
        })
    return rows


def test_fit_costs_reports_per_sequence_exponents():
    lengths = [128, 256, 512, 1024]
    rows = (
        # O(n) per sequence: flat per step when tokens per step are constant
        _cost_rows("linear", lengths, ms=lambda n: 10.0, memory=lambda n: 40.0, flops=lambda n: 4096 * 1e6)
        # O(n^2) per sequence: linear per step
        + _cost_rows("quadratic", lengths, ms=lambda n: 0.01 * n, memory=lambda n: 0.1 * n, flops=lambda n: 4096.0 * n)
    )
    fits = fit_costs(pd.DataFrame(rows)).set_index("model")
    assert list(fits.reset_index().columns) == FIT_COLUMNS
    for column in ("time_exponent", "memory_exponent", "flops_exponent"):
        assert fits.loc["linear", column] == pytest.approx(1.0)
        assert fits.loc["quadratic", column] == pytest.approx(2.0)
    assert fits.loc["linear", "n_points"] == 2
    assert (fits.loc["linear", "min_len"], fits.loc["linear", "max_len"]) == (512, 1024)


def test_fit_costs_uses_only_ok_rows():
    lengths = [128, 256, 512, 1024]
    rows = _cost_rows("attn", lengths, ms=lambda n: 0.01 * n, memory=lambda n: math.nan, flops=lambda n: 1.0 * n,
                      status={1024: "oom"})
    rows[-1]["ms_per_step"] = 1e9  # a failed row's value must not enter the fit
    fits = fit_costs(pd.DataFrame(rows)).set_index("model")
    assert fits.loc["attn", "time_exponent"] == pytest.approx(2.0)
    assert math.isnan(fits.loc["attn", "memory_exponent"])
    assert (fits.loc["attn", "n_points"], fits.loc["attn", "max_len"]) == (2, 512)
    only_failed = fit_costs(pd.DataFrame(rows[-1:])).iloc[0]
    assert math.isnan(only_failed["time_exponent"]) and only_failed["n_points"] == 0
