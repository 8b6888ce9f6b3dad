"""`pretrained:` models (models/pretrained.py) scored on tasks rendered as text (runners/pretrained_eval.py).

No network: tiny GPT-2 and Llama models (width 32) and a byte-level tokenizer made with `tokenizers` are saved to
a temporary folder and loaded back by path. A random model must score near chance; an oracle that predicts the
true next token scores 1.0, and one that predicts the input itself (the bug of scoring the input instead of the
prediction) scores near 0; bad checkpoints are one line, exit 2, nothing written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from membench.checks import ConfigError
from membench.memtasks import TASKS, get_task
from membench.runners.trial import EvalSlice
from tests.helpers import run_cli, tiny_spec, undo_plugin_side_effects  # noqa: F401 (autouse)

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

CPU = torch.device("cpu")


def byte_tokenizer():
    """Every byte one token (a byte-level BPE without merges), "<s>" (id 0) put first: offsets are exact."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, processors

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = tokenizers.Tokenizer(models.BPE(vocab={"<s>": 0, **{c: i + 1 for i, c in enumerate(alphabet)}},
                                              merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>")


def save_checkpoint(folder: Path, kind: str = "gpt2", positions: int = 256, tokenizer: bool = True) -> Path:
    """A randomly initialised causal LM (or, kind "bert", a masked LM) of width 32, saved with save_pretrained."""
    torch.manual_seed(0)
    vocab = 257
    if kind == "gpt2":
        config = transformers.GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=positions,
                                         bos_token_id=0, eos_token_id=0)
        model = transformers.GPT2LMHeadModel(config)
    elif kind == "llama":
        config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                          max_position_embeddings=positions, bos_token_id=0, eos_token_id=0)
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=64)
        model = transformers.BertForMaskedLM(config)
    model.save_pretrained(folder)
    if tokenizer:
        byte_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory) -> str:
    return "pretrained:" + str(save_checkpoint(tmp_path_factory.mktemp("gpt2")))


def build(name: str, **params):
    from membench.models import build_model

    return build_model(name, 16, **params)


def score(model, task: str, seq_len: int = 16, n: int = 16, shots: int = 0, **task_params):
    from membench.runners.pretrained_eval import evaluate_text_slice

    return evaluate_text_slice(model, get_task(task, **task_params), EvalSlice(f"L{seq_len}", seq_len, n), 8, 0,
                               shots, CPU)


# --- loading and its errors ---------------------------------------------------------------------------------
def test_a_folder_resolves_to_its_checkpoint_size_and_params(gpt2):
    from membench.models import family_params, model_class

    cls = model_class(gpt2)
    assert cls.checkpoint_size() == (32, 2) and cls.cost_class == "O(n^2)"
    assert set(family_params(gpt2)) == {"dtype", "revision", "attn_implementation", "trust_remote_code",
                                        "chat_template", "rendering"}
    model = build(gpt2)
    assert model.max_positions == 256 and model.rendering == "readable"
    assert model.num_params() == sum(p.numel() for p in model.lm.parameters())
    assert model.state_size(10) == 2 * 32 * 10 * 2  # keys and values, 32 wide, 10 tokens, 2 layers


def bad_checkpoint(kind: str, root: Path) -> str:
    if kind == "missing":
        return f"pretrained:{root / 'no_such_folder'}"
    if kind == "no tokenizer":
        return f"pretrained:{save_checkpoint(root / 'bare', tokenizer=False)}"
    if kind == "masked LM":
        return f"pretrained:{save_checkpoint(root / 'bert', kind='bert')}"
    return "pretrained:membench-tests/no-such-model"  # a hub id, offline


@pytest.mark.parametrize("kind, says", [("missing", "no such folder"), ("no tokenizer", "has no tokenizer"),
                                        ("masked LM", "BertForMaskedLM, not a causal language model"),
                                        ("hub id offline", "not a local folder, and the hub did not give it")])
def test_a_bad_checkpoint_is_one_line_exit_2_and_nothing_written(kind, says, tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # an empty cache
    name = bad_checkpoint(kind, tmp_path)
    capsys.readouterr()  # what saving the checkpoint printed
    spec = tiny_spec(tmp_path, models=[name], steps=0, tasks=["flip_flop"])
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "run", "--spec", spec, "--out", str(out), "--quiet")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("membench: error: ") and says in lines[0], err
    assert not out.exists()


