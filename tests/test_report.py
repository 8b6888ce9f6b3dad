"""report.html (runners/reporting/html_report.py, `membench report`): one self-contained page rebuilt from a
sweep's tables, with its failed, missing and under-trained cells marked, its cells linked to their training
curves, and every other Markdown or CSV file of the folder shown. Its behaviour in a browser is tested in
test_report_browser.py."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from membench.runners.reporting.html_assets import CSS, FOLD_ROWS, SCRIPT, csv_html, markdown_html
from membench.runners.reporting.html_report import write_report
from tests.helpers import run_cli
from tests.sweeps import known_runs, trial, write_sweep

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The known sweep (tests/sweeps.py: lstm's recall 128 has an oom seed, gru's recall 128 is missing), one
    trial flagged under-trained, with a reproduction's claims.csv and verdicts.md beside the tables."""
    folder = tmp_path_factory.mktemp("sweep")
    runs = known_runs()
    runs["under_trained"] = runs["trial_id"].str.startswith("copy-mlp-128")
    write_sweep(folder, runs)
    (folder / "claims.csv").write_text("claim,paper,ours\nlstm copies at 64,1.00,0.98\n")
    (folder / "claims.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    (folder / "verdicts.csv").write_text("claim,verdict\nshown by verdicts.md,holds\n")
    (folder / "verdicts.md").write_text("# Verdicts\n\n| claim | verdict |\n|---|---|\n"
                                        "| lstm copies | <b>holds</b> |\n")
    return write_report(folder)


def cells_of(page: str, model: str) -> list[str]:
    """The <td> elements of `model`'s leaderboard row."""
    board = page[page.index('id="board"'):]
    row = next(r for r in board.split("<tr>") if f"<strong>{model}</strong>" in r)
    return re.findall(r"<td[^>]*>.*?</td>", row)


def test_the_page_is_self_contained(written):
    page = written.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r'<(script|img|link|iframe)[^>]*\b(src|href)="(?!data:)', page), "nothing is loaded"
    assert not re.search(r"url\((?!#)", page) and "@import" not in page
    assert page.count("<svg") == 2  # a figure per task, inline
    assert "<?xml" not in page


def test_the_page_is_a_line_per_section_and_no_line_stands_twice(written):
    lines = written.read_text().splitlines()
    sections = [line for line in lines if line.startswith("<section ")]
    assert [line[:line.index(">") + 1] for line in sections] == [
        '<section id="run">', '<section id="files">', '<section id="leaderboard">', '<section id="tasks">',
        '<section id="slices">']
    assert len(lines) == 3 + len(sections) + 2  # doctype, head, header; the sections; the curve data; the end
    assert lines[1].startswith('<html lang="en"><head>') and lines[1].endswith("</style></head>")
    assert lines[-2].startswith('<script type="application/json" id="curve-data">')
    assert lines[-1].startswith("</main>") and lines[-1].endswith("</script></body></html>")
    assert len(set(lines)) == len(lines)


def test_the_script_means_the_same_on_one_line():
    """The page holds the style and the script on one line each (html_assets.one_line). For the script that is
    safe only while no line leans on its line break: each ends a statement with ";" or ends in "{", "}", ",",
    "(" or "=>", no template string spans two lines, and there is no comment."""
    for line in SCRIPT.splitlines():
        code = line.strip()
        assert not code or code.endswith((";", "{", "}", ",", "(", "=>")), f"ends without ';': {code}"
        assert code.count("`") % 2 == 0, f"a template string across lines: {code}"
        assert not re.search(r"(?<!:)//|/\*", code), f"a comment: {code}"
    assert "/*" not in CSS


def test_failed_missing_and_under_trained_cells_are_marked_and_explained(written):
    page = written.read_text()
    tasks = ["copy", "recall"]
    lstm = dict(zip(tasks, cells_of(page, "lstm")[3:5]))
    gru = dict(zip(tasks, cells_of(page, "gru")[3:5]))
    mlp = dict(zip(tasks, cells_of(page, "mlp")[3:5]))
    assert 'class="num failed"' in lstm["recall"] and "1 failed trial(s)" in lstm["recall"]
    assert 'class="num missing"' in gru["recall"] and "1 cell(s) the sweep did not run" in gru["recall"]
    assert 'class="num under"' in mlp["copy"] and "under-trained" in mlp["copy"]
    assert 'class="num"' in lstm["copy"] and "mark" not in lstm["copy"]  # a clean cell carries no mark
    assert "Marks:" in page and "counted 0" in page


