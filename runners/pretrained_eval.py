"""Scoring a pretrained model (models/pretrained.py) on a task rendered as text (its trial; with steps > 0 it is
fine-tuned first: runners/pretrained_train.py).

Each held-out sequence of a slice (the same seeds as a trained family's: metrics.eval_batches) is rendered
by memtasks/text.py (`render_text`, in the model's rendering; `shots = k` puts k solved examples of the same
task first, drawn from eval seeds of their own, `eval_seed(seed, SHOT_SEEDS + i)` for sequence i) and
tokenised once with character offsets. Each answer becomes a token span:

    readable   the tokens whose characters overlap [start, end): `first`, ..., `first + n - 1`
    plain      the answer is an insertion point after the symbol at `position`: `first` is the index the
               answer's single token would take, so its logits are read at first - 1, the symbol itself

and is right when every token of the span is the model's argmax given the true prefix, logits at first - 1
+ j against token j (teacher forcing; for plain mode exactly membench's own metric, logits at t against
targets[t]). Where the task has a closed answer set (Task.answer_candidates), `accuracy_choice` is the share
of answers whose gold has the highest log-likelihood, summed over all of a candidate's tokens, among the
candidates rendered at the same place (with BPE, candidates often share their first token; a set of
one-token candidates is read from the same forward; for longer ones the prefix is read once more into a KV
cache and each answer's candidates continue from it: `longer_choice_scores`). Never substring matching.

One forward per sequence: sequences of one token length are batched together (up to batch_size), never
padded, and the output head runs only at the positions read. Example: a slice of 3 sequences of 41, 40 and
41 tokens is two forwards, (2, 41) and (1, 40).

Per slice (runs.csv): accuracy (answers right / answers), exact_match (sequences with every answer right),
loss (mean over answers of the summed cross-entropy of the gold's tokens, in nats), scored (answers),
accuracy_choice, context_tokens (mean tokens per sequence), and the cost of reading a context:
read_tokens_per_second (tokens of the batched forwards per second of them), read_peak_memory_mb, and
kv_cache_bytes_per_token (the model's state at context_tokens, in its dtype's bytes, per token). Lags
(lags.csv) in symbols, as every family's, and in tokens: (first - 1) minus the token that holds the
evidence symbol's first character (symbol_spans[position - lag]), so in plain mode a token lag equals the
symbol lag. A slice whose longest sequence exceeds the model's positions is not run: status "skipped",
error "beyond max_position_embeddings (N tokens > M)".
"""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass, field

import torch

from membench.checks import ConfigError
from membench.memtasks import eval_seed, get_task
from membench.memtasks.text import TextExample, render_text, with_shots
from membench.runners import metrics
from membench.runners.train import TrainOutcome

SHOT_SEEDS = 1 << 30  # eval seed indices of the shots (a slice's own batches use 0, 1, 2, ...)
SKIPPED = "skipped"


@dataclass(frozen=True)
class ScoredAnswer:
    """One answer of a tokenised sequence: its gold tokens, read from the logits at first - 1 + j."""

    first: int  # index of the answer's first token (plain mode: where its one token would be inserted)
    gold: tuple[int, ...]  # the answer's token ids
    lag: int  # in symbols (the task's)
    token_lag: int  # (first - 1) - index of the evidence symbol's first token
    choices: tuple[tuple[int, ...], ...] | None  # token ids of each candidate rendered at this place
    gold_choice: int  # index of the gold among `choices` (-1 without choices)


@dataclass(frozen=True)
class TokenisedExample:
    ids: tuple[int, ...]
    answers: tuple[ScoredAnswer, ...]