def test_steps_say_which_models_train(gpt2, tmp_path):
    from membench.runners.spec import load_spec

    with pytest.raises(ConfigError, match="steps = 0 evaluates without training"):
        load_spec(spec_file=tiny_spec(tmp_path, models=["lstm"], steps=0, tasks=["flip_flop"]))
    mixed = load_spec(spec_file=tiny_spec(tmp_path, models=["lstm", gpt2], steps=5, tasks=["flip_flop"]))
    assert {(t.model, t.steps) for t in mixed.trials} == {("lstm", 5), (gpt2, 0)}  # top-level steps: the families'
    with pytest.raises(ConfigError, match="save_model writes Hugging Face folders of hf: models only"):
        load_spec(spec_file=tiny_spec(tmp_path, models=["lstm"], save_model=True, tasks=["flip_flop"]))
    trials = load_spec(spec_file=tiny_spec(tmp_path, models=[gpt2], steps=0, shots=2, tasks=["flip_flop"])).trials
    assert {(t.d_model, t.n_layers, t.steps, t.shots) for t in trials} == {(32, 2, 0, 2)}


def test_membench_plan_counts_a_checkpoint_without_loading_its_weights(gpt2, tmp_path, capsys):
    spec = tiny_spec(tmp_path, models=["lstm", gpt2], tasks=["flip_flop"])
    code, out, err = run_cli(capsys, "plan", "--spec", spec)
    assert code == 0, err
    assert gpt2 in out and "lstm" in out


def test_membench_check_runs_the_checkpoint_contract(gpt2, capsys):
    code, out, err = run_cli(capsys, "check", gpt2)
    assert code == 0, err
    assert "4 of 4 checks pass or skip, 0 failed" in out and "causal" in out and "scores a task" in out


def test_steps_in_its_own_table_fine_tune_it(gpt2, tmp_path, capsys):
    """The answer tokens' loss falls during fine-tuning, and the fine-tuned model's evaluation loss is below the
    zero-shot one; the rows record the steps taken."""
    spec = tmp_path / "tune.toml"
    spec.write_text(f'tasks = ["flip_flop"]\nlengths = [8]\neval_multipliers = []\neval_sequences = 16\n'
                    f'batch_size = 8\nlearning_rates = [0.003]\nlog_every = 10\nsteps = 1000\n'
                    f'[models.gpt]\nmodel = "{gpt2}"\nsteps = 40\n')
    code, _, err = run_cli(capsys, "run", "--spec", str(spec), "--out", str(tmp_path / "out"), "--quiet")
    assert code == 0, err
    runs, curves = (pd.read_csv(tmp_path / "out" / f"{t}.csv") for t in ("runs", "curves"))
    assert list(runs["steps"]) == [40] and runs["train_seconds"].iloc[0] > 0 and list(runs["status"]) == ["ok"]
    assert list(curves["step"]) == [10, 20, 30, 40]
    assert curves["train_loss"].iloc[-1] < 0.5 * curves["train_loss"].iloc[0]
    assert runs["loss"].iloc[0] < score(build(gpt2), "flip_flop", 8).loss


# --- scoring ------------------------------------------------------------------------------------------------
def test_a_random_model_scores_near_chance(gpt2):
    """Its argmax is almost never a whole answer (scoring the input itself would give 1.0), and its choice
    among flip_flop's two bits is right about half the time."""
    result = score(build(gpt2), "flip_flop", 32, n=24)
    assert result.status == "ok" and result.scored >= 60
    assert result.accuracy < 0.2
    assert abs(result.accuracy_choice - get_task("flip_flop").chance_level) < 0.2


