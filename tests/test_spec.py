"""Sweep specs: presets load, settings merge in the documented order, and every kind of bad input is a one-line
error (exit 2 from the CLI) that leaves no results directory behind."""

from __future__ import annotations

import dataclasses
import re

import pytest

from membench.memtasks import list_tasks
from membench.models import list_models
from membench.runners.cli import main
from membench.runners.spec import PRESETS, SETTINGS, load_spec
from membench.runners.trial import EvalSlice, TrialConfig

CHEAP = {"models": ["mlp"]}  # parameter matching of one family keeps loading fast


def write(tmp_path, text: str, name: str = "spec.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load(preset):
    spec = load_spec(preset, None, CHEAP)
    assert spec.trials and spec.name == preset
    assert {t.task for t in spec.trials} == set(list_tasks())


def test_smoke_preset_covers_every_task_and_family_at_two_lengths():
    spec = load_spec("smoke", None, {})
    assert {t.model for t in spec.trials} == set(list_models())
    assert {t.task for t in spec.trials} == set(list_tasks())
    for task in list_tasks():
        assert len({t.train_len for t in spec.trials if t.task == task}) >= 2
    assert len(spec.trials) >= 88 or len(list_models()) * len(list_tasks()) * 2 == len(spec.trials)


def test_all_with_tables_runs_every_family_and_overrides_some(tmp_path):
    spec = load_spec(None, write(tmp_path, """
        lengths = [16]
        d_model = 24
        steps = 10
        tasks = ["copy"]
        [models]
        all = true
        [models.lstm]
        steps = 30
        """), {})
    steps = {t.model: t.steps for t in spec.trials}
    assert set(steps) == set(list_models())
    assert steps["lstm"] == 30 and steps["mlp"] == 10
    with pytest.raises(ValueError, match="all must be true or false"):
        load_spec(None, write(tmp_path, 'tasks = ["copy"]\n[models]\nall = "yes"\n', "bad.toml"), {})


def test_execution_options(tmp_path):
    text = 'cpu_threads = 1\ncompile = "torch_compile"\nd_model = 8\nmodels = ["mlp"]\n'
    spec = load_spec(None, write(tmp_path, text), {"device": "cpu", "executor": "ray"})
    assert (spec.cpu_threads, spec.compile, spec.device, spec.executor) == (1, "torch_compile", "cpu", "ray")
    assert load_spec("standard", None, CHEAP).cpu_threads is None


def test_full_preset_caps_quadratic_families():
    spec = load_spec("full", None, {"models": ["mlp", "transformer"], "tasks": ["copy"]})
    longest = {m: max(t.train_len for t in spec.trials if t.model == m) for m in ("mlp", "transformer")}
    assert longest["mlp"] >= 16384 and longest["transformer"] <= 4096
    assert len({t.seed for t in spec.trials}) == 3 and len({t.lr for t in spec.trials}) >= 2


def test_settings_precedence_and_sizes(tmp_path):
    spec = load_spec(None, write(tmp_path, """
        steps = 10
        lengths = [16]
        d_model = 24
        tasks = ["copy"]
        [models.mlp]
        steps = 30
        target_params = 20000
        [models.lstm]
        [cost_classes."O(n)"]
        steps = 20
        batch_size = 4
    """), {})
    by_model = {t.model: t for t in spec.trials}
    assert by_model["lstm"].steps == 20 and by_model["lstm"].batch_size == 4 and by_model["lstm"].d_model == 24
    assert by_model["mlp"].steps == 30  # model table beats cost class beats top level
    assert by_model["mlp"].d_model != 24  # the model's target_params replaces the top-level fixed width
    assert abs(by_model["mlp"].build_model().num_params() - 20000) <= 2000


def test_cli_overrides_replace_lengths_seeds_and_select(tmp_path):
    spec = load_spec(None, write(tmp_path, 'lengths = [16, 32]\nd_model = 16\n[tasks.copy]\nlengths = [8]\n'),
                     {"models": ["mlp", "gru"], "lengths": [12, 24], "seeds": [0, 5], "tasks": ["copy"]})
    assert {t.train_len for t in spec.trials} == {12, 24}
    assert {t.seed for t in spec.trials} == {0, 5}
    assert {t.model for t in spec.trials} == {"mlp", "gru"}
    assert len(spec.trials) == 2 * 2 * 2


def test_default_eval_slices_and_skipped_lengths(tmp_path):
    spec = load_spec(None, write(tmp_path, """
        lengths = [4, 32]
        eval_multipliers = [2, 4]
        eval_sequences = 7
        d_model = 16
        models = ["mlp"]
        [tasks.delayed_match]
    """), {})
    (trial,) = spec.trials  # length 4 is too short for delayed_match: skipped with a note
    assert trial.train_len == 32
    assert [(s.name, s.seq_len, s.n_sequences) for s in trial.eval_slices] == [
        ("L32", 32, 7), ("L64", 64, 7), ("L128", 128, 7)]
    assert any("length 4 skipped" in n for n in spec.notes)


def test_every_length_impossible_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="every training length was skipped"):
        load_spec(None, write(tmp_path, 'lengths = [4]\nmodels = ["mlp"]\n[tasks.delayed_match]\n'), {})


