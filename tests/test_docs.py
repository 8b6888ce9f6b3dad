"""The manual (README.md and docs/) cannot go stale: every example in it is exercised, every relative link
resolves, and every generated reference list equals what the code generates now.

How each kind of example is exercised (a block of any other kind fails, so a new example cannot go untested):

    ```python    run as a module of its own (what it registers is unregistered after); the README's and the
                 pages' task, model and mixer examples are tested further in test_readme_examples.py and
                 test_readme_byo.py
    ```toml      parsed; a spec (anything but a pyproject.toml) is loaded and validated as a spec file
    ```console   each `$ membench ...` line is run and its shown output lines must appear, in order
                 (`...` stands for lines left out)
    ```text      output or diagrams shown for reading: nothing to run
    ```bash      every command line, by its program:
                   membench  parsed by the CLI's own parser (build_parser), then
                             tasks, models, show, check: run fully;
                             plan, run, leaderboard: the sweep's spec validated by `membench plan` on a
                             reduced selection (one family and one task of a preset; a spec as written),
                             since a real sweep takes minutes to hours;
                             compare, cost, doctor, charts, report, reproduce, export: parsed only (a
                             real run takes minutes; their own tests run them), the directory of charts
                             and report must exist or be written by an earlier example;
                   make      the target exists in the Makefile;    pytest    the test files exist;
                   pip       the extras named exist in pyproject;   python -m membench.runners.reference_docs
                             run with --check;     ray       a cluster command, not runnable here
"""

from __future__ import annotations

import re
import shlex
import sys
import tomllib
import types
from pathlib import Path

import pytest

from membench.memtasks import TASKS
from membench.models import MODELS
from membench.runners import reference_docs
from membench.runners.cli import build_parser
from membench.runners.spec import SETTINGS, TOP_KEYS, load_spec
from tests.helpers import run_cli, undo_plugin_side_effects  # noqa: F401 (autouse)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
KINDS = ("python", "toml", "console", "text", "bash")
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(kind: str | None = None) -> list[tuple[Path, str, str]]:
    """(page, kind, text) of every fenced block of the manual, of one kind or all."""
    found = [(page, m.group(1), m.group(2)) for page in PAGES for m in _FENCE.finditer(page.read_text())]
    return [b for b in found if kind is None or b[1] == kind]


def bash_lines() -> list[tuple[Path, list[str]]]:
    """(page, argv) of every command of every bash block; `a && b` is two commands, comments dropped."""
    lines = []
    for page, _, text in blocks("bash"):
        for line in text.splitlines():
            for command in line.split(" && "):
                argv = shlex.split(command, comments=True)
                if argv:
                    lines.append((page, argv))
    return lines


def name(item) -> str:
    page, argv = item
    return f"{page.name}: {' '.join(argv)}"[:120]


def test_the_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def test_every_block_is_of_a_kind_that_is_exercised():
    assert blocks(), "no example found"
    for page, kind, text in blocks():
        assert kind in KINDS, f"{page.name}: a ```{kind} block ({text[:40]!r}): use one of {KINDS}"


# --- generated reference lists and links ------------------------------------------------------------------
def test_generated_reference_lists_are_up_to_date():
    stale = reference_docs.stale_pages(DOCS)
    assert not stale, f"{[p.name for p in stale]} differ from the code: run `{reference_docs.COMMAND}`"
    names = {n for page in DOCS.glob("*.md") for n in reference_docs.generated_blocks(page.read_text())}
    assert names == set(reference_docs.BLOCKS), "every generated list appears in the manual"


def test_every_spec_key_and_family_is_in_the_manual():
    from membench.models import list_models

    specs = (DOCS / "sweeps.md").read_text()
    assert all(f"| `{key}` |" in specs for key in [*SETTINGS, *TOP_KEYS])
    models = (DOCS / "models.md").read_text()
    assert all(f"| `{family}` |" in models for family in list_models() if MODELS.source(family) == "membench")