class Oracle:
    """A model whose logits at t put all the weight on token t + 1 + `shift` of the true text: shift 0 is a
    perfect next-token predictor; shift -1 predicts the token it reads (the input, not the prediction)."""

    def __init__(self, real, shift: int) -> None:
        self.tokenizer, self.rendering, self.chat_template = real.tokenizer, "readable", False
        self.max_positions, self.lm, self.shift = None, real.lm, shift

    def logits(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        picked = ids[:, (positions + 1 + self.shift).clamp(max=ids.shape[1] - 1)]  # (B, K)
        return torch.nn.functional.one_hot(picked, len(self.tokenizer)).float() * 20  # (B, K, V)

    def read_prefix(self, ids: torch.Tensor) -> None:
        return None  # no cache: longer candidates take the reference path

    def state_size(self, seq_len: int) -> None:
        return None


def test_an_oracle_scores_one_and_reading_the_input_scores_near_zero(gpt2):
    real = build(gpt2)
    perfect = score(Oracle(real, 0), "flip_flop", 16)
    assert (perfect.accuracy, perfect.exact_match, perfect.accuracy_choice) == (1.0, 1.0, 1.0)
    assert perfect.loss < 1e-6
    echo = score(Oracle(real, -1), "associative_recall", 16)
    assert echo.accuracy < 0.1


def test_longer_choices_read_from_a_kv_cache_equal_their_reference(gpt2):
    """Candidates of two or more tokens ("v12", "v3" with a byte tokenizer) continue from the cache of the prefix,
    cut back answer by answer; the scores equal one plain forward of prefix + candidate each."""
    from membench.memtasks.text import render_text
    from membench.runners.pretrained_eval import (
        Tokeniser,
        _Tally,
        choice_scores_reference,
        longer_choice_scores,
    )

    model, task = build(gpt2), get_task("associative_recall")
    sequence = Tokeniser(model.tokenizer)(render_text(task, task.sample(1, 24, seed=5)))
    assert len(sequence.answers) >= 2 and any(len(c) > 1 for c in sequence.answers[0].choices)
    ids = torch.tensor([sequence.ids])
    with torch.no_grad():
        firsts = [model.logits(ids, torch.tensor([a.first - 1]))[0, 0].log_softmax(-1) for a in sequence.answers]
        cached = longer_choice_scores(model, sequence, list(zip(sequence.answers, firsts)), CPU, _Tally())
        plain = [choice_scores_reference(model, sequence, a, CPU, _Tally()) for a in sequence.answers]
    assert torch.allclose(torch.tensor(cached), torch.tensor(plain), atol=1e-4)


def test_a_chat_template_wraps_the_text_and_the_answers_follow_it(gpt2):
    """With chat_template the text sits inside the template's turn: the answers' offsets move with it, so the
    oracle still scores 1.0 (a shift not applied would score the template's characters instead)."""
    oracle = Oracle(build(gpt2), 0)
    oracle.tokenizer = byte_tokenizer()
    oracle.tokenizer.chat_template = "{% for m in messages %}[user] {{ m['content'] }} [end]{% endfor %}"
    oracle.chat_template = True
    plain = score(Oracle(build(gpt2), 0), "flip_flop", 16)
    wrapped = score(oracle, "flip_flop", 16)
    assert (wrapped.accuracy, wrapped.accuracy_choice) == (1.0, 1.0)
    assert wrapped.context_tokens == plain.context_tokens + len("[user] ") + len(" [end]") - 1  # no BOS added
    with pytest.raises(ConfigError, match="has no chat template"):
        build(gpt2, chat_template=True)


def test_shots_come_first_and_only_the_example_is_scored(gpt2):
    model = build(gpt2)
    alone, with_one = score(model, "flip_flop", 8, n=8), score(model, "flip_flop", 8, n=8, shots=1)
    assert with_one.status == "ok" and with_one.scored == alone.scored
    assert with_one.context_tokens > 1.8 * alone.context_tokens  # a solved example and the example


def test_a_length_beyond_the_positions_is_skipped(gpt2):
    result = score(build(gpt2), "flip_flop", 128, n=4)
    assert result.status == "skipped" and "beyond max_position_embeddings" in result.error
    assert result.context_tokens > 256


def test_a_llama_checkpoint_reads_with_its_kv_cache_per_token(tmp_path):
    model = build("pretrained:" + str(save_checkpoint(tmp_path / "llama", "llama", positions=512)))
    result = score(model, "associative_recall", 16, n=4)
    assert result.status == "ok" and result.scored > 0 and 0 <= result.accuracy_choice <= 1
    assert result.kv_cache_bytes_per_token == 2 * 2 * 8 * 2 * 4  # K and V, 2 kv heads of 8, 2 layers, fp32
    assert result.read_tokens_per_second > 0 and set(result.token_lags) and set(result.lags)


def own_code_checkpoint(folder: Path) -> Path:
    """A GPT-2 saved as a model type transformers does not have, "tinyc", whose config and model classes are
    Python files in the folder that its config's auto_map names: it loads only with trust_remote_code."""
    save_checkpoint(folder)
    (folder / "configuration_tinyc.py").write_text(
        "from transformers import GPT2Config\n\n\nclass TinyCConfig(GPT2Config):\n    model_type = 'tinyc'\n")
    (folder / "modeling_tinyc.py").write_text(
        "from transformers import GPT2LMHeadModel\n\nfrom .configuration_tinyc import TinyCConfig\n\n\n"
        "class TinyCForCausalLM(GPT2LMHeadModel):\n    config_class = TinyCConfig\n")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="tinyc", architectures=["TinyCForCausalLM"],
                  auto_map={"AutoConfig": "configuration_tinyc.TinyCConfig",
                            "AutoModelForCausalLM": "modeling_tinyc.TinyCForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("trust", [True, False])
def test_a_checkpoint_with_its_own_code_runs_only_when_its_table_trusts_it(trust, tmp_path, capsys, monkeypatch):
    from transformers import dynamic_module_utils

    modules = tmp_path / "hf_modules"  # where transformers copies the checkpoint's code: not the user's cache
    monkeypatch.setenv("HF_MODULES_CACHE", str(modules))
    monkeypatch.setattr(dynamic_module_utils, "HF_MODULES_CACHE", str(modules))
    folder = own_code_checkpoint(tmp_path / "tinyc")
    capsys.readouterr()  # what saving the checkpoint printed
    spec = tiny_spec(tmp_path, models=None, steps=0, tasks=["flip_flop"], lengths=[16], eval_multipliers=[],
                     eval_sequences=8)
    Path(spec).write_text(Path(spec).read_text() + f'[models.tinyc]\nmodel = "pretrained:{folder}"\n'
                          f"params = {{ trust_remote_code = {str(trust).lower()} }}\n")
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "run", "--spec", spec, "--out", str(out), "--quiet")
    if not trust:
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "set trust_remote_code = true" in lines[0], err
        assert not out.exists()
        return
    assert code == 0, err
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["status"]) == ["ok"] and runs["d_model"].tolist() == [32] and runs["scored"].gt(0).all()