def test_mixture_and_named_slices(tmp_path):
    spec = load_spec(None, write(tmp_path, """
        models = ["mlp"]
        d_model = 16
        [tasks.ar]
        task = "associative_recall"
        params = { vocab_size = 32 }
        train_mixture = [{ seq_len = 16, params = { num_kv_pairs = 2 }, weight = 3 },
                         { seq_len = 32, params = { num_kv_pairs = 4 } }]
        eval_slices = [{ seq_len = 64, params = { num_kv_pairs = 8 }, n_sequences = 10 },
                       { name = "short", seq_len = 32 }]
    """), {})
    (trial,) = spec.trials
    assert trial.task == "associative_recall" and trial.train_len == 32
    assert [(s.seq_len, s.weight) for s in trial.segments] == [(16, 3.0), (32, 1.0)]
    assert [(s.name, s.seq_len, s.n_sequences) for s in trial.eval_slices] == [
        ("L64-num_kv_pairs8", 64, 10), ("short", 32, 256)]


def test_trial_id_is_stable_and_sensitive():
    def config(**change):
        fields = dict(task="copy", task_params={}, model="mlp", model_params={}, d_model=16, n_layers=1,
                      train_len=16, seed=0, lr=1e-3, batch_size=8, steps=10,
                      eval_slices=(EvalSlice("L16", 16, 8),))
        return TrialConfig(**{**fields, **change})

    assert config().trial_id == config().trial_id
    assert config(lr=2e-3).trial_id != config().trial_id
    assert config(task_params={"content_vocab": 4}).trial_id != config().trial_id
    assert config(task_version=99).trial_id != config().trial_id
    again = TrialConfig.from_dict(config().to_dict())
    assert again == config() and again.trial_id == config().trial_id


