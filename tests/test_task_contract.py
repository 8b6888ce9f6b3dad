"""Contract tests run over every registered task: a task registered with @register_task is tested here
with no new test written."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from membench.checks import ConfigError, check_int
from membench.memtasks import IGNORE, NO_LAG, Task, UnknownNameError, get_task, list_tasks, param, task_class
from tests.helpers import DEVICES

TASKS = list_tasks()


def shortest(name: str) -> int:
    return get_task(name).min_length()


def lengths_for(name: str) -> list[int]:
    """Several lengths including odd ones, all valid for the default params."""
    base = shortest(name)
    return sorted({base, base + 1, base + 7, 2 * base + 3, max(64, base) + 1, 4 * base + 1})


def batches_at_every_length(name: str, batch_size: int, seed: int, device: str):
    """(task, seq_len, batch): the task at its default params, sampled at each of `lengths_for(name)`."""
    task = get_task(name)
    for seq_len in lengths_for(name):
        yield task, seq_len, task.sample(batch_size, seq_len, seed=seed, device=device)


def test_the_four_tasks_are_registered():
    assert {"copy", "associative_recall", "delayed_match", "multi_turn_qa"} <= set(TASKS)


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize("device", DEVICES)
def test_shapes_dtypes_ranges(name, device):
    for task, seq_len, batch in batches_at_every_length(name, 8, seed=1, device=device):
        for tensor in (batch.inputs, batch.targets, batch.lags):
            assert tensor.shape == (8, seq_len) and tensor.dtype == torch.int64
            assert tensor.device.type == torch.device(device).type
        assert int(batch.inputs.min()) >= 0 and int(batch.inputs.max()) < task.vocab_size
        scored = batch.scored
        assert scored.any(dim=1).all(), f"{name} at length {seq_len}: an example has no scored position"
        assert int(batch.targets[scored].min()) >= 0 and int(batch.targets[scored].max()) < task.vocab_size
        assert (batch.lags[scored] >= 1).all()
        assert (batch.lags[~scored] == NO_LAG).all() and (batch.targets[~scored] == IGNORE).all()


@pytest.mark.parametrize("name", TASKS)
def test_generation_off_the_cpu_never_syncs_with_the_host(name):
    """On an accelerator a generator must not read values back (it would stall every training step): the
    meta device has shapes but no values, so any such read fails there."""
    task = get_task(name)
    seq_len = max(64, shortest(name)) + 3
    batch = task._generate(8, seq_len, None, torch.device("meta"))
    assert batch.inputs.shape == batch.targets.shape == batch.lags.shape == (8, seq_len)


@pytest.mark.parametrize("name", TASKS)
def test_same_seed_same_bytes_different_seed_differs(name):
    task = get_task(name)
    seq_len = max(64, shortest(name))
    a, b, c = (task.sample(16, seq_len, seed=s) for s in (7, 7, 8))
    for x, y in ((a.inputs, b.inputs), (a.targets, b.targets), (a.lags, b.lags)):
        assert torch.equal(x, y)
    assert not torch.equal(a.inputs, c.inputs)
    # a fresh task object with the same params gives the same bytes too
    again = get_task(name, **task.params()).sample(16, seq_len, seed=7)
    assert torch.equal(a.inputs, again.inputs) and torch.equal(a.targets, again.targets)


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize("device", DEVICES)
def test_solver_agrees_with_every_label_at_default_params(name, device):
    for task, _, batch in batches_at_every_length(name, 32, seed=3, device=device):
        solved = task.solve(batch.inputs)
        assert solved.shape == batch.inputs.shape
        assert torch.equal(solved[batch.scored], batch.targets[batch.scored])


@pytest.mark.parametrize("name", TASKS)
def test_lags_point_at_the_evidence(name):
    task = get_task(name)
    batch = task.sample(32, max(64, shortest(name)) + 5, seed=4)
    rows, cols = batch.scored.nonzero(as_tuple=True)
    evidence = cols - batch.lags[rows, cols]
    assert (evidence >= 0).all(), "a lag points before the start of the sequence"
    if task.recalls_token:
        assert torch.equal(batch.inputs[rows, evidence], batch.targets[rows, cols])


@pytest.mark.parametrize("name", TASKS)
def test_memory_is_necessary(name):
    """A predictor that sees only the current token (best guess per token, fitted on one batch and scored
    on another) must do no better than a constant guess: no task leaks its answer locally."""
    task = get_task(name)
    seq_len = max(64, shortest(name))
    fit, held_out = task.sample(256, seq_len, seed=10), task.sample(256, seq_len, seed=11)

    def scored_pairs(batch):
        return pd.DataFrame({"cur": batch.inputs[batch.scored].numpy(), "tgt": batch.targets[batch.scored].numpy()})

    fitted = scored_pairs(fit)
    per_token_guess = fitted.groupby("cur")["tgt"].agg(lambda t: t.value_counts().idxmax())
    constant_guess = fitted["tgt"].value_counts().idxmax()
    scored = scored_pairs(held_out)
    local_acc = (scored["cur"].map(per_token_guess).fillna(constant_guess) == scored["tgt"]).mean()
    constant_acc = (scored["tgt"] == constant_guess).mean()
    assert local_acc <= constant_acc + 0.05, (
        f"{name}: a current-token-only predictor scores {local_acc:.3f} vs constant {constant_acc:.3f}"
    )


@st.composite
def task_case(draw, name):
    """A valid (params, seq_len, seed) for task `name`: booleans drawn freely, each positive integer param
    either left at its default or drawn from [1, 2 * default]; combinations the task rejects are discarded."""
    cls = task_class(name)
    params = {}
    for field in dataclasses.fields(cls):
        default = field.default
        if isinstance(default, bool):
            params[field.name] = draw(st.booleans())
        elif isinstance(default, int) and default > 0 and draw(st.booleans()):
            params[field.name] = draw(st.integers(1, 2 * default))
    try:
        task = cls(**params)
    except ValueError:
        assume(False)
    seq_len = draw(st.integers(task.min_length(), task.min_length() * 4 + 40))
    seed = draw(st.integers(0, 2**40))
    return params, seq_len, seed


@pytest.mark.parametrize("name", TASKS)
def test_solver_agrees_under_random_lengths_params_and_seeds(name):
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(task_case(name))
    def check(case):
        params, seq_len, seed = case
        task = get_task(name, **params)
        try:
            task.check_length(seq_len)
        except ValueError:  # a length-dependent limit (e.g. too many pairs for this length)
            assume(False)
        batch = task.sample(4, seq_len, seed=seed)
        assert batch.scored.any(dim=1).all()
        assert torch.equal(task.solve(batch.inputs)[batch.scored], batch.targets[batch.scored])

    check()


@pytest.mark.parametrize("name", TASKS)
def test_render_marks_scored_positions(name):
    task = get_task(name)
    batch = task.sample(2, max(64, shortest(name)), seed=0)
    text = task.render(batch, 1)
    assert isinstance(text, str) and text.strip()
    assert task.token_name(int(batch.targets[1][batch.scored[1]][0])) in text


@pytest.mark.parametrize("name", TASKS)
def test_metadata(name):
    cls = task_class(name)
    assert isinstance(cls.version, int) and cls.version >= 1
    assert cls.description and "\n" not in cls.description
    assert cls.__doc__ and ("->" in cls.__doc__ or "|" in cls.__doc__), "docstring needs a worked example"
    assert get_task(name).vocab_size >= 2


@pytest.mark.parametrize("name", TASKS)
def test_bad_input_is_rejected_with_clear_messages(name):
    task = get_task(name)
    with pytest.raises(ValueError, match="no_such_param"):
        get_task(name, no_such_param=1)
    with pytest.raises(ValueError, match="seq_len"):
        task.sample(2, task.min_length() - 1 if task.min_length() > 1 else 0, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        task.sample(0, 64, seed=0)
    for field in dataclasses.fields(task_class(name)):
        if isinstance(field.default, int) and not isinstance(field.default, bool) and field.default > 0:
            with pytest.raises(ValueError, match=field.name):
                get_task(name, **{field.name: -1})


BAD_PARAMS = [  # (task, params, what its one-line error says): each task names the parameter it refuses
    ("delayed_match", {"pattern_len": 0}, "pattern_len must be an integer >= 1"),
    ("delayed_match", {"pattern_len": 2.5}, "pattern_len"),
    ("delayed_match", {"num_symbols": 1}, "num_symbols must be an integer >= 2"),
    ("delayed_match", {"num_symbols": True}, "num_symbols"),
    ("delayed_match", {"num_trials": 0}, "num_trials must be an integer >= 1 or None"),
    ("delayed_match", {"delay": -1}, "delay must be an integer >= 0 or None"),
    ("delayed_match", {"delay": "long"}, "delay"),
    ("multi_turn_qa", {"num_entities": 0}, "num_entities must be an integer >= 1"),
    ("multi_turn_qa", {"num_attributes": 1.0}, "num_attributes"),
    ("multi_turn_qa", {"num_values": 1}, "num_values must be an integer >= 2"),
    ("multi_turn_qa", {"num_words": 0}, "num_words"),
    ("multi_turn_qa", {"chat_prob": 1.5}, r"chat_prob must be a probability in \[0, 1\]"),
    ("multi_turn_qa", {"ask_prob": -0.1}, "ask_prob"),
    ("multi_turn_qa", {"update_prob": "often"}, "update_prob"),
    ("multi_turn_qa", {"chat_prob": 0.5, "ask_prob": 0.5}, r"chat_prob \+ ask_prob must be < 1"),
    ("flip_flop", {"p_write": 0.0}, "p_write"),
    ("flip_flop", {"p_read": 1.0}, "p_read"),
    ("flip_flop", {"p_write": 0.6, "p_read": 0.5}, r"p_write \+ p_read"),
    ("state_tracking", {"group": "S4"}, "group"),
    ("state_tracking", {"group": "cyclic"}, "modulus"),
    ("state_tracking", {"group": "cyclic", "modulus": 1}, "modulus"),
    ("state_tracking", {"group": "S5", "modulus": 5}, "only for group='cyclic'"),
    ("state_tracking", {"group": "cyclic", "modulus": 2000}, "modulus"),
    ("state_tracking", {"score": "first"}, "score"),
    ("n_back", {"n": 0}, "n must"),
    ("n_back", {"match_prob": 1.0}, "match_prob"),
    ("n_back", {"num_symbols": 1}, "num_symbols"),
    ("associative_recall", {"num_kv_pairs": 0}, r"num_kv_pairs must be an integer >= 1 or None \(grows with seq_len\)"),
    ("associative_recall", {"power_a": 0}, r"power_a must be a number > 0 \(0.01 as Zoology"),
    ("fuzzy_recall", {"vocab_size": 3}, "vocab_size must be an integer >= 4"),  # a redeclared field keeps its rule
    ("noisy_recall", {"vocab_size": 4}, "vocab_size must be an integer >= 5"),
    ("noisy_recall", {"frac_noise": 1.0}, r"frac_noise must be a number in \[0, 1\)"),
    ("copy", {"noise": 1}, "noise must be true or false"),
]


@pytest.mark.parametrize("name,params,fragment", BAD_PARAMS)
def test_bad_params_are_refused_naming_them(name, params, fragment):
    with pytest.raises(ValueError, match=fragment):
        get_task(name, **params)


def test_each_param_is_checked_by_its_own_rule_before_the_rules_between_params():
    @dataclasses.dataclass
    class Ordered(Task):
        low: int = param(1, check_int, 0)
        high: int = param(2, check_int, 0)
        free: object = "anything"  # a plain field: no rule

        def check_params(self) -> None:
            if self.low > self.high:
                raise ConfigError(f"low={self.low} must be <= high={self.high}")

    with pytest.raises(ConfigError, match="^low must be an integer >= 0, got -1$"):
        Ordered(low=-1, high=-2)  # field order: low's own rule first
    with pytest.raises(ConfigError, match="^high must be an integer >= 0, got -1$"):
        Ordered(low=3, high=-1)  # high's own rule before the rule between them
    with pytest.raises(ConfigError, match="^low=3 must be <= high=2$"):
        Ordered(low=3)
    assert Ordered(free=None).params() == {"low": 1, "high": 2, "free": None}


def test_unknown_task_suggests_the_closest_names():
    with pytest.raises(UnknownNameError, match="did you mean 'associative_recall'"):
        get_task("associative_recal")
