"""Models and tasks from outside membench: import paths, plugin folders, entry points (membench/plugins.py)."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from membench import plugins
from membench.memtasks import TASKS, get_task, list_tasks, task_class
from membench.models import MODELS, build_model, family_params, list_models, model_class, params_matched
from membench.runners.spec import load_spec
from tests.helpers import run_cli, undo_plugin_side_effects  # noqa: F401 (autouse)

ROOT = Path(__file__).resolve().parent.parent

_ids = itertools.count()

MIXER = '''
import torch
from torch import nn


class ShiftMixer(nn.Module):
    """y_t = W x_{t-1} + V x_t: sees the previous token."""

    def __init__(self, d_model, layer_idx=0, gain=1.0):
        super().__init__()
        self.prev, self.now = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.gain, self.layer_idx = gain, layer_idx

    def forward(self, x):  # (B, T, D) -> (B, T, D)
        shifted = nn.functional.pad(x, (0, 0, 1, 0))[:, :-1]
        return self.gain * (self.prev(shifted) + self.now(x))


class Stateful(ShiftMixer):
    def state_size(self, seq_len):
        return self.prev.in_features

    def flops(self, batch_size, seq_len):
        return 2 * 2 * batch_size * seq_len * self.prev.in_features ** 2


def helper():
    pass
'''

TASK = '''
from dataclasses import dataclass

import torch

from membench.memtasks import IGNORE, Batch, Task


@dataclass
class EchoPrevious(Task):
    """Predict the previous token: | a b c | -> | . a b |."""

    description = "predict the previous token"
    vocab: int = 6

    def min_length(self):
        return 2

    @property
    def vocab_size(self):
        return self.vocab

    def _generate(self, batch_size, seq_len, gen, device):
        inputs = torch.randint(0, self.vocab, (batch_size, seq_len), generator=gen, device=device)
        targets = torch.full_like(inputs, IGNORE)
        targets[:, 1:] = inputs[:, :-1]
        lags = torch.full_like(inputs, -1)
        lags[:, 1:] = 1
        return Batch(inputs, targets, lags)

    def solve(self, inputs):
        out = torch.zeros_like(inputs)
        out[:, 1:] = inputs[:, :-1]
        return out
'''


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A user's folder (the current directory) holding a mixer module and a task module with fresh names, and
    a models/ package of its own."""
    n = next(_ids)
    (tmp_path / f"user_mixers_{n}.py").write_text(MIXER)
    (tmp_path / f"user_tasks_{n}.py").write_text(TASK)
    (tmp_path / "models").mkdir()  # a user's own models/ package must not get in the way
    (tmp_path / "models" / "__init__.py").write_text("WHOSE = 'the user'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    return tmp_path, f"user_mixers_{n}", f"user_tasks_{n}"


def test_a_mixer_path_builds_a_family_that_matches_parameters(user_dir):
    _, mixers, _ = user_dir
    path = f"{mixers}:ShiftMixer"
    model = build_model(path, vocab_size=16, d_model=32, n_layers=3, gain=0.5, mlp_ratio=2)
    assert model.name == path and model_class(path) is model_class(path)
    assert [b.mixer.inner.layer_idx for b in model.blocks] == [0, 1, 2]  # layer_idx passed when taken
    assert model.blocks[0].mixer.inner.gain == 0.5 and model.blocks[0].mlp.up.out_features == 64
    assert model(torch.zeros(2, 7, dtype=torch.long)).shape == (2, 7, 16)
    assert set(family_params(path)) == {"mlp_ratio", "gain"}
    matched = params_matched(path, 20_000, vocab_size=16, n_layers=2)
    assert abs(matched.num_params() - 20_000) <= 2_000
    with pytest.raises(ValueError, match="unknown param 'gian'"):
        build_model(path, vocab_size=16, gian=2.0)


def test_state_size_is_unknown_and_flops_are_counted_when_not_declared(user_dir):
    _, mixers, _ = user_dir
    model = build_model(f"{mixers}:ShiftMixer", vocab_size=16, d_model=32)
    assert model.state_size(64) is None
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(3, 20, dtype=torch.long))
    assert model.flops(3, 20) == counter.get_total_flops() > 0
    declared = build_model(f"{mixers}:Stateful", vocab_size=16, d_model=32)
    assert declared.state_size(64) == 2 * 32
    assert declared.flops(3, 20) == pytest.approx(counter.get_total_flops(), rel=1e-6)  # same maths, declared


