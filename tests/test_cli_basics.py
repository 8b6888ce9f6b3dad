"""The `membench` entry point: listings, rendering, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from membench.memtasks import list_tasks
from membench.models import list_models
from membench.registry import Registry, UnknownNameError
from tests.helpers import run_cli


def test_tasks_lists_every_task_with_version_and_params(capsys):
    code, out, _ = run_cli(capsys, "tasks")
    assert code == 0
    for name in list_tasks():
        assert name in out
    assert "version" in out


def test_models_lists_every_family(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    for name in list_models():
        assert name in out


def test_show_renders_a_readable_dialogue(capsys):
    code, out, _ = run_cli(capsys, "show", "multi_turn_qa", "--length", "128")
    assert code == 0
    assert len(out.strip().splitlines()) > 3  # one turn per line


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["show", "cpy"], "did you mean 'copy'"),
        (["show", "copy", "--length", "ten"], "--length must be a positive integer"),
        (["show", "copy", "--length", "1"], "seq_len"),
        (["show", "copy", "--param", "bogus=1"], "unknown param 'bogus'"),
        (["show", "copy", "--param", "noequals"], "KEY=VALUE"),
        (["models", "--d-model", "0"], "--d-model"),
        (["no-such-command"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, fragment):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_console_entry_point_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "membench.runners", "show", "nope"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("membench: error:")


def test_registry_rejects_duplicates_and_suggests_names():
    registry = Registry("widget")

    @registry.register("alpha")
    class Alpha:
        pass

    with pytest.raises(ValueError, match="registered twice"):
        registry.register("alpha")(type("Other", (), {}))
    with pytest.raises(UnknownNameError, match="did you mean 'alpha'"):
        registry.get("alpah")
    assert registry.names() == ["alpha"] and Alpha.name == "alpha"


def test_membench_lives_beside_a_users_own_top_level_models_package(tmp_path):
    """membench installs under one name, so a user's own `models` package is theirs alone."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("OURS = True\n")
    code = ("import models, membench; from membench import build_model, get_task; "
            "assert models.OURS; assert membench.models.build_model is build_model; "
            "print(build_model('lstm', vocab_size=get_task('copy').vocab_size, d_model=16).num_params())")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 0


def test_a_bug_outside_a_trial_keeps_its_traceback_and_bad_config_is_one_line(capsys, monkeypatch):
    """Only ConfigError and UsageError are printed as one-line errors; any other exception is a bug and
    propagates (the interpreter prints its traceback and exits 1)."""
    import membench.runners.commands.tasks as tasks_command
    from membench.checks import ConfigError

    def bug(args):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(tasks_command, "run", bug)
    with pytest.raises(ValueError, match="internal invariant"):
        run_cli(capsys, "tasks")

    def bad_config(args):
        raise ConfigError("num_kv_pairs must be an integer >= 1, got 0")

    monkeypatch.setattr(tasks_command, "run", bad_config)
    code, _, err = run_cli(capsys, "tasks")
    assert code == 2 and err == "membench: error: num_kv_pairs must be an integer >= 1, got 0\n"


def test_starting_the_cli_does_not_import_the_compiler():
    """torch._dynamo (and sympy under it) is ~1.5 s of start-up: every command (`membench models` too) and the
    parent of a pooled sweep, which trains nothing, would pay it (torch.optim imports it at its first use)."""
    code = ("import sys; import membench.runners.cli as cli; cli.build_parser(); "
            "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
