"""Every registered task has a closed answer set (or says it is open) and renders as text: these tests run over
`list_tasks()`, so a task registered with @register_task is tested here with no new test written."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import torch

from membench.checks import ConfigError
from membench.memtasks import IGNORE, NO_LAG, Batch, Task, get_task, list_tasks
from membench.memtasks.text import plain_vocabulary, render_text, with_shots
from tests.helpers import run_cli

TASKS = list_tasks()
# params beside the defaults whose answers or layout differ (motifs, noise, updates, groups)
VARIANTS = {
    "associative_recall": [{"num_updates": 2, "num_kv_pairs": 4}],
    "fuzzy_recall": [{"k_motif_size": 1, "v_motif_size": 1}, {"k_motif_size": 2, "v_motif_size": 3}],
    "copy": [{"noise": True, "selective": True}],
    "state_tracking": [{"group": "parity"}, {"group": "cyclic", "modulus": 7}, {"group": "S3", "score": "last"}],
    "n_back": [{"n": 3}],
}
CASES = [(name, {}) for name in TASKS] + [(n, p) for n, ps in VARIANTS.items() if n in TASKS for p in ps]


def case_id(case) -> str:
    name, params = case
    return name + "".join(f"-{k}={v}" for k, v in params.items())


def lengths_of(task: Task) -> list[int]:
    base = task.min_length()
    return sorted({base, base + 5, max(64, base) + 3})


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_answer_candidates_cover_every_scored_target(case):
    name, params = case
    task = get_task(name, **params)
    candidates = task.answer_candidates()
    if candidates is None:
        assert task.chance_level == 0.0
        return
    assert len(set(candidates)) == len(candidates) and all(0 <= c < task.vocab_size for c in candidates)
    assert task.chance_level == pytest.approx(1.0 / len(candidates))
    allowed = torch.tensor(candidates)
    for seq_len in lengths_of(task):
        batch = task.sample(16, seq_len, seed=5)
        scored = batch.targets[batch.scored]
        assert torch.isin(scored, allowed).all(), f"{name} at {seq_len}: a target outside answer_candidates"


@dataclass
class _Echo(Task):
    """A plugin-like task that declares nothing about its answers: answer the previous token."""

    def min_length(self) -> int:
        return 2

    @property
    def vocab_size(self) -> int:
        return 5

    def _generate(self, batch_size, seq_len, gen, device) -> Batch:
        inputs = torch.randint(self.vocab_size, (batch_size, seq_len), generator=gen, device=device)
        targets = torch.full_like(inputs, IGNORE)
        targets[:, 1:] = inputs[:, :-1]
        lags = torch.full_like(inputs, NO_LAG)
        lags[:, 1:] = 1
        return Batch(inputs, targets, lags)

    def solve(self, inputs):
        return torch.cat([torch.full_like(inputs[:, :1], IGNORE), inputs[:, :-1]], dim=1)


def test_a_task_that_declares_no_answer_set_is_open_with_chance_zero():
    assert _Echo().answer_candidates() is None and _Echo().chance_level == 0.0


# --- text rendering (memtasks/text.py) ------------------------------------------------------------------------


def examples(task: Task, seed: int = 3):
    """(batch, i) of a few examples at several lengths."""
    for seq_len in lengths_of(task):
        batch = task.sample(3, seq_len, seed=seed)
        for i in range(3):
            yield batch, i


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_readable_answers_are_their_gold_text_in_order_one_per_scored_position(case):
    task = get_task(case[0], **case[1])
    for batch, i in examples(task):
        table = task.symbol_table(batch.inputs.shape[1])
        example = render_text(task, batch, i)
        text, scored = example.text, batch.scored[i].nonzero().flatten().tolist()
        assert example.mode == "readable"
        assert [a.position for a in example.answers] == scored
        assert [a.lag for a in example.answers] == batch.lags[i, scored].tolist()
        assert all(a.gold == table.word(int(batch.targets[i, a.position])) for a in example.answers)
        starts = [a.start for a in example.answers]
        assert starts == sorted(set(starts))
        for a in example.answers:
            assert text[a.start:a.end] == a.gold and a.gold and not any(c.isspace() for c in a.gold)
            assert text[a.start - 1].isspace(), f"{text[max(0, a.start - 20):a.end]!r}: no space before the answer"
            assert a.end == len(text) or text[a.end].isspace(), f"{text[a.start:a.end + 5]!r}: the word runs on"
            assert a.candidates is None or a.gold in a.candidates


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_readable_symbol_spans_hold_every_input_and_the_evidence(case):
    task = get_task(case[0], **case[1])
    for batch, i in examples(task):
        table = task.symbol_table(batch.inputs.shape[1])
        example = render_text(task, batch, i, instruction=False)
        spans = example.symbol_spans
        assert len(spans) == batch.inputs.shape[1] and spans[0][0] == 0
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))
        assert [example.text[s:e] for s, e in spans] == [table.word(t) for t in batch.inputs[i].tolist()]
        for a in example.answers:
            evidence = spans[a.position - a.lag]
            assert evidence[1] <= a.start  # the evidence comes before its answer
            if task.recalls_token:
                assert example.text[slice(*evidence)] == a.gold
            # an answer is written after its symbol, or is the next symbol (fed back), never inside another
            assert a.start >= spans[a.position][1]
            assert (a.start, a.end) in spans or all(e <= a.start or s >= a.end for s, e in spans)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_plain_text_is_the_inputs_words_and_answers_are_insertion_points(case):
    task = get_task(case[0], **case[1])
    vocab = plain_vocabulary(task)
    assert len(vocab) == task.vocab_size == len(set(vocab)) and all(w and w.split() == [w] for w in vocab)
    for batch, i in examples(task):
        example = render_text(task, batch, i, mode="plain")
        inputs, targets = batch.inputs[i].tolist(), batch.targets[i].tolist()
        assert example.text.split(" ") == [vocab[t] for t in inputs]
        assert [example.text[s:e] for s, e in example.symbol_spans] == [vocab[t] for t in inputs]
        assert [a.position for a in example.answers] == [t for t, y in enumerate(targets) if y != IGNORE]
        for a in example.answers:
            assert a.start == a.end == example.symbol_spans[a.position][1] and a.gold == vocab[targets[a.position]]
            if task.recalls_token:
                assert example.text[slice(*example.symbol_spans[a.position - a.lag])] == a.gold


@pytest.mark.parametrize("name", TASKS)
def test_same_seed_same_text_other_seed_other_text(name):
    task = get_task(name)
    seq_len = max(64, task.min_length())
    first, again, other = (render_text(task, task.sample(2, seq_len, seed=s), 1) for s in (7, 7, 8))
    assert first == again and first.text != other.text


@pytest.mark.parametrize("name", TASKS)
def test_the_instruction_is_one_line_before_the_example(name):
    task = get_task(name)
    batch = task.sample(1, max(64, task.min_length()), seed=0)
    bare, told = render_text(task, batch, instruction=False), render_text(task, batch)
    head = told.text[:len(told.text) - len(bare.text)]
    assert told.text.endswith(bare.text) and head.count("\n") == (1 if head else 0) and head[:-1].strip() == head[:-1]
    shift = len(head)
    assert [a.start - shift for a in told.answers] == [a.start for a in bare.answers]


@pytest.mark.parametrize("mode", ["readable", "plain"])
def test_shots_come_first_and_only_the_example_is_scored(mode):
    task = get_task("associative_recall", num_kv_pairs=4)
    batch = task.sample(3, 40, seed=1)
    shots = [render_text(task, batch, 0, mode=mode), render_text(task, batch, 1, mode=mode, instruction=False)]
    example = render_text(task, batch, 2, mode=mode, instruction=False)
    combined = with_shots(example, shots, separator="\n\n")
    assert combined.text == shots[0].text + "\n\n" + shots[1].text + "\n\n" + example.text
    assert len(combined.answers) == len(example.answers) and combined.mode == mode
    shift = len(combined.text) - len(example.text)
    for a, b in zip(combined.answers, example.answers):
        assert (a.start, a.end) == (b.start + shift, b.end + shift) and a.gold == b.gold and a.position == b.position
        assert combined.text[slice(*combined.symbol_spans[a.position - a.lag])] == a.gold
        if mode == "readable":
            assert combined.text[a.start:a.end] == a.gold
    assert with_shots(example, []) == example
    with pytest.raises(ValueError, match="mode"):
        with_shots(example, [render_text(task, batch, 0, mode="plain" if mode == "readable" else "readable")])


def test_a_task_that_declares_no_symbol_table_reads_by_its_token_names():
    task = _Echo()
    batch = task.sample(1, 6, seed=0)
    example = render_text(task, batch)
    inputs = batch.inputs[0].tolist()
    # the default: names one space apart, each answer (the previous token) after ": "
    assert example.text == str(inputs[0]) + "".join(f" {x}: {y}" for x, y in zip(inputs[1:], inputs))
    assert example.answers[0].candidates is None


def test_plain_vocabulary_falls_back_to_ids_when_names_clash():
    class Clashing(_Echo):
        def token_name(self, token: int) -> str:
            return "x y" if token == 0 else "same"

    assert plain_vocabulary(Clashing()) == ["<0>", "<1>", "<2>", "<3>", "<4>"]


def test_an_unknown_mode_is_a_config_error():
    task = get_task("copy")
    with pytest.raises(ConfigError, match="readable, plain"):
        render_text(task, task.sample(1, 16, seed=0), mode="words")


def test_the_id_level_render_is_unchanged():
    task = get_task("associative_recall", vocab_size=8, num_kv_pairs=2)
    assert task.render(task.sample(1, 9, seed=2)) == "pairs:   k1=v2 k3=v3\nqueries: [k3 -> v3] v2 [k1 -> v2] v3 v3"


# --- membench show TASK --text ---------------------------------------------------------------------------------
def test_show_text_marks_every_answer_and_counts_words(capsys):
    task = get_task("associative_recall")
    example = render_text(task, task.sample(1, 48, seed=3))
    code, out, err = run_cli(capsys, "show", "associative_recall", "--text", "--length", "48", "--seed", "3")
    assert code == 0, err
    heading, *body, count = out.splitlines()
    assert f"as readable text, {len(example.answers)} answers marked [answer]" in heading
    shown = "\n".join(body)
    assert re.findall(r"\[([^\]]+)\]", shown) == [a.gold for a in example.answers]
    assert shown.replace("[", "").replace("]", "") == example.text
    assert count.startswith(f"length: {len(example.text.split())} whitespace-separated words")


def test_show_text_plain_marks_insertion_points(capsys):
    code, out, _ = run_cli(capsys, "show", "flip_flop", "--text", "--plain", "--length", "15", "--seed", "43")
    assert code == 0
    # the docstring's worked example: reads at t = 2, 8, 14 answer 1, 1, 0
    assert out.splitlines()[1] == "w 1 r [-> 1] 1 i 1 i 0 r [-> 1] 1 w 0 i 1 r [-> 0]"


def test_show_text_counts_tokens_with_a_saved_tokenizer(capsys, tmp_path):
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    words = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0, "GO": 1}, unk_token="[UNK]"))
    words.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()  # words and runs of punctuation: "GO:" is two
    saved = transformers.PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]")
    saved.save_pretrained(tmp_path / "tok")
    example = render_text(get_task("copy"), get_task("copy").sample(1, 32, seed=0))
    code, out, err = run_cli(capsys, "show", "copy", "--text", "--length", "32", "--tokenizer", str(tmp_path / "tok"))
    assert code == 0, err
    pieces = len(re.findall(r"\w+|[^\w\s]+", example.text))
    assert pieces > len(example.text.split())
    assert out.splitlines()[-1] == f"length: {pieces} tokens by the tokenizer in {tmp_path / 'tok'}"


@pytest.mark.parametrize("argv, message", [
    (["--text", "--tokenizer", "no/such/folder"], "--tokenizer no/such/folder: no such folder"),
    (["--plain"], "--plain goes with --text"),
    (["--tokenizer", "x"], "--tokenizer goes with --text"),
])
def test_show_text_bad_input_is_one_line(capsys, argv, message):
    code, out, err = run_cli(capsys, "show", "copy", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and not out


def test_show_text_a_folder_without_a_tokenizer_is_one_line(capsys, tmp_path):
    pytest.importorskip("transformers")
    code, _, err = run_cli(capsys, "show", "copy", "--text", "--tokenizer", str(tmp_path))
    assert code == 2 and f"--tokenizer {tmp_path}: its tokenizer cannot be loaded" in err
    assert len(err.strip().splitlines()) == 1
