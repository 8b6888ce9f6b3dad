"""The manual's "Bring your own" page (docs/byo.md) works as written, from a user's folder outside the
repository that has a `models/` package of its own; the README shows the same mixer and commands."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from membench.models import MODELS, build_model, list_models
from membench.runners.spec import load_spec
from tests.helpers import run_cli, undo_plugin_side_effects  # noqa: F401 (autouse)

ROOT = Path(__file__).resolve().parent.parent

PAGE = ROOT / "docs" / "byo.md"
README = ROOT / "README.md"


def section_blocks(kind: str, page: Path = PAGE) -> list[str]:
    """The ```kind blocks of the page (of the README: its "benchmark your own" section), in order."""
    text = page.read_text()
    if page == README:
        text = text.split("## Add a model, or benchmark your own", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{kind}\n(.*?)```", text, re.S)


def test_the_readme_shows_the_manuals_mixer_and_commands():
    assert section_blocks("python", README)[0] == section_blocks("python")[0]
    assert section_blocks("bash", README)[0] == section_blocks("bash")[0]


def commands(block: str) -> list[list[str]]:
    """The `membench ...` lines of a bash block, as argument lists (without the program name)."""
    return [shlex.split(line)[1:] for line in block.splitlines() if line.startswith("membench ")]


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """A folder outside the repository with the README's my_mixer.py and a models/ package of its own."""
    (tmp_path / "my_mixer.py").write_text(section_blocks("python")[0])
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("WHOSE = 'the user'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    sys.modules.pop("my_mixer", None)
    yield tmp_path
    sys.modules.pop("my_mixer", None)


def test_the_mixer_file_is_about_twenty_lines_and_builds_a_causal_model(user_folder):
    source = section_blocks("python")[0]
    assert len([line for line in source.splitlines() if line.strip()]) <= 22
    model = build_model("my_mixer:MyMixer", vocab_size=8, d_model=16, width=3)
    assert model.state_size(100) == 2 * 16 * 2  # two layers of (width - 1) x d_model


@pytest.mark.slow
def test_check_and_compare_as_written_in_process(user_folder, capsys):
    check, compare = commands(section_blocks("bash")[0])
    assert check == ["check", "my_mixer:MyMixer"]
    assert compare[:4] == ["compare", "lstm", "transformer", "my_mixer:MyMixer"]
    code, out, err = run_cli(capsys, *check)
    assert code == 0, out + err
    code, out, err = run_cli(capsys, *compare, "--quiet")
    assert code == 0, err
    assert "my_mixer:MyMixer" in out.splitlines()[1]  # a column of the side-by-side table
    runs = pd.read_csv(user_folder / "results" / "mine" / "runs.csv")
    assert set(runs["model"]) == {"lstm", "transformer", "my_mixer:MyMixer"} and (runs["status"] == "ok").all()
    mine = runs[runs["model"] == "my_mixer:MyMixer"]
    assert (mine["state_size"] == 2 * 3 * mine["d_model"]).all()


@pytest.mark.slow
def test_check_and_run_in_a_subprocess_from_the_users_folder(user_folder):
    """The command line as a user runs it, from their own folder (its models/ must not get in the way)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's membench, whichever is installed
    check = commands(section_blocks("bash")[0])[0]
    done = subprocess.run([sys.executable, "-m", "membench.runners", *check], cwd=user_folder, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "gradient reaches every parameter" in done.stdout and "0 failed" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "membench.runners", "check", "my_mixer:MyMixr"], cwd=user_folder,
                         env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "closest: MyMixer" in bad.stderr and bad.stderr.count("\n") == 1
    run = subprocess.run([sys.executable, "-m", "membench.runners", "run", "--preset", "smoke", "--tasks", "copy",
                          "--models", "my_mixer:MyMixer", "--lengths", "8", "--out", "out", "--quiet"],
                         cwd=user_folder, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert set(pd.read_csv(user_folder / "out" / "runs.csv")["status"]) == {"ok"}


def test_the_plugin_pyproject_declares_an_entry_point_that_resolves(user_folder, tmp_path, monkeypatch):
    project = tomllib.loads(section_blocks("toml")[0])["project"]
    (entry,) = project["entry-points"]["membench.models"].items()
    name, target = entry
    package = tmp_path / "site" / "my_mixers"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "mixer.py").write_text(section_blocks("python")[0])
    info = tmp_path / "site" / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (info / "entry_points.txt").write_text(f"[membench.models]\n{name} = {target}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    from membench import plugins

    try:
        plugins.load_entry_points(MODELS)
        assert name in list_models() and MODELS.source(name) == f"entry point {project['name']}"
        assert build_model(name, vocab_size=8, d_model=16).state_size(64) == 2 * 3 * 16
    finally:
        MODELS.unregister(name)


@pytest.mark.slow
def test_the_hugging_face_spec_as_written(user_folder, capsys):
    pytest.importorskip("transformers")
    (user_folder / "hf.toml").write_text(section_blocks("toml")[1])
    spec = load_spec(spec_file="hf.toml")
    assert {t.model for t in spec.trials} == {"hf:gpt2", "hf:llama", "hf:mamba"}
    assert {t.model: t.model_params for t in spec.trials}["hf:mamba"] == {"state_size": 8}
    check, run = commands(section_blocks("bash")[1])
    assert check == ["check", "hf:mamba"] and run == ["run", "--spec", "hf.toml", "--out", "results/hf"]
    # the run as written trains 300 steps; here 3, which is what this test can afford
    (user_folder / "hf.toml").write_text(section_blocks("toml")[1].replace("steps = 300", "steps = 3\neval_every = 3"))
    code, out, err = run_cli(capsys, *run, "--quiet")
    assert code == 0, err
    runs = pd.read_csv(user_folder / "results" / "hf" / "runs.csv")
    assert (runs["status"] == "ok").all() and runs["state_size"].notna().all()