def test_a_memory_model_subclass_and_a_task_subclass_by_path(user_dir):
    _, _, tasks = user_dir
    model = build_model("membench.models.families.recurrent:LSTMModel", vocab_size=8, d_model=16)
    assert model.name == "membench.models.families.recurrent:LSTMModel" and model_class("lstm").name == "lstm"
    task = get_task(f"{tasks}:EchoPrevious", vocab=5)
    batch = task.sample(4, 9, seed=0)
    assert task.vocab_size == 5 and torch.equal(task.solve(batch.inputs)[batch.scored], batch.targets[batch.scored])
    assert task_class(f"{tasks}:EchoPrevious").name == f"{tasks}:EchoPrevious"
    assert f"{tasks}:EchoPrevious" not in list_tasks()  # an import path is not registered: "all" stays as it was


@pytest.mark.parametrize("path,message", [
    ("no_such_module_xyz:Mixer", "module no_such_module_xyz not found"),
    ("{mixers}:ShiftMixr", "has no attribute 'ShiftMixr' (closest: ShiftMixer"),
    ("{mixers}:helper", "names a function, not a model or mixer"),
    ("{mixers}:torch", "names a module, not a model or mixer"),
    ("torch.nn:Linear", "Linear (a subclass of Module) whose constructor takes no d_model, not a mixer"),
    ("{tasks}:IGNORE", "names an int, not a model or mixer"),
    ("{mixers}:", "an import path is MODULE:NAME"),
])
def test_bad_model_paths_get_one_line(user_dir, path, message):
    _, mixers, tasks = user_dir
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model_class(path.format(mixers=mixers, tasks=tasks))


def test_bad_task_path_and_the_cli_exits_2_writing_nothing(user_dir, capsys):
    tmp, mixers, tasks = user_dir
    with pytest.raises(ValueError, match=r"names the class ShiftMixer \(a subclass of Module\), not a task"):
        task_class(f"{mixers}:ShiftMixer")
    code, _, err = run_cli(capsys, "compare", "lstm", f"{mixers}:Nope", "--task", "copy", "--out", str(tmp / "out"))
    assert code == 2 and err.count("\n") == 1 and "has no attribute 'Nope'" in err
    code, _, err = run_cli(capsys, "run", "--preset", "smoke", "--tasks", "nowhere.at_all:T", "--out", str(tmp / "o2"))
    assert code == 2 and "module nowhere.at_all not found" in err
    assert not (tmp / "out").exists() and not (tmp / "o2").exists()


def test_a_spec_names_models_and_tasks_by_path_with_params(user_dir):
    tmp, mixers, tasks = user_dir
    (tmp / "sweep.toml").write_text(textwrap.dedent(f"""
        lengths = [8]
        steps = 2
        d_model = 16
        [tasks.echo]
        task = "{tasks}:EchoPrevious"
        params = {{ vocab = 4 }}
        [models.mine]
        model = "{mixers}:ShiftMixer"
        params = {{ gain = 0.25 }}
    """))
    spec = load_spec(spec_file=str(tmp / "sweep.toml"))
    (trial,) = spec.trials
    assert (trial.task, trial.model, trial.model_params) == (f"{tasks}:EchoPrevious", f"{mixers}:ShiftMixer",
                                                             {"gain": 0.25})
    (tmp / "bad.toml").write_text(f'[models.mine]\nmodel = "{mixers}:ShiftMixer"\nparams = {{ gane = 1 }}\n')
    with pytest.raises(ValueError, match="unknown param 'gane'; did you mean 'gain'"):
        load_spec(spec_file=str(tmp / "bad.toml"))