class Tokeniser:
    """A rendered example -> its token ids and its answers' token spans (see the module doc)."""

    def __init__(self, tokenizer, chat_template: bool = False) -> None:
        self.tokenizer, self.chat_template = tokenizer, chat_template
        self._pieces: dict[str, tuple[int, ...]] = {}  # text -> its tokens alone (no special tokens)

    def __call__(self, example: TextExample) -> TokenisedExample:
        text, shift = example.text, 0
        if self.chat_template:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": example.text}], tokenize=False)
            shift = text.index(example.text)
        encoded = self.tokenizer(text, return_offsets_mapping=True, add_special_tokens=not self.chat_template)
        ids, offsets = list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
        real = [k for k, (s, e) in enumerate(offsets) if e > s]  # special tokens (BOS) hold no characters
        starts, ends = [offsets[k][0] for k in real], [offsets[k][1] for k in real]

        def token_at(char: int) -> int:
            """Index of the token holding character `char` (the last one starting at or before it)."""
            return real[bisect.bisect_right(starts, char) - 1]

        answers = []
        for a in example.answers:
            start, end = a.start + shift, a.end + shift
            if example.mode == "plain":  # after the last token ending at or before the insertion point
                first = real[bisect.bisect_right(ends, start) - 1] + 1
                gold = self.piece(a.gold, single=True)
                choices = tuple(self.piece(c, single=True) for c in a.candidates) if a.candidates else None
            else:
                first = token_at(start) if offsets[token_at(start)][1] > start else token_at(start) + 1
                gold = tuple(ids[first:token_at(end - 1) + 1])
                choices = self._choices(text, offsets[first][0], start, a, gold) if a.candidates else None
            evidence = token_at(example.symbol_spans[a.position - a.lag][0] + shift)
            answers.append(ScoredAnswer(first, gold, a.lag, max(1, first - 1 - evidence), choices,
                                        choices.index(gold) if choices and gold in choices else -1))
        return TokenisedExample(tuple(ids), tuple(answers))

    def piece(self, text: str, single: bool = False) -> tuple[int, ...]:
        """The tokens of `text` alone; `single`: it must be one token (plain mode's words)."""
        if text not in self._pieces:
            self._pieces[text] = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        found = self._pieces[text]
        if single and len(found) != 1:
            raise ConfigError(f"plain rendering needs a tokenizer whose words are the task's symbols, but {text!r} "
                              f"is {len(found)} tokens; use rendering = \"readable\"")
        return found

    def _choices(self, text: str, token_start: int, start: int, answer, gold: tuple[int, ...]):
        """Each candidate's tokens where the gold stands: tokenised after the gold's first token's own leading
        characters (a space, with byte-level BPE), checked on the gold; None where the check fails (the
        tokenizer merges across the boundary: no choice is scored for that answer)."""
        lead = text[token_start:start]
        if self.piece(lead + answer.gold) != gold:
            return None
        return tuple(self.piece(lead + c) for c in answer.candidates)


def render_slice(task, seq_len: int, n_sequences: int, batch_size: int, seed: int, mode: str,
                 shots: int) -> list[TextExample]:
    """The slice's held-out sequences (metrics.eval_batches' seeds) rendered as text, each after `shots`
    solved examples of its own seeds."""
    examples = []
    for batch in metrics.eval_batches(task, seq_len, n_sequences, batch_size, seed, torch.device("cpu")):
        for row in range(batch.inputs.shape[0]):
            example = render_text(task, batch, row, mode=mode)
            if shots:
                solved = task.sample(shots, seq_len, eval_seed(seed, SHOT_SEEDS + len(examples)), "cpu")
                example = with_shots(example, [render_text(task, solved, k, mode=mode) for k in range(shots)],
                                     **({"separator": " "} if mode == "plain" else {}))
            examples.append(example)
    return examples


