"""Task-specific tests of delayed_match and multi_turn_qa (the generic ones are in test_task_contract.py)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from membench.memtasks import IGNORE, NO_LAG, get_task
from membench.memtasks.tasks import delayed_match as dm
from membench.memtasks.tasks import multi_turn_qa as qa
from membench.runners.cli import main

# --- delayed_match ---------------------------------------------------------------------------


def trials_of(task, batch, seq_len):
    """Split a delayed_match batch into its trials: (B, n, L) inputs and the (B, n) scored answers."""
    n, D = task.layout(seq_len)
    L = 2 * task.pattern_len + 3 + D
    inputs = batch.inputs[:, : n * L].reshape(len(batch.inputs), n, L)
    return inputs, batch.targets[:, : n * L].reshape(len(batch.inputs), n, L)[:, :, -1]


def test_delayed_match_probe_equals_sample_or_differs_in_exactly_one_position():
    task = get_task("delayed_match", pattern_len=4, num_symbols=5)
    inputs, answers = trials_of(task, task.sample(256, 100, seed=0), 100)
    k, D = 4, task.layout(100)[1]
    assert (inputs[..., 0] == dm.SAMPLE).all() and (inputs[..., 1 + k + D] == dm.PROBE).all()
    sample, probe = inputs[..., 1 : 1 + k], inputs[..., 2 + k + D : 2 + 2 * k + D]  # (B, n, k) each
    differences = (sample != probe).sum(dim=2)  # (B, n)
    assert torch.equal(differences == 0, answers == dm.MATCH)
    assert (differences[answers == dm.NONMATCH] == 1).all()
    # the changed position is spread over the whole pattern, not always the same one
    changed_at = (sample != probe).float().argmax(dim=2)[answers == dm.NONMATCH]
    assert set(changed_at.tolist()) == set(range(k))


def test_delayed_match_answers_are_balanced():
    task = get_task("delayed_match")
    batch = task.sample(512, 64, seed=1)
    answers = batch.targets[batch.scored]
    assert set(answers.unique().tolist()) == {dm.MATCH, dm.NONMATCH}
    assert 0.45 < (answers == dm.MATCH).float().mean().item() < 0.55


def test_delayed_match_lag_points_at_the_first_sample_token():
    task = get_task("delayed_match", pattern_len=3, delay=5)
    batch = task.sample(16, 70, seed=2)
    rows, cols = batch.scored.nonzero(as_tuple=True)
    first = cols - batch.lags[rows, cols]
    assert (batch.inputs[rows, first - 1] == dm.SAMPLE).all()  # just after the trial's SAMPLE marker
    assert (batch.lags[rows, cols] == 2 * 3 + 5 + 1).all()
    # and no other SAMPLE marker lies between the evidence and the question
    for r, c, f in zip(rows.tolist(), cols.tolist(), first.tolist()):
        assert dm.SAMPLE not in batch.inputs[r, f:c].tolist()


def test_delayed_match_delay_or_trials_grow_with_length():
    derived = get_task("delayed_match", pattern_len=2)  # trials of 7 tokens plus the delay
    assert derived.min_length() == 7 and derived.layout(7) == (1, 0) and derived.layout(16) == (2, 1)
    assert derived.layout(32) == (4, 1) and derived.layout(128) == (8, 9) and derived.layout(1024) == (8, 121)
    fixed_delay = get_task("delayed_match", pattern_len=3, delay=11)
    assert fixed_delay.layout(40) == (2, 11) and fixed_delay.layout(400) == (20, 11)
    both = get_task("delayed_match", pattern_len=3, num_trials=3, delay=4)
    assert both.min_length() == 3 * (2 * 3 + 3 + 4) and both.layout(1000) == (3, 4)
    batch = both.sample(2, 45, seed=0)
    assert int(batch.scored.sum(dim=1)[0]) == 3 and (batch.inputs[:, 39:] == dm.PAD).all()


def test_delayed_match_distractors_share_the_sample_alphabet():
    task = get_task("delayed_match", pattern_len=3, num_symbols=4, delay=20)
    inputs, _ = trials_of(task, task.sample(64, 29, seed=3), 29)
    distractors = inputs[..., 4:24] - task.first_symbol
    assert set(distractors.unique().tolist()) == {0, 1, 2, 3}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pattern_len=st.integers(1, 6),
    num_symbols=st.integers(2, 12),
    num_trials=st.none() | st.integers(1, 4),
    delay=st.none() | st.integers(0, 20),
    extra=st.integers(0, 60),
    seed=st.integers(0, 2**40),
)
def test_delayed_match_solver_agrees_for_any_params(pattern_len, num_symbols, num_trials, delay, extra, seed):
    task = get_task(
        "delayed_match", pattern_len=pattern_len, num_symbols=num_symbols, num_trials=num_trials, delay=delay
    )
    seq_len = task.min_length() + extra
    batch = task.sample(4, seq_len, seed=seed)
    assert batch.scored.any(dim=1).all()
    assert int(batch.inputs.max()) < task.vocab_size
    assert torch.equal(task.solve(batch.inputs)[batch.scored], batch.targets[batch.scored])


def test_delayed_match_worked_example_is_what_the_generator_makes():
    task = get_task("delayed_match", pattern_len=2, num_symbols=4, num_trials=2, delay=2)
    text = task.render(task.sample(1, 19, seed=2))
    assert text.count("\n") == 2  # two trials and the padding, one per line
    for line in text.splitlines():
        assert line in dm.DelayedMatch.__doc__


def test_delayed_match_rejects_a_length_too_short_for_the_delay():
    task = get_task("delayed_match", pattern_len=3, num_trials=2, delay=30)
    with pytest.raises(ValueError, match=r"seq_len=50 is too short.*minimum is 78"):
        task.sample(1, 50, seed=0)


# --- multi_turn_qa ---------------------------------------------------------------------------


def dialogue(task, inputs_row):
    """Turns of one example as (speaker, entity, attribute, value or '?') or (speaker, 'chat') tuples."""
    names = [task.token_name(t) for t in inputs_row.tolist()]
    turns = []
    for j in range(len(names) // qa.TURN_LEN):
        speaker, a, b, c, d = names[j * qa.TURN_LEN : (j + 1) * qa.TURN_LEN]
        if (a, b) == ("what", "is"):
            turns.append((speaker, c, d, "?"))
        else:
            turns.append((speaker, a, b, d) if c == "is" else (speaker, "chat"))
    return turns


def python_reference(task, inputs_row):
    """A per-turn loop with a dict of facts: {scored position: (answer name, lag)}."""
    facts, answers = {}, {}
    for j, turn in enumerate(dialogue(task, inputs_row)):
        if turn[1] == "chat":
            continue
        _, entity, attribute, last = turn
        position = j * qa.TURN_LEN + 4
        if last == "?":
            value, where = facts[(entity, attribute)]  # KeyError would mean a question about an unstated fact
            answers[position] = (value, position - where)
        else:
            facts[(entity, attribute)] = (last, position)
    return answers


@pytest.mark.parametrize("seq_len", [10, 57, 256])
def test_multi_turn_qa_matches_a_plain_python_dialogue_loop(seq_len):
    task = get_task("multi_turn_qa")
    batch = task.sample(16, seq_len, seed=5)
    for b in range(16):
        scored = batch.scored[b].nonzero().flatten().tolist()
        expected = python_reference(task, batch.inputs[b])
        assert sorted(expected) == scored
        for t in scored:
            assert (task.token_name(int(batch.targets[b, t])), int(batch.lags[b, t])) == expected[t]


def test_multi_turn_qa_latest_value_wins_after_an_update():
    task = get_task("multi_turn_qa", num_entities=2, num_attributes=2, update_prob=0.8)
    batch = task.sample(64, 200, seed=6)
    checked = 0
    for b in range(64):
        history = {}
        for j, turn in enumerate(dialogue(task, batch.inputs[b])):
            if turn[1] == "chat":
                continue
            key, last = turn[1:3], turn[3]
            if last != "?":
                if key in history:
                    assert last != history[key][-1], "an update must change the value"
                history.setdefault(key, []).append(last)
            elif len(history[key]) > 1:
                answer = task.token_name(int(batch.targets[b, j * qa.TURN_LEN + 4]))
                assert answer == history[key][-1]
                checked += 1
    assert checked > 100  # many questions came after updates


def test_multi_turn_qa_asks_only_about_stated_facts_and_scores_only_questions():
    task = get_task("multi_turn_qa", num_entities=16, num_attributes=8, ask_prob=0.6, chat_prob=0.1)
    batch = task.sample(32, 300, seed=7)
    for b in range(32):
        stated = set()
        for j, turn in enumerate(dialogue(task, batch.inputs[b])):
            end = j * qa.TURN_LEN + 4
            if turn[1] != "chat" and turn[3] == "?":
                assert turn[1:3] in stated
                assert batch.targets[b, end] != IGNORE
            else:
                assert (batch.targets[b, end - 4 : end + 1] == IGNORE).all()
                if turn[1] != "chat":
                    stated.add(turn[1:3])
        assert dialogue(task, batch.inputs[b])[0][3] != "?"  # the first turn states a fact


def test_multi_turn_qa_turn_kinds_follow_their_probabilities():
    task = get_task("multi_turn_qa", chat_prob=0.2, ask_prob=0.3, update_prob=0.5)
    batch = task.sample(128, 500, seed=8)
    turns = batch.inputs.reshape(128, 100, qa.TURN_LEN)[:, 1:-1]  # the first and last turns are fixed
    ask = turns[..., 1] == qa.WHAT
    chat = (turns[..., 3] != qa.IS) & ~ask
    assert abs(chat.float().mean().item() - 0.2) < 0.02
    assert abs(ask.float().mean().item() - 0.3) < 0.02
    speakers = turns[..., 0][chat]
    assert abs((speakers == qa.BOT).float().mean().item() - 0.5) < 0.05  # chit-chat from both sides
    assert (turns[..., 0][~chat] == qa.USER).all()


def test_multi_turn_qa_lags_grow_with_length():
    task = get_task("multi_turn_qa")
    batches = [task.sample(64, n, seed=9) for n in (64, 256, 1024)]
    mean_lag = [b.lags[b.scored].float().mean().item() for b in batches]
    assert mean_lag[0] < mean_lag[1] < mean_lag[2]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    num_entities=st.integers(1, 6),
    num_attributes=st.integers(1, 4),
    num_values=st.integers(2, 9),
    num_words=st.integers(1, 5),
    chat_prob=st.floats(0.0, 0.6),
    ask_prob=st.floats(0.0, 0.39),
    update_prob=st.floats(0.0, 1.0),
    seq_len=st.integers(10, 200),
    seed=st.integers(0, 2**40),
)
def test_multi_turn_qa_solver_agrees_for_any_params(
    num_entities, num_attributes, num_values, num_words, chat_prob, ask_prob, update_prob, seq_len, seed
):
    task = get_task(
        "multi_turn_qa", num_entities=num_entities, num_attributes=num_attributes, num_values=num_values,
        num_words=num_words, chat_prob=chat_prob, ask_prob=ask_prob, update_prob=update_prob,
    )
    batch = task.sample(4, seq_len, seed=seed)
    assert batch.scored.any(dim=1).all()
    assert int(batch.inputs.max()) < task.vocab_size
    assert torch.equal(task.solve(batch.inputs)[batch.scored], batch.targets[batch.scored])
    rows, cols = batch.scored.nonzero(as_tuple=True)
    assert torch.equal(batch.inputs[rows, cols - batch.lags[rows, cols]], batch.targets[rows, cols])
    assert (batch.lags[~batch.scored] == NO_LAG).all()


def test_multi_turn_qa_render_is_one_turn_per_line():
    task = get_task("multi_turn_qa")
    batch = task.sample(1, 128, seed=0)
    lines = task.render(batch).splitlines()
    assert len(lines) == 128 // qa.TURN_LEN + 1 and lines[-1] == "(padding: 3 tokens)"
    assert all(line.startswith(("USER: ", "BOT: ")) for line in lines[:-1])
    questions = [line for line in lines if "what" in line]
    assert questions and all(line.startswith("USER: what is E") and " -> V" in line for line in questions)
    assert all(line.endswith("]") for line in questions)
    assert len(questions) == int(batch.scored.sum())


def test_multi_turn_qa_worked_example_is_what_the_generator_makes():
    task = get_task("multi_turn_qa", num_entities=2, num_attributes=2, num_values=4, num_words=4)
    for line in task.render(task.sample(1, 27, seed=78)).splitlines():
        assert f"        {line}\n" in qa.MultiTurnQA.__doc__


def test_show_prints_a_dialogue(capsys):
    assert main(["show", "multi_turn_qa", "--length", "128"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("multi_turn_qa v1") and out[1].startswith("USER: ")
    assert sum(line.startswith(("USER: ", "BOT: ")) for line in out) == 128 // qa.TURN_LEN




def test_bad_param_on_the_command_line_is_one_line_and_exit_2(capsys):
    assert main(["show", "multi_turn_qa", "--param", "chat_prob=2"]) == 2
    assert capsys.readouterr().err.startswith("membench: error: chat_prob must be a probability")