@pytest.mark.slow
def test_a_tiny_run_by_import_path_leaves_state_size_empty(user_dir, capsys):
    tmp, mixers, tasks = user_dir
    code, out, err = run_cli(capsys, "run", "--preset", "smoke", "--tasks", f"{tasks}:EchoPrevious",
                             "--models", f"mlp,{mixers}:ShiftMixer,{mixers}:Stateful", "--lengths", "8",
                             "--out", str(tmp / "out"), "--quiet")
    assert code == 0, err
    raw = (tmp / "out" / "runs.csv").read_text().splitlines()
    runs = pd.read_csv(tmp / "out" / "runs.csv")
    unknown = runs[runs["model"] == f"{mixers}:ShiftMixer"]
    assert unknown["state_size"].isna().all() and (unknown["flops_per_step"] > 0).all()
    assert (runs.loc[runs["model"] == "mlp", "state_size"] == 0).all()
    stateful = runs[runs["model"] == f"{mixers}:Stateful"]
    assert (stateful["state_size"] == 2 * stateful["d_model"]).all()  # its state_size(seq_len), per layer
    header = raw[0].split(",")
    row = next(r for r in raw[1:] if f"{mixers}:ShiftMixer" in r)
    assert ",," in row and header.index("state_size") > 0  # an empty cell, not 0
    code, _, err = run_cli(capsys, "charts", str(tmp / "out"))
    assert code == 0, err
    svg = (tmp / "out" / "charts" / "accuracy_vs_cost.svg").read_text()
    assert "state size unknown" in svg


def test_models_command_says_unknown_for_an_undeclared_state(user_dir, capsys, tmp_path):
    tmp, mixers, _ = user_dir
    folder = tmp / "plugs"
    folder.mkdir()
    n = next(_ids)
    (folder / f"reg_{n}.py").write_text(textwrap.dedent(f"""
        from membench.models import register_model
        from membench.models.imported import mixer_model_class
        from {mixers} import ShiftMixer
        register_model("shift_plugin_{n}")(mixer_model_class("shift_plugin_{n}", ShiftMixer))
    """))
    try:
        code, out, err = run_cli(capsys, "models", "--include", str(folder))
        assert code == 0, err
        line = next(x for x in out.splitlines() if x.startswith(f"shift_plugin_{n} "))
        assert "unknown" in line and f"include {folder / f'reg_{n}.py'}" in line
        assert next(x for x in out.splitlines() if x.startswith("lstm ")).split()[4] == "membench"
    finally:
        MODELS.unregister(f"shift_plugin_{n}")


def test_include_registers_decorated_plugins_and_warns_about_broken_ones(tmp_path, capsys, monkeypatch):
    n = next(_ids)
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / f"echo_{n}.py").write_text(TASK + f'\nfrom membench.memtasks import register_task\n'
                                                  f'register_task("echo_{n}")(EchoPrevious)\n')
    (folder / f"broken_{n}.py").write_text("import torch\nraise RuntimeError('boom')\n")
    monkeypatch.delenv(plugins.INCLUDE_ENV, raising=False)
    try:
        assert plugins.include(folder) == [f"echo_{n}.py"]
        assert plugins.include(folder) == []  # once per process
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"broken_{n}.py failed to import: RuntimeError: boom" in err
        assert f"echo_{n}" in list_tasks() and TASKS.source(f"echo_{n}") == f"include {folder / f'echo_{n}.py'}"
        assert str(folder.resolve()) in plugins.os.environ[plugins.INCLUDE_ENV]  # spawned workers re-include it
        code, out, _ = run_cli(capsys, "tasks")
        assert code == 0 and f"echo_{n}" in out
    finally:
        TASKS.unregister(f"echo_{n}")
    with pytest.raises(ValueError, match="not a directory"):
        plugins.include(tmp_path / "missing")


def test_spec_include_is_relative_to_the_spec_file(tmp_path, capsys):
    """...and a mixer class decorated with @register_model is registered wrapped, as an import path is."""
    n = next(_ids)
    (tmp_path / "plugs").mkdir()
    (tmp_path / "plugs" / f"shift_{n}.py").write_text(
        MIXER.replace("class ShiftMixer(", f'@register_model("shift_{n}")\nclass ShiftMixer(')
        .replace("from torch import nn\n", "from torch import nn\n\nfrom membench.models import register_model\n"))
    (tmp_path / "sweep.toml").write_text(f'include = ["plugs"]\nmodels = ["shift_{n}"]\ntasks = ["copy"]\n'
                                         f'lengths = [16]\nsteps = 2\nd_model = 16\n')
    try:
        spec = load_spec(spec_file=str(tmp_path / "sweep.toml"))
        assert {t.model for t in spec.trials} == {f"shift_{n}"}
        model = build_model(f"shift_{n}", vocab_size=8, d_model=16, gain=2.0)
        assert model.name == f"shift_{n}" and model.blocks[0].mixer.inner.gain == 2.0
        assert type(model.blocks[0].mixer.inner).__name__ == "ShiftMixer"  # the decorator returned the mixer
    finally:
        MODELS.unregister(f"shift_{n}")