def same_length_batches(sequences: list[TokenisedExample], batch_size: int) -> list[list[TokenisedExample]]:
    """Sequences grouped by token length, at most batch_size per batch, in order of first appearance.

        >>> seqs = [TokenisedExample((1,) * n, ()) for n in (41, 40, 41)]
        >>> [[len(s.ids) for s in b] for b in same_length_batches(seqs, 32)]
        [[41, 41], [40]]
    """
    groups: dict[int, list[TokenisedExample]] = {}
    for s in sequences:
        groups.setdefault(len(s.ids), []).append(s)
    return [g[i:i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]


@dataclass
class _Tally:
    """What a slice's batches add up (on the host: answers are few next to the forward's work)."""

    right: int = 0
    answers: int = 0
    chosen: int = 0
    choice_answers: int = 0
    exact: int = 0
    sequences: int = 0
    nll: float = 0.0
    forward_seconds: float = 0.0
    forward_tokens: int = 0
    lags: dict[int, list[int]] = field(default_factory=dict)  # bucket -> [right, answers], lags in symbols
    token_lags: dict[int, list[int]] = field(default_factory=dict)  # the same, lags in tokens

    def add_choice(self, answer: ScoredAnswer, scores: list[float]) -> None:
        self.chosen += int(max(range(len(scores)), key=scores.__getitem__) == answer.gold_choice)
        self.choice_answers += 1

    def add_lag(self, table: dict[int, list[int]], lag: int, right: bool) -> None:
        cell = table.setdefault(1 << (max(1, lag).bit_length() - 1), [0, 0])
        cell[0] += int(right)
        cell[1] += 1


def _score_batch(model, batch: list[TokenisedExample], device: torch.device, tally: _Tally) -> None:
    """One forward of a batch of equal-length sequences; each answer scored (see the module doc)."""
    ids = torch.tensor([s.ids for s in batch], device=device)  # (B, T)
    read = sorted({a.first - 1 + j for s in batch for a in s.answers for j in range(len(a.gold))})
    column = {p: k for k, p in enumerate(read)}
    logits = _timed(tally, ids.numel(), model.logits, ids, torch.tensor(read, device=device))  # (B, K, V)
    log_probs = logits.log_softmax(-1)  # (B, K, V)
    predicted = logits.argmax(-1).cpu()  # (B, K)
    for row, sequence in enumerate(batch):
        every, longer = True, []
        for a in sequence.answers:
            cols = [column[a.first - 1 + j] for j in range(len(a.gold))]
            right = all(int(predicted[row, c]) == g for c, g in zip(cols, a.gold))
            tally.nll -= float(sum(log_probs[row, c, g] for c, g in zip(cols, a.gold)))
            tally.right += right
            tally.answers += 1
            tally.add_lag(tally.lags, a.lag, right)
            tally.add_lag(tally.token_lags, a.token_lag, right)
            every &= right
            if a.choices and a.gold_choice >= 0:
                first = log_probs[row, cols[0]]  # (V,): the log-probabilities of every candidate's first token
                if all(len(c) == 1 for c in a.choices):
                    tally.add_choice(a, [float(first[c[0]]) for c in a.choices])
                else:
                    longer.append((a, first))
        for a, scores in zip([a for a, _ in longer], longer_choice_scores(model, sequence, longer, device, tally)):
            tally.add_choice(a, scores)
        tally.exact += every
        tally.sequences += 1


def _timed(tally: _Tally, tokens: int, forward, *args):
    """forward(*args), its wall time (device work included) and `tokens` added to the tally's reading."""
    device = args[-1].device
    metrics.synchronize(device)
    start = time.perf_counter()
    out = forward(*args)
    metrics.synchronize(device)
    tally.forward_seconds += time.perf_counter() - start
    tally.forward_tokens += tokens
    return out


def longer_choice_scores(model, sequence: TokenisedExample, longer: list, device: torch.device,
                         tally: _Tally) -> list[list[float]]:
    """Each candidate's summed log-likelihood, for the answers of one sequence that have a candidate of two or
    more tokens; `longer` holds (answer, log-probabilities of the first token (V,)). The prefix up to the last
    of them is read once into a KV cache; then, last answer first, the cache is cut back to the answer's prefix
    and the candidates' proper prefixes are read after it, the longest of each chain one row of a batch
    (candidates v0 ... v31 spelled v,0 ... v,3,1 are 3 rows, v1 v2 v3, not 32): each token's log-probability
    is then read where its prefix ends. A model whose cache cannot be cut back (a recurrent state) takes
    `choice_scores_reference`, which the tests find equal."""
    if not longer:
        return []
    last = max(a.first for a, _ in longer)
    prefix = torch.tensor([sequence.ids[:last]], device=device)  # (1, P)
    cache = _timed(tally, last, model.read_prefix, prefix)
    if cache is None:
        return [choice_scores_reference(model, sequence, a, device, tally) for a, _ in longer]
    scores: dict[int, list[float]] = {}
    for i in sorted(range(len(longer)), key=lambda i: -longer[i][0].first):
        a, first = longer[i]
        if cache.get_seq_length() > a.first:
            cache.crop(a.first - cache.get_seq_length())  # a negative count: the tokens cut off the end
        proper = {c[:j] for c in a.choices for j in range(1, len(c))}  # the non-empty proper prefixes
        rows = sorted(q for q in proper if not any(len(r) > len(q) and r[:len(q)] == q for r in proper))
        width = max(len(r) for r in rows)
        batch = torch.tensor([[*r, *[r[0]] * (width - len(r))] for r in rows], device=device)  # (R, width)
        if len(rows) > 1:
            cache.batch_repeat_interleave(len(rows))
        log_probs = _timed(tally, batch.numel(), model.read_on, cache, batch).log_softmax(-1)  # (R, width, V)
        after = {(): first}  # a prefix of a candidate -> the log-probabilities of the token after it (V,)
        for k, r in enumerate(rows):
            after.update({r[:j + 1]: log_probs[k, j] for j in range(len(r))})
        scores[i] = [sum(float(after[c[:j]][c[j]]) for j in range(len(c))) for c in a.choices]
        if len(rows) > 1:
            cache.batch_select_indices(torch.tensor([0], device=device))
    return [scores[i] for i in range(len(longer))]


def choice_scores_reference(model, sequence: TokenisedExample, a: ScoredAnswer, device: torch.device,
                            tally: _Tally) -> list[float]:
    """Each candidate's summed log-likelihood after the true prefix, by one forward of (prefix + candidate) per
    candidate, batched: the plain form of `longer_choice_scores`."""
    longest = max(len(c) for c in a.choices)
    prefix = list(sequence.ids[:a.first])
    rows = torch.tensor([prefix + list(c) + [c[0]] * (longest - len(c)) for c in a.choices], device=device)
    positions = torch.arange(a.first - 1, a.first - 1 + longest, device=device)  # (m,)
    log_probs = _timed(tally, rows.numel(), model.logits, rows, positions).log_softmax(-1)  # (C, m, V)
    return [float(sum(log_probs[i, j, t] for j, t in enumerate(c))) for i, c in enumerate(a.choices)]


@torch.no_grad()
def evaluate_text_slice(model, task, eval_slice, batch_size: int, seed: int, shots: int,
                        device: torch.device) -> metrics.SliceResult:
    """Score one eval slice of a pretrained model (see the module doc); a slice that fails is its own result."""
    examples = render_slice(task, eval_slice.seq_len, eval_slice.n_sequences, batch_size, seed, model.rendering,
                            shots)
    tokenise = Tokeniser(model.tokenizer, model.chat_template)
    sequences = [tokenise(e) for e in examples]
    longest = max(len(s.ids) for s in sequences)
    context = sum(len(s.ids) for s in sequences) / len(sequences)
    if model.max_positions is not None and longest > model.max_positions:
        return metrics.SliceResult(status=SKIPPED, context_tokens=context,
                                   error=f"beyond max_position_embeddings ({longest} tokens > {model.max_positions})")
    tally, memory = _Tally(), metrics.PeakMemory(device)
    try:
        with memory:
            for batch in same_length_batches(sequences, batch_size):
                _score_batch(model, batch, device, tally)
    except Exception as err:  # noqa: BLE001 - a failure in one slice is that slice's result
        if metrics.is_oom(err):
            return metrics.SliceResult(status="oom", error=metrics.short_error(err), context_tokens=context)
        raise
    return _slice_result(model, tally, context, memory.peak_mb)


def _slice_result(model, tally: _Tally, context: float, peak_mb: float) -> metrics.SliceResult:
    tokens = max(1, round(context))
    state = model.state_size(tokens)
    element = next(model.lm.parameters()).element_size()
    return metrics.SliceResult(
        accuracy=tally.right / tally.answers if tally.answers else math.nan,
        exact_match=tally.exact / tally.sequences,
        loss=tally.nll / tally.answers if tally.answers else math.nan,
        scored=tally.answers,
        lags={bucket: tuple(cell) for bucket, cell in sorted(tally.lags.items())},
        token_lags={bucket: tuple(cell) for bucket, cell in sorted(tally.token_lags.items())},
        context_tokens=context,
        accuracy_choice=tally.chosen / tally.choice_answers if tally.choice_answers else math.nan,
        read_tokens_per_second=tally.forward_tokens / tally.forward_seconds if tally.forward_seconds else math.nan,
        read_peak_memory_mb=peak_mb,
        kv_cache_bytes_per_token=state * element / tokens if state is not None else math.nan,
    )


def evaluate_pretrained(model, config, device: torch.device, cost=None) -> TrainOutcome:
    """A pretrained model's trial: fine-tuned first when config.steps > 0 (runners/pretrained_train.py), then
    every eval slice scored. `cost` (runners.trial.TrialCost): its state sizes are set at each slice's
    context_tokens (a length in tokens, not in symbols)."""
    model.to(device)
    outcome = TrainOutcome(stop_reason="budget")
    if config.steps:
        from membench.runners.pretrained_train import fine_tune

        outcome = fine_tune(model, config, device)
    for s in config.eval_slices:
        result = evaluate_text_slice(model, config.slice_task(s), s, config.batch_size, config.seed, config.shots,
                                     device)
        outcome.slices[s.name] = result
        if cost is not None and result.status == "ok":
            state = model.state_size(max(1, round(result.context_tokens)))
            cost.state_size[s.name] = math.nan if state is None else float(state)
    return outcome


# --- `membench check pretrained:...`: the contract of a checkpoint ------------------------------------------
CHECK_TASK, CHECK_LENGTH = "associative_recall", 16  # the task and length the checks render and score


def _loads(model) -> str:
    positions = model.max_positions or "no limit"
    return (f"{model.num_params():,} params, d_model={model.d_model}, {model.n_layers} layers, positions "
            f"{positions}, rendering {model.rendering}")


def _causal(model) -> str:
    """The logits before position k do not change when the tokens from k on do."""
    from membench.runners.contract import Failed

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(model.tokenizer), (1, 16), generator=generator)  # (1, 16)
    changed = ids.clone()
    changed[:, 8:] = torch.randint(0, len(model.tokenizer), (1, 8), generator=generator)
    with torch.no_grad():
        before, after = model.logits(ids)[:, :8], model.logits(changed)[:, :8]  # (1, 8, V)
    if not torch.allclose(before, after, atol=1e-4, rtol=1e-4):
        raise Failed(f"logits before position 8 change by up to {float((before - after).abs().max()):.2g} when "
                     f"later tokens change: not a causal model")
    return "logits at t depend on tokens up to t only"


