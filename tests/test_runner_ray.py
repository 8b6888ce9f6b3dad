"""The Ray executor gives the same rows as the local one (CPU-only Ray cluster); without Ray, a one-line error."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
import torch

from membench.runners.cli import main
from membench.runners.spec import load_spec
from membench.runners.sweep import run_sweep
from tests.helpers import tiny_spec


def ray_spec(tmp_path) -> str:
    return tiny_spec(tmp_path, {"copy": {"params": {"content_vocab": 4}}}, models=["mlp", "gru"])
METRICS = ["trial_id", "slice", "params", "steps", "accuracy", "exact_match", "loss", "flops_per_step",
           "state_size", "status"]


def test_ray_executor_matches_local(tmp_path):
    ray = pytest.importorskip("ray")
    spec = load_spec(None, ray_spec(tmp_path), {"device": "cpu"})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a Ray worker holding one CPU
    try:
        local = run_sweep(spec, tmp_path / "local", progress=False)
    finally:
        torch.set_num_threads(threads)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_sweep(spec, tmp_path / "ray", executor="ray", progress=False)
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(remote[METRICS], local[METRICS], rtol=1e-5)
    for name in ("lags", "curves"):
        a, b = (pd.read_csv(tmp_path / d / f"{name}.csv") for d in ("local", "ray"))
        assert a.shape == b.shape and a["trial_id"].tolist() == b["trial_id"].tolist()


@pytest.mark.slow
def test_save_model_under_ray_writes_each_trials_folder(tmp_path):
    ray = pytest.importorskip("ray")
    pytest.importorskip("transformers")
    spec = load_spec(None, tiny_spec(tmp_path, {"copy": {"params": {"content_vocab": 4}}}, models=["hf:gpt2"],
                                     d_model=16, n_layers=1, steps=4, eval_every=4, seeds=[0, 1],
                                     save_model=True), {"device": "cpu"})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        runs = run_sweep(spec, tmp_path / "out", executor="ray", progress=False)
    finally:
        ray.shutdown()
    assert set(runs["status"]) == {"ok"}
    for trial_id in runs["trial_id"].unique():
        assert (tmp_path / "out" / "models" / trial_id / "config.json").is_file()
        assert "warnings" not in json.loads((tmp_path / "out" / "trials" / f"{trial_id}.json").read_text())


def test_missing_ray_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    out = tmp_path / "out"
    code = main(["run", "--preset", "smoke", "--models", "mlp", "--executor", "ray", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "pip install membench[ray]" in err
    assert not out.exists()