def test_a_key_without_a_description_is_an_error(monkeypatch):
    monkeypatch.delitem(reference_docs.SPEC_KEY_DOCS, "steps")
    with pytest.raises(KeyError, match="SPEC_KEY_DOCS"):
        reference_docs.spec_settings()
    monkeypatch.delitem(reference_docs.COLUMN_DOCS, "lag_bucket")
    with pytest.raises(KeyError, match="COLUMN_DOCS"):
        reference_docs.tables()


def test_a_stale_block_is_found_and_rewritten(tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text("prose\n<!-- generated: spec-top -->\nold\n<!-- end generated: spec-top -->\nmore prose\n")
    assert reference_docs.main([str(tmp_path), "--check"]) == 1
    assert reference_docs.main([str(tmp_path)]) == 0
    text = page.read_text()
    assert text.startswith("prose\n") and text.endswith("more prose\n") and "| `device` | `\"auto\"` |" in text
    assert reference_docs.main([str(tmp_path), "--check"]) == 0


def github_anchor(heading: str) -> str:
    """The anchor a repository host gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = _FENCE.sub("", page.read_text())
    return {github_anchor(h) for h in re.findall(r"^#+ (.*)$", text, re.M)}


def test_every_relative_link_points_to_a_file_and_anchor_that_exist():
    links = 0
    for page in PAGES:
        text = _FENCE.sub("", page.read_text())
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            links += 1
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            assert resolved.exists(), f"{page.name}: {target} does not exist"
            if anchor:
                assert anchor in anchors(resolved), f"{page.name}: {target}: no heading #{anchor}"
    assert links > 50


def test_the_link_checker_knows_a_heading_from_a_broken_anchor():
    assert github_anchor("What a sweep will cost") == "what-a-sweep-will-cost"
    assert github_anchor("Reliability: results are never lost, sizes are bounded") == (
        "reliability-results-are-never-lost-sizes-are-bounded")
    assert "spec-files" in anchors(DOCS / "sweeps.md") and "spec-file" not in anchors(DOCS / "sweeps.md")


def test_the_license_is_the_one_pyproject_names():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    text = (ROOT / "LICENSE").read_text()
    assert project["license"]["text"] == "MIT" and text.startswith("MIT License")
    assert "Copyright (c) 2026 the membench authors" in text


# --- examples -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("page, source", [(p, t) for p, _, t in blocks("python")],
                         ids=lambda v: v.name if isinstance(v, Path) else "")
def test_python_examples_run(page, source):
    if "import transformers" in source:  # a pretrained model's example needs the hf extra
        pytest.importorskip("transformers")
    before = {registry: set(registry.names()) for registry in (TASKS, MODELS)}
    module = types.ModuleType(f"docs_{page.stem}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    try:
        exec(compile(source, f"{page.name}:example", "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
        for registry, names in before.items():
            for added in set(registry.names()) - names:
                registry.unregister(added)


@pytest.mark.parametrize("page, source", [(p, t) for p, _, t in blocks("toml")],
                         ids=lambda v: v.name if isinstance(v, Path) else "")
def test_toml_examples_are_valid_specs(page, source, tmp_path):
    data = tomllib.loads(source)
    if "project" in data:  # a plugin's pyproject.toml: tested in test_readme_byo.py
        assert data["project"]["entry-points"]
        return
    if any(str(m.get("model", "")).startswith("hf:") for m in data.get("models", {}).values()):
        pytest.importorskip("transformers")
    path = tmp_path / "example.toml"
    path.write_text(source)
    spec = load_spec(spec_file=str(path))
    assert spec.trials


@pytest.mark.parametrize("page, source", [(p, t) for p, _, t in blocks("console")],
                         ids=lambda v: v.name if isinstance(v, Path) else "")
def test_console_examples_print_what_they_show(page, source, capsys):
    for session in source.split("$ ")[1:]:
        command, *shown = session.splitlines()
        argv = shlex.split(command, comments=True)
        assert argv[0] == "membench"
        code, out, err = run_cli(capsys, *argv[1:])
        assert code == 0, err
        printed = iter(out.splitlines())
        for line in (s for s in shown if s != "..."):
            assert any(p.rstrip() == line.rstrip() for p in printed), f"{command}: {line!r} not printed"


def _out_dirs(page: Path) -> set[str]:
    return {argv[argv.index("--out") + 1] for p, argv in bash_lines() if p == page and "--out" in argv}


def _spec_file_of(page: Path, argv: list[str], tmp_path: Path) -> list[str]:
    """argv with a spec file the page defines (a toml block whose first line names it) written to tmp_path."""
    if "--spec" not in argv:
        return argv
    i = argv.index("--spec") + 1
    for p, _, text in blocks("toml"):
        if p == page and text.startswith(f"# {argv[i]}"):
            (tmp_path / argv[i]).write_text(text)
            return [*argv[:i], str(tmp_path / argv[i]), *argv[i + 1:]]
    return argv


RUN_FULLY = {"tasks", "models", "show", "check"}
VALIDATED_BY_PLAN = {"plan", "run", "leaderboard"}
PARSED_ONLY = {"compare", "cost", "doctor", "charts", "report", "reproduce", "export"}


@pytest.mark.parametrize("item", bash_lines(), ids=name)
def test_bash_examples(item, capsys, tmp_path):
    page, argv = item
    program = argv[0]
    if program == "membench":
        command = argv[1]
        args = build_parser().parse_args(argv[1:])  # every example parses as written
        assert command in RUN_FULLY | VALIDATED_BY_PLAN | PARSED_ONLY, f"say how `membench {command}` is tested"
        if command in RUN_FULLY:
            if command == "check" and argv[2].startswith("hf:"):
                pytest.importorskip("transformers")
            if command == "check" and ":" in argv[2] and not argv[2].startswith("hf:"):
                return  # a user's own mixer: run from the user's folder in test_readme_byo.py
            code, out, err = run_cli(capsys, *argv[1:])
            assert code == 0, out + err
        elif command in VALIDATED_BY_PLAN:
            _validate_by_plan(page, argv, args, capsys, tmp_path)
        elif command in ("charts", "report"):
            directory = argv[2]
            assert (ROOT / directory).is_dir() or directory in _out_dirs(page), directory
    elif program == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
        assert argv[1] in targets
    elif program == "pytest":
        assert all((ROOT / a).is_file() for a in argv if a.startswith("tests/"))
    elif program == "pip":
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        named = re.findall(r"\[([\w,]+)\]", " ".join(argv))
        assert all(e in extras for group in named for e in group.split(","))
    elif argv[:3] == ["python", "-m", "membench.runners.reference_docs"]:
        assert reference_docs.main([str(ROOT / argv[3]), "--check"]) == 0
    else:
        assert program == "ray", f"say how `{program}` is tested"


def _validate_by_plan(page, argv, args, capsys, tmp_path):
    """The example's sweep, validated and estimated by `membench plan` on a reduced selection."""
    argv = _spec_file_of(page, argv, tmp_path)
    plan = ["plan"]
    preset = getattr(args, "preset", None)
    if preset is None and getattr(args, "spec", None) is None:
        preset = "smoke"  # leaderboard's default on a machine without CUDA (standard with it)
    if preset:
        plan += ["--preset", preset, "--models", args.models or "lstm", "--tasks", args.tasks or "copy"]
    else:
        plan += ["--spec", argv[argv.index("--spec") + 1]]
        plan += ["--models", args.models] if args.models else []
        plan += ["--tasks", args.tasks] if args.tasks else []
    plan += ["--lengths", args.lengths] if args.lengths else []
    plan += ["--seeds", args.seeds] if args.seeds else []
    if getattr(args, "against", None):
        plan += ["--against", str(ROOT / args.against)]
    if any("hf:" in line for _, _, line in blocks("toml") if "hf.toml" in " ".join(argv)):
        pytest.importorskip("transformers")
    code, out, err = run_cli(capsys, *plan)
    assert code == 0, err
    assert "trials" in out