def _dist(tmp_path: Path, n: int, broken: bool = False) -> Path:
    """A throw-away installed distribution: a package and a dist-info whose entry_points.txt importlib.metadata
    reads (what `pip install -e` would leave behind)."""
    site = tmp_path / "site"
    pkg = site / f"mbplug_{n}"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "mixers.py").write_text(MIXER)
    (pkg / "tasks.py").write_text(TASK)
    info = site / f"mbplug_{n}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: mbplug-{n}\nVersion: 0.1\n")
    lines = ["[membench.models]", f"ep_shift_{n} = mbplug_{n}.mixers:ShiftMixer", "[membench.tasks]",
             f"ep_echo_{n} = mbplug_{n}.tasks:EchoPrevious"]
    if broken:
        lines[1:1] = [f"ep_broken_{n} = mbplug_{n}.missing:Thing"]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return site


def test_entry_points_register_models_and_tasks_with_their_source(tmp_path, monkeypatch, capsys):
    n = next(_ids)
    monkeypatch.syspath_prepend(str(_dist(tmp_path, n, broken=True)))
    try:
        plugins.load_entry_points(MODELS)
        plugins.load_entry_points(TASKS)
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f"plugin ep_broken_{n} (mbplug_{n}.missing:Thing, from mbplug-{n}) failed" in err
        assert f"ep_shift_{n}" in list_models() and MODELS.source(f"ep_shift_{n}") == f"entry point mbplug-{n}"
        assert build_model(f"ep_shift_{n}", vocab_size=8, d_model=16).name == f"ep_shift_{n}"
        assert TASKS.source(f"ep_echo_{n}") == f"entry point mbplug-{n}"
        assert get_task(f"ep_echo_{n}").sample(2, 5, seed=0).inputs.shape == (2, 5)
    finally:
        MODELS.unregister(f"ep_shift_{n}")
        TASKS.unregister(f"ep_echo_{n}")


@pytest.mark.slow
def test_entry_points_load_on_first_use_and_join_models_all(tmp_path):
    """In a fresh process: `membench models`/`tasks` list the plugin and a sweep with models = "all" has it."""
    n = next(_ids)
    site = _dist(tmp_path, n)
    env = {**__import__("os").environ, "PYTHONPATH": f"{ROOT}{__import__('os').pathsep}{site}"}
    spec = tmp_path / "all.toml"
    spec.write_text('tasks = ["copy"]\nlengths = [16]\nsteps = 2\nd_model = 16\n')
    code = ("from membench.runners.spec import load_spec; import sys; "
            "print(sorted({t.model for t in load_spec(spec_file=sys.argv[1]).trials}))")
    out = subprocess.run([sys.executable, "-c", code, str(spec)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"ep_shift_{n}" in out.stdout and "'lstm'" in out.stdout
    listing = subprocess.run([sys.executable, "-m", "membench.runners", "tasks"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    assert f"ep_echo_{n}" in listing.stdout and f"entry point mbplug-{n}" in listing.stdout
    listing = subprocess.run([sys.executable, "-m", "membench.runners", "models", "--d-model", "16"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=120)
    line = next(x for x in listing.stdout.splitlines() if x.startswith(f"ep_shift_{n} "))
    assert f"entry point mbplug-{n}" in line and "unknown" in line  # ShiftMixer declares no state size


def test_state_size_nan_is_not_zero():
    from membench.runners.faults import cost_value

    warnings = []
    assert math.isnan(cost_value("state_size(8)", lambda n: None, (8,), warnings, unknown_ok=True))
    assert cost_value("state_size(8)", lambda n: 0, (8,), warnings) == 0 and warnings == []


def test_a_spec_include_that_is_not_a_folder_names_the_spec(tmp_path):
    (tmp_path / "sweep.toml").write_text('include = ["nowhere"]\n')
    with pytest.raises(ValueError, match=r"spec sweep.toml: include .*nowhere: not a directory"):
        load_spec(spec_file=str(tmp_path / "sweep.toml"))
