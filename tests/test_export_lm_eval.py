"""`membench export lm-eval`: the files' fields, bad input, and (where lm_eval is installed) the harness run
offline on a tiny local model, scoring every document as a greedy decode with transformers does."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
import torch

from membench.memtasks import eval_seed, get_task
from membench.memtasks.text import render_text
from membench.runners.commands.export import FIRST_WORD, STOP
from tests.helpers import run_cli


def exported(capsys, out, *argv):
    code, printed, err = run_cli(capsys, "export", "lm-eval", *argv, "--out", str(out))
    assert code == 0, err
    return printed.split()


def read_docs(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_document_per_scored_answer_holding_the_true_prefix(capsys, tmp_path):
    out = tmp_path / "tasks"
    printed = exported(capsys, out, "--tasks", "associative_recall,flip_flop", "--lengths", "24,40",
                       "--examples", "3", "--seed", "5")
    stems = [f"membench_{t}_L{n}" for t in ("associative_recall", "flip_flop") for n in (24, 40)]
    assert printed == [str(out / f"{s}.{ext}") for s in stems for ext in ("jsonl", "yaml")]
    for name, length in (("associative_recall", 24), ("associative_recall", 40), ("flip_flop", 40)):
        task = get_task(name)
        docs = read_docs(out / f"membench_{name}_L{length}.jsonl")
        batch = task.sample(3, length, seed=eval_seed(5, 0))
        assert len(docs) == int(batch.scored.sum())
        for doc in docs:
            full = render_text(task, batch, doc["example"]).text  # the instruction and every answer, right
            assert full.startswith(doc["text"]) and doc["text"] == doc["text"].rstrip()
            rest = full[len(doc["text"]):]
            assert re.match(rf"\s+{re.escape(doc['target'])}(\s|$)", rest), rest[:20]  # the answer, a whole word
            target_id = int(batch.targets[doc["example"], doc["position"]])
            assert doc["target"] == task.token_name(target_id) and doc["target"] in doc["candidates"]
            assert doc["lag"] == int(batch.lags[doc["example"], doc["position"]])


def test_the_task_yaml_names_its_documents_and_scores_exact_match_of_the_first_word(capsys, tmp_path):
    yaml = pytest.importorskip("yaml")
    out = tmp_path / "tasks"
    exported(capsys, out, "--tasks", "delayed_match", "--lengths", "32", "--examples", "2")
    config = yaml.safe_load((out / "membench_delayed_match_L32.yaml").read_text())
    docs = read_docs(out / "membench_delayed_match_L32.jsonl")
    assert config["task"] == "membench_delayed_match_L32" and config["dataset_path"] == "json"
    assert config["dataset_kwargs"]["data_files"] == {"test": str((out / "membench_delayed_match_L32.jsonl").resolve())}
    assert config["test_split"] == "test" and config["output_type"] == "generate_until"
    assert (config["doc_to_text"], config["doc_to_target"]) == ("text", "target") and {"text", "target"} <= set(docs[0])
    generation = config["generation_kwargs"]
    assert generation["until"] == ["\n\n"] and generation["do_sample"] is False
    assert generation["max_gen_toks"] == max(len(d["target"]) for d in docs) + 1  # "no": 3 tokens at most
    steps = config["filter_list"][0]["filter"]
    assert steps[0] == {"function": "regex", "regex_pattern": r"^\s*(\S+)"} and steps[1]["function"] == "take_first"
    assert config["metric_list"][0]["metric"] == "exact_match"
    assert config["metadata"]["version"] == get_task("delayed_match").version


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "copy,nope", "--lengths", "32"], "nope"),
    (["--tasks", "copy", "--lengths", "32,1"], "seq_len=1 is too short"),
    (["--tasks", "copy", "--lengths", "32", "--examples", "0"], "--examples must be a positive integer"),
    (["--tasks", "copy", "--lengths", "32", "--seed", "1.5"], "--seed must be an integer"),
    (["--tasks", "", "--lengths", "32"], "--tasks needs at least one task"),
    (["--tasks", "copy", "--lengths", "1048576", "--examples", "2000"], "is above the limit"),
])
def test_bad_input_is_one_line_and_writes_nothing(capsys, tmp_path, argv, message):
    code, _, err = run_cli(capsys, "export", "lm-eval", *argv, "--out", str(tmp_path / "tasks"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "tasks").exists()


# --- the harness itself, offline, on a tiny local model ------------------------------------------------------
def tiny_model(folder, corpus: list[str], steps: int):
    """A GPT-2 of width 32 and a byte-level BPE tokenizer (the tokenizers library) trained on `corpus`, the model
    fitted for `steps` steps on it (so that it answers some documents right), saved to `folder`."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    bpe.train_from_iterator(corpus, tokenizers.trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", pad_token="<eos>")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=256,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = [torch.tensor([tokenizer(text)["input_ids"]]) for text in corpus]
    for step in range(steps):
        x = ids[step % len(ids)]
        model(x, labels=x).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def greedy_first_words(model, tokenizer, docs: list[dict], max_tokens: int) -> list[tuple[str, list[int]]]:
    """Each document's prompt decoded greedily with transformers: (the first word written, the tokens)."""
    found = []
    for doc in docs:
        prompt = torch.tensor([tokenizer(doc["text"])["input_ids"]])
        with torch.no_grad():
            out = model.generate(prompt, max_new_tokens=max_tokens, do_sample=False, pad_token_id=0)
        tokens = out[0, prompt.shape[1]:].tolist()
        text = tokenizer.decode(tokens, skip_special_tokens=True).split(STOP)[0]
        match = re.findall(FIRST_WORD, text)
        found.append((match[0] if match else "[invalid]", tokens))
    return found