def test_the_leaderboard_holds_the_computed_values_with_sort_keys(written):
    page = written.read_text()
    order = re.findall(r"<td[^>]*><strong>(\w+)</strong></td>", page[page.index('id="board"'):])[:3]
    assert order == ["lstm", "gru", "mlp"]  # the ranking of tests/test_leaderboard.py's worked example
    score = cells_of(page, "lstm")[2]
    assert 'data-sort="0.708333"' in score  # copy (1.0 + 0.95 + 0.5) / 3, recall ((1.0 + 0.8) / 2 + (0.6 + 0) / 2) / 2


def test_each_task_cell_links_to_the_training_curves_of_its_trials(written):
    page = written.read_text()
    data = json.loads(re.search(r'id="curve-data">(.*?)</script>', page, re.S).group(1))
    link = re.search(r'href="#curves-(\d+)"', cells_of(page, "gru")[3]).group(1)
    group = data["groups"][int(link)]
    assert group["title"].startswith("copy · gru")
    curves = pd.read_csv(written.parent / "curves.csv").dropna(subset=["eval_accuracy"])
    for trial_id in group["trials"]:
        mine = curves[curves["trial_id"] == trial_id]
        assert data["trials"][trial_id]["x"] == mine["tokens"].tolist()
        assert data["trials"][trial_id]["y"] == pytest.approx(mine["eval_accuracy"].tolist(), abs=1e-4)
    assert len(group["trials"]) == 3  # copy was trained at three lengths, one seed each


def test_other_files_of_the_folder_are_shown_as_tables(written):
    page = written.read_text()
    files = page[page.index('id="files"'):]
    assert "<td>lstm copies at 64</td>" in files and '<td class="num">0.98</td>' in files
    assert "<h4>Verdicts</h4>" in files
    assert "&lt;b&gt;holds&lt;/b&gt;" in files  # raw HTML in a file is shown as text, never run
    assert '<img alt="claims.svg" src="data:image/svg+xml;base64,' in files  # an image: its script never runs
    assert "alert(1)" not in page
    assert "shown by verdicts.md" not in page and "<code>verdicts.csv</code>" not in page  # its .md shows it


def test_the_same_tables_give_the_same_bytes(written):
    first = written.read_bytes()
    assert write_report(written.parent).read_bytes() == first
    assert not re.search(rb"20\d\d-\d\d-\d\d", first), "no date of writing"


def test_membench_report_writes_the_page_and_refuses_a_folder_without_runs(tmp_path, capsys, written):
    good = tmp_path / written.parent.name  # the folder's name is the page's title
    shutil.copytree(written.parent, good)
    (good / "report.html").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run_cli(capsys, "report", str(good), str(empty))
    assert code == 2 and err.count("\n") == 1 and "has no runs.csv" in err
    assert not (good / "report.html").exists()  # every folder is read before anything is written
    code, out, err = run_cli(capsys, "report", str(good))
    assert code == 0 and out == f"wrote {good / 'report.html'}\n"
    assert (good / "report.html").read_bytes() == written.read_bytes()


def test_membench_charts_writes_the_report_too(tmp_path, capsys):
    runs = pd.DataFrame(trial("copy", "lstm", 64, 1.0) + trial("copy", "gru", 64, 0.5))
    folder = write_sweep(tmp_path / "sweep", runs.reindex(columns=known_runs().columns))
    code, out, err = run_cli(capsys, "charts", str(folder))
    assert code == 0, err
    assert out.rstrip().endswith(f"wrote {folder / 'report.html'}")
    assert '<td class="num"><strong>' not in (folder / "report.html").read_text()
    assert "<strong>gru</strong>" in (folder / "report.html").read_text()


def test_markdown_tables_headings_and_code_are_rendered():
    text = "# Title\n\nSome `x < y` and **bold**.\n\n    membench report DIR\n\n- one\n  more\n- two\n"
    page = markdown_html(text, shift=1)
    assert "<h2>Title</h2>" in page and "<code>x &lt; y</code>" in page and "<strong>bold</strong>" in page
    assert "<pre>membench report DIR</pre>" in page and "<ul><li>one more</li><li>two</li></ul>" in page
    long = "| a |\n|---:|\n" + "".join(f"| {i} |\n" for i in range(FOLD_ROWS + 1))
    assert markdown_html(long).startswith(f"<details><summary>{FOLD_ROWS + 1} rows</summary>")
    assert "<details>" not in markdown_html("| a |\n|---:|\n| 1 |\n")