def _answer_tokens(model) -> str:
    """Each answer of a rendered example maps to tokens that spell it."""
    from membench.runners.contract import Failed

    task = get_task(CHECK_TASK)
    example = render_text(task, task.sample(1, CHECK_LENGTH, eval_seed(0, 0)), mode=model.rendering)
    tokens = Tokeniser(model.tokenizer, model.chat_template)(example)
    for text_answer, a in zip(example.answers, tokens.answers):
        spelled = model.tokenizer.decode(list(a.gold)).strip()
        if spelled != text_answer.gold:
            raise Failed(f"answer {text_answer.gold!r} maps to tokens {list(a.gold)} that spell {spelled!r}")
    return f"{len(tokens.answers)} answers in {len(tokens.ids)} tokens, each spelled by its tokens"


def _scores(model) -> str:
    from membench.runners.contract import Failed
    from membench.runners.trial import EvalSlice

    result = evaluate_text_slice(model, get_task(CHECK_TASK), EvalSlice("check", CHECK_LENGTH, 4), 4, 0, 0,
                                 torch.device("cpu"))
    if result.status != "ok":
        raise Failed(f"{CHECK_TASK} at length {CHECK_LENGTH}: {result.status} ({result.error})")
    return (f"{CHECK_TASK} L{CHECK_LENGTH}: accuracy {result.accuracy:.3f}, choice {result.accuracy_choice:.3f}, "
            f"{result.context_tokens:.0f} tokens per sequence")


PRETRAINED_CHECKS = (("loads", _loads), ("causal", _causal), ("answers map to tokens", _answer_tokens),
                     ("scores a task", _scores))


def check_pretrained(name: str, params: dict) -> list:
    """Every check of PRETRAINED_CHECKS on `pretrained:...` built with `params` (runners/contract.py's rows);
    the others are skipped when it does not load."""
    from membench.models import build_model
    from membench.runners.contract import SKIP, CheckResult, _run

    built = {}

    def load() -> str:
        built["model"] = build_model(name, 2, **params)
        return _loads(built["model"])

    (first_name, _), *rest = PRETRAINED_CHECKS
    first = _run(first_name, load)
    if "model" not in built:
        return [first, *[CheckResult(n, SKIP, "the model does not load") for n, _ in rest]]
    return [first, *[_run(n, lambda check=check: check(built["model"])) for n, check in rest]]