@pytest.mark.slow
def test_lm_eval_scores_each_document_as_a_greedy_decode_does(capsys, tmp_path, monkeypatch):
    lm_eval = pytest.importorskip("lm_eval")
    pytest.importorskip("accelerate")  # lm_eval's hf model imports it
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(variable, "1")
    task = get_task("flip_flop")
    batch = task.sample(24, 24, seed=1)
    model, tokenizer = tiny_model(tmp_path / "model", [render_text(task, batch, i).text for i in range(24)], 60)
    out = tmp_path / "tasks"
    exported(capsys, out, "--tasks", "flip_flop", "--lengths", "24", "--examples", "4")
    stem = "membench_flip_flop_L24"
    docs = read_docs(out / f"{stem}.jsonl")
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={tmp_path / 'model'},dtype=float32", tasks=[stem], device="cpu",
        task_manager=TaskManager(include_path=str(out), include_defaults=False), batch_size=1, log_samples=True)
    samples = sorted(results["samples"][stem], key=lambda s: s["doc_id"])
    harness = [(s["filtered_resps"][0], float(s["exact_match"])) for s in samples]
    greedy = greedy_first_words(model, tokenizer, docs, max(len(d["target"]) for d in docs) + 1)
    assert [word for word, _ in harness] == [word for word, _ in greedy]
    assert [right for _, right in harness] == [float(word == d["target"]) for (word, _), d in zip(greedy, docs)]
    assert 0 < sum(right for _, right in harness) < len(docs), "the check needs documents right and wrong"
    if importlib.util.find_spec("membench.runners.pretrained_eval") is None:
        return  # the pretrained scorer is not there to compare with
    # membench's teacher-forced scoring: right exactly when the greedy decode writes the gold's own tokens
    forced = teacher_forced(model, tokenizer, task, task.sample(4, 24, seed=eval_seed(0, 0)), docs)
    assert [right for right, _ in forced] == [tuple(tokens[:len(gold)]) == gold for (_, tokens), (_, gold)
                                              in zip(greedy, forced)]
    assert [float(right) for right, _ in forced] == [right for _, right in harness]


def teacher_forced(model, tokenizer, task, batch, docs: list[dict]) -> list[tuple[bool, tuple[int, ...]]]:
    """membench's own scoring of each document's answer (runners/pretrained_eval.py's token spans, one forward
    per example): (every gold token the argmax given the true prefix, the gold tokens)."""
    from membench.runners.pretrained_eval import Tokeniser

    tokenise = Tokeniser(tokenizer)
    scored = {}
    for i in sorted({d["example"] for d in docs}):
        example = render_text(task, batch, i)
        tokens = tokenise(example)
        with torch.no_grad():
            best = model(torch.tensor([tokens.ids])).logits[0].argmax(dim=-1)  # (n,)
        for text_answer, a in zip(example.answers, tokens.answers):
            right = all(int(best[a.first - 1 + j]) == g for j, g in enumerate(a.gold))
            scored[i, text_answer.position] = (right, a.gold)
    return [scored[d["example"], d["position"]] for d in docs]