@pytest.mark.parametrize("text, message", [
    ("stpes = 10", "unknown key 'stpes'; did you mean 'steps'"),
    ('[tasks.copy]\nlenghts = [16]', "unknown key 'lenghts'; did you mean 'lengths'"),
    ('[models.mlp]\nparams = { mlp_ration = 2 }', "unknown param 'mlp_ration'; did you mean 'mlp_ratio'"),
    ('[tasks.copy]\nparams = { content_vocb = 2 }', "did you mean 'content_vocab'"),
    ('[[tasks.copy.train_mixture]]\nseq_len = 8\nweigth = 2', "did you mean 'weight'"),
    ('[tasks.cpy]', "unknown task 'cpy'; did you mean 'copy'"),
    ('models = ["lstn"]', "unknown model 'lstn'; did you mean 'lstm'"),
    ("lengths = [0, 16]", "lengths[0] must be an integer >= 1, got 0"),
    ("lengths = 16", "lengths must be a non-empty list"),
    ("threshold = 1.5", "threshold must be a number in (0, 1]"),
    ('device = "gpu"', "device must be auto, cpu, cuda or cuda:N"),
    ('executor = "dask"', "executor must be one of local, ray"),
    ("steps = ", "is not valid TOML"),
    ("d_model = 16\ntarget_params = 1000", "not several"),
])
def test_bad_specs_name_the_problem(tmp_path, text, message):
    with pytest.raises(ValueError) as err:
        load_spec(None, write(tmp_path, text), {})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_preset_and_source_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'smok'; did you mean 'smoke'"):
        load_spec("smok", None, {})
    with pytest.raises(ValueError, match="exactly one"):
        load_spec(None, None, {})
    with pytest.raises(ValueError, match="cannot read spec file"):
        load_spec(None, str(tmp_path / "missing.toml"), {})


@pytest.mark.parametrize("argv", [
    ["--preset", "smok"],
    ["--preset", "smoke", "--tasks", "cpy"],
    ["--preset", "smoke", "--models", "lstn"],
    ["--preset", "smoke", "--lengths", "0,16"],
    ["--preset", "smoke", "--lengths", "-5"],
    ["--preset", "smoke", "--seeds", "x"],
    ["--preset", "smoke", "--executor", "dask"],
    ["--preset", "smoke", "--device", "tpu"],
    ["--spec", "SPEC"],
] + ([["--preset", "smoke", "--device", "cuda"]] if not __import__("torch").cuda.is_available() else []))
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, argv):
    spec = write(tmp_path, "[tasks.copy]\nstesp = 3\n")
    out = tmp_path / "out"
    code = main(["run", *[spec if a == "SPEC" else a for a in argv], "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("membench: error: ") and err.count("\n") == 1
    assert not out.exists()


def test_trial_settings_take_the_trial_configs_own_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(TrialConfig) if f.default is not dataclasses.MISSING}
    shared = set(SETTINGS) & set(fields)
    assert {"time_cap", "threshold", "early_stop", "warmup"} <= shared
    assert all(SETTINGS[key][1] == fields[key] for key in shared)


def test_width_sweeps_and_param_grids_become_one_trial_config_each(tmp_path):
    """d_models and a list of target_params sweep widths; a list-valued family param sweeps its grid."""
    spec = load_spec(None, write(tmp_path, '''
tasks = ["copy"]
lengths = [16]
[models.lstm]
d_models = [16, 32, 48]
[models.sliding_window]
d_model = 16
params = { window = [4, 8], n_heads = [2, 4] }
[models.gru]
target_params = [3000, 12000]
'''), {})
    by_model = {}
    for t in spec.trials:
        by_model.setdefault(t.model, []).append(t)
    assert [t.d_model for t in by_model["lstm"]] == [16, 32, 48]
    assert [(t.model_params["window"], t.model_params["n_heads"]) for t in by_model["sliding_window"]] == [
        (4, 2), (4, 4), (8, 2), (8, 4)]
    gru = [t.d_model for t in by_model["gru"]]
    assert len(gru) == 2 and gru[0] < gru[1]
    assert len({t.trial_id for t in spec.trials}) == len(spec.trials) == 9


@pytest.mark.parametrize("text,message", [
    ('[models.lstm]\nd_models = []', "d_models must be a non-empty list"),
    ('[models.sliding_window]\nparams = { window = [] }', "an empty list sweeps nothing"),
    ('[models.lstm]\nd_models = [16]\nd_model = 8', "not several"),
    ('target_params = [1000, "x"]', "target_params[1] must be an integer"),
])
def test_bad_sweeps_are_one_line_errors(tmp_path, text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_spec(None, write(tmp_path, 'tasks = ["copy"]\nlengths = [16]\n' + text), {})