def test_a_long_csv_shows_its_first_rows_and_says_so():
    text = "n,name\n" + "".join(f"{i},row{i}\n" for i in range(400))
    page = csv_html(text, "big.csv")
    assert page.count("<tr>") == 1 + 300 and "The first 300 of 400 rows" in page
    assert '<td class="num">299</td>' in page and "<td>row299</td>" in page


@pytest.mark.slow
@pytest.mark.parametrize("folder", sorted(p.name for p in (ROOT / "results").iterdir()
                                           if (p / "runs.csv").is_file() or (p / "claims.csv").is_file()))
def test_every_committed_results_folder_has_its_report_up_to_date(folder, tmp_path):
    committed = ROOT / "results" / folder / "report.html"
    assert committed.is_file(), f"run `membench report results/{folder}`"
    copy = shutil.copytree(ROOT / "results" / folder, tmp_path / folder, ignore=shutil.ignore_patterns("charts"))
    assert write_report(copy).read_bytes() == committed.read_bytes(), f"run `membench report results/{folder}`"


def test_a_sweep_of_sizes_gets_the_frontier_and_one_with_cost_csv_the_cost_curves(tmp_path):
    rows = trial("copy", "gru", 64, 0.5) + trial("copy", "lstm", 64, 0.9)
    wider = [{**row, "trial_id": row["trial_id"] + "-d64", "d_model": 64, "state_size": 512, "accuracy": 0.99}
             for row in trial("copy", "gru", 64, 0.5)]
    folder = write_sweep(tmp_path / "sizes", pd.DataFrame(rows + wider).reindex(columns=known_runs().columns))
    pd.DataFrame({"model": ["gru"] * 3, "seq_len": [64, 128, 256], "batch_size": [8] * 3,
                  "ms_per_step": [1.0, 2.0, 4.0], "peak_memory_mb": [1.0, 2.0, 4.0], "flops": [1e6, 2e6, 4e6],
                  "attention_flops": [0.0] * 3, "tflops_per_s": [1e-3] * 3, "tokens_per_second": [1e5] * 3,
                  "state_size": [64] * 3, "status": ["ok"] * 3, "device": ["cpu"] * 3}
                 ).to_csv(folder / "cost.csv", index=False)
    page = write_report(folder).read_text()
    frontier = page[page.index('<section id="frontier">'):page.index('<section id="cost">')]
    assert frontier.count("<svg") == 1 and "<td>gru</td>" in frontier and "<td>lstm</td>" in frontier
    cost = page[page.index('<section id="cost">'):]
    assert cost.count("<svg") == 3  # time, memory, FLOPs (no attention share: gru has none)
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "the figures' ids never meet"


def test_a_reproductions_folder_of_verdicts_alone_gets_its_readme_and_claims(tmp_path, capsys):
    folder = tmp_path / "reproduce-paper"
    folder.mkdir()
    (folder / "README.md").write_text("# A paper\n\nMade by\n\n    membench reproduce paper --out here\n")
    (folder / "claims.csv").write_text("claim,paper,ours,verdict\nrecall at 64,1.0,0.99,holds\n")
    code, out, err = run_cli(capsys, "report", str(folder))
    assert code == 0, err
    page = (folder / "report.html").read_text()
    assert "<code>membench reproduce paper --out here</code>" in page and "<td>holds</td>" in page
    assert 'id="board"' not in page  # no runs: no leaderboard


def test_the_scaled_accuracy_is_shown_beside_acc_where_the_tables_give_a_chance_level(tmp_path):
    runs = known_runs()
    runs["scaled_accuracy"] = (runs["accuracy"] - 0.5) / 0.5  # chance 0.5 on both tasks
    page = write_report(write_sweep(tmp_path / "scaled", runs)).read_text()
    copy = cells_of(page, "lstm")[3]
    assert '<span class="ci">[0.63]</span>' in copy  # ((1.0 + 0.95 + 0.5) / 3 - 0.5) / 0.5
    assert "[s] is the scaled accuracy" in page