# --- a sweep: rows like any family's ------------------------------------------------------------------------
def test_a_zero_shot_sweep_writes_rows_like_any_familys(gpt2, tmp_path, capsys):
    spec = tiny_spec(tmp_path, models=[gpt2], steps=0, tasks=["flip_flop"], lengths=[16, 128], eval_multipliers=[],
                     eval_sequences=8)
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "run", "--spec", spec, "--out", str(out), "--quiet")
    assert code == 0, err
    runs = pd.read_csv(out / "runs.csv").set_index("eval_len")
    assert list(runs["status"].sort_index()) == ["ok", "skipped"]
    ok, skipped = runs.loc[16], runs.loc[128]
    assert ok["model"] == gpt2 and ok["steps"] == 0 and ok["params"] == build(gpt2).num_params()
    assert ok["context_tokens"] > 16 and ok["chance_level"] == 0.5 and 0 <= ok["accuracy_choice"] <= 1
    assert ok["read_tokens_per_second"] > 0 and ok["kv_cache_bytes_per_token"] == 2 * 32 * 2 * 4
    assert "beyond max_position_embeddings" in skipped["error"] and math.isnan(skipped["accuracy"])
    lags = pd.read_csv(out / "lags.csv")
    assert set(lags["lag_unit"]) == {"symbols", "tokens"}
    for unit in ("symbols", "tokens"):
        assert lags.loc[lags["lag_unit"] == unit, "count"].sum() == ok["scored"]
    trial = json.loads(next((out / "trials").glob("*.json")).read_text())
    assert trial["config"]["shots"] == 0
    from membench.runners.reporting.charts import Sweep, accuracy_vs_context_tokens
    from membench.runners.reporting.leaderboard import build_leaderboard, leaderboard_markdown
    from membench.runners.reporting.results import read_results

    results = read_results(out)
    assert [p.name for p in accuracy_vs_context_tokens(Sweep.from_results(results), tmp_path)] == [
        "accuracy_vs_context_tokens.png", "accuracy_vs_context_tokens.svg"]
    board, tasks = build_leaderboard(results.runs)
    assert list(board["kind"]) == ["pretrained"]
    assert "evaluated as they are" in leaderboard_markdown(board, tasks, results.runs)


BUILT_IN_TASKS = sorted(TASKS.names())  # at import: before any test registers a task of its own


def test_every_task_is_read_zero_shot_at_two_lengths(tmp_path, capsys):
    """The bar of the issue: one checkpoint, every built-in task at two lengths, rows like any family's."""
    model = "pretrained:" + str(save_checkpoint(tmp_path / "gpt2", positions=4096))
    lengths = {name: max(8, get_task(name).min_length()) for name in BUILT_IN_TASKS}
    spec = tiny_spec(tmp_path, {name: {"lengths": [n, 2 * n]} for name, n in lengths.items()}, models=[model],
                     steps=0, tasks=None, eval_multipliers=[], eval_sequences=4)
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "run", "--spec", spec, "--out", str(out), "--quiet")
    assert code == 0, err
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(set(runs["task"])) == BUILT_IN_TASKS and (runs["status"] == "ok").all()
    for name, group in runs.groupby("task"):
        assert sorted(group["eval_len"]) == [lengths[name], 2 * lengths[name]]
        assert (group["context_tokens"] > group["eval_len"]).all()  # a word per symbol, a byte per token
        assert (group["chance_level"] == get_task(name).chance_level).all() and (group["steps"] == 0).all()
        assert group["accuracy"].between(0, 1).all() and (group["scored"] > 0).all()
    lags = pd.read_csv(out / "lags.csv")
    assert set(lags["lag_unit"]) == {"symbols", "tokens"} and set(lags["task"]) == set(BUILT_IN_TASKS)
