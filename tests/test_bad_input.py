"""Bad input found by the adversarial pass of the "Guard rails" issue: each is one line (exit 2), never a
traceback, while a bug of membench itself keeps its traceback."""

from __future__ import annotations

import pytest

from membench import plugins
from membench.checks import ConfigError
from membench.runners.spec import load_spec
from tests.helpers import run_cli, undo_plugin_side_effects  # noqa: F401 (autouse)

BROKEN = '''
from torch import nn

from membench.memtasks.tasks.copy import Copy


class BrokenMixer(nn.Module):
    def __init__(self, d_model, layer_idx=0):
        super().__init__()
        raise RuntimeError("the mixer's own bug")

    def forward(self, x):
        return x


class BrokenSample(Copy):
    def sample(self, batch_size, seq_len, seed, device="cpu"):
        raise ValueError("the task's own bug")
'''


def one_line(code: int, err: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("membench: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    """broken_user.py in the current directory (importable as broken_user:NAME)."""
    (tmp_path / "broken_user.py").write_text(BROKEN)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- an import path that is relative or a file path ------------------------------------------------------
@pytest.mark.parametrize("path", [".mixers:Mine", "../mixers:Mine", "..pkg.mixers:Mine", "my/mixers:Mine"])
def test_relative_or_file_import_path_is_one_line(capsys, path):
    with pytest.raises(ConfigError, match="is a relative or file path, not a module name"):
        plugins.resolve("model", path)
    line = one_line(*run_cli(capsys, "plan", "--preset", "smoke", "--tasks", "copy", "--models", path)[::2])
    assert path in line and "--include" in line


# --- a user model that raises while the spec builds it ---------------------------------------------------
def test_user_mixer_raising_in_init_is_one_line_naming_it(user_code, capsys):
    line = one_line(*run_cli(capsys, "plan", "--preset", "smoke", "--tasks", "copy",
                             "--models", "broken_user:BrokenMixer")[::2])
    assert "model broken_user:BrokenMixer raised RuntimeError" in line and "the mixer's own bug" in line


def test_user_mixer_at_a_fixed_width_is_named_too(user_code, capsys):
    spec = user_code / "spec.toml"
    spec.write_text('models = ["broken_user:BrokenMixer"]\nd_model = 16\nlengths = [8]\n[tasks.copy]\n')
    line = one_line(*run_cli(capsys, "plan", "--spec", str(spec))[::2])
    assert "broken_user:BrokenMixer raised RuntimeError while being built" in line and "d_model 16" in line


def test_a_membench_model_raising_keeps_its_traceback(monkeypatch):
    from membench.models.base import MLP

    def bug(self, *args, **kwargs):
        raise RuntimeError("a bug in membench")

    monkeypatch.setattr(MLP, "__init__", bug)
    with pytest.raises(RuntimeError, match="a bug in membench"):
        load_spec("smoke", None, {"tasks": ["copy"], "models": ["mlp"]})


# --- an empty spec: every key has a default ----------------------------------------------------------------
def test_empty_spec_loads_and_skips_the_models_it_cannot_match_with_a_note(tmp_path):
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    spec = load_spec(None, str(empty), {"tasks": ["noisy_recall"]})  # vocabulary 80: attention misses 100k +-10%
    models = {t.model for t in spec.trials}
    assert {"mlp", "lstm"} <= models and "transformer" not in models
    assert any(n.startswith("noisy_recall: transformer skipped:") and "cannot be matched" in n for n in spec.notes)


def test_a_model_the_spec_names_still_fails_when_it_cannot_be_matched(tmp_path):
    named = tmp_path / "named.toml"
    named.write_text('models = ["transformer", "mlp"]\n')
    with pytest.raises(ConfigError, match="model transformer cannot be matched"):
        load_spec(None, str(named), {"tasks": ["noisy_recall"]})
    with pytest.raises(ConfigError, match="model transformer cannot be matched"):
        load_spec(None, str(tmp_path / "named.toml"), {"tasks": ["noisy_recall"], "models": ["transformer"]})


@pytest.mark.slow
def test_empty_spec_file_plans(tmp_path, capsys):
    (tmp_path / "empty.toml").write_text("")
    code, out, err = run_cli(capsys, "plan", "--spec", str(tmp_path / "empty.toml"))
    assert code == 0, err
    assert "note: noisy_recall: transformer skipped" in err


# --- plan counts what run runs -------------------------------------------------------------------------------
def test_plan_counts_a_trial_listed_twice_once(tmp_path, capsys):
    counts = []
    for seeds in ("[0]", "[0, 0, 1, 1]"):
        spec = tmp_path / "spec.toml"
        spec.write_text(f'models = ["mlp"]\nd_model = 16\nlengths = [8]\nseeds = {seeds}\n[tasks.copy]\n')
        code, out, err = run_cli(capsys, "plan", "--spec", str(spec))
        assert code == 0, err
        counts.append(out.splitlines()[0])
    assert counts == ["spec: 1 trials; hours summed over the trials (one after another on one device: the wall time)",
                      "spec: 2 trials; hours summed over the trials (one after another on one device: the wall time)"]


# --- show: a user task that raises -----------------------------------------------------------------------------
def test_show_of_a_user_task_whose_sample_raises_is_one_line(user_code, capsys):
    line = one_line(*run_cli(capsys, "show", "broken_user:BrokenSample", "--length", "16")[::2])
    assert "task broken_user:BrokenSample raised ValueError in sample() at length 16, seed 0" in line
    assert "the task's own bug" in line


def test_show_of_a_membench_task_that_raises_keeps_its_traceback(monkeypatch, capsys):
    from membench.memtasks.tasks.copy import Copy

    def bug(self, *args, **kwargs):
        raise RuntimeError("a bug in membench")

    monkeypatch.setattr(Copy, "sample", bug)
    with pytest.raises(RuntimeError, match="a bug in membench"):
        run_cli(capsys, "show", "copy")


# --- doctor --out --------------------------------------------------------------------------------------------------
def test_doctor_out_that_cannot_be_written_fails_before_any_check(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    code, out, err = run_cli(capsys, "doctor", "--device", "cpu", "--quick", "--out", str(tmp_path / "a_file" / "sub"))
    line = one_line(code, err)
    assert "cannot write in --out" in line and "Not a directory" in line
    assert out == ""  # no check ran


def test_doctor_out_unwritable_even_as_root(tmp_path, capsys, monkeypatch):
    import tempfile

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    code, out, err = run_cli(capsys, "doctor", "--device", "cpu", "--quick", "--out", str(tmp_path / "out"))
    assert "Permission denied" in one_line(code, err) and out == ""


# --- Ray's failed rows --------------------------------------------------------------------------------------------
def test_ray_error_rows_have_no_colour_codes_and_keep_the_traceback():
    ray = pytest.importorskip("ray")
    from membench.runners.executors import ray_failure
    from tests.test_executors import tiny

    try:
        raise ValueError("x" * 400)  # longer than an error cell
    except ValueError as err:
        import traceback

        raised = ray.exceptions.RayTaskError("run_trial", traceback.format_exc(), err, proctitle="ray::run_trial",
                                             pid=7, ip="10.0.0.1").as_instanceof_cause()
    assert "\x1b[" in str(raised)  # Ray colours its message
    payload = ray_failure(ray, raised, tiny(0), "cpu")
    row = payload["runs"][0]
    assert row["status"] == "error" and row["error"].startswith("ValueError: xxx") and "\x1b" not in row["error"]
    assert "\x1b" not in payload["traceback"] and "ray::run_trial() (pid=7, ip=10.0.0.1)" in payload["traceback"]
    assert payload["traceback"].rstrip().endswith("ValueError: " + "x" * 400)  # the whole of it, not cut

    died = ray.exceptions.WorkerCrashedError()
    payload = ray_failure(ray, died, tiny(1), "cpu")
    assert payload["runs"][0]["error"].startswith("WorkerCrashedError") and "traceback" not in payload


def test_ansi_escapes_cut_short_are_removed():
    from membench.runners.executors import ANSI_ESCAPE

    assert ANSI_ESCAPE.sub("", "\x1b[1m\x1b[31mred\x1b[0m and cut \x1b[3") == "red and cut "

