"""Every task as text: an example becomes a string and the character spans of its scored answers, so that a
model that reads text (a pretrained language model, lm-evaluation-harness) is asked the same questions as a
model that reads token ids.

Two modes:

    readable  the task's `SymbolTable` (memtasks.base): a word per symbol ("k5", "v8", "yes"), the text
              between symbols (line breaks, ": "), an optional one-line instruction. The gold answer FOLLOWS
              each scored symbol, so the text reads "k5: v8" and its bindings are consistent (the id-level
              task puts a filler after a query, never its answer); an answer the task feeds back as the next
              input (flip_flop's read bit, the later tokens of a fuzzy_recall value) is that symbol itself.
              Every answer is preceded by whitespace, so it starts a fresh token.
    plain     exactly the id-level inputs, each a word of `plain_vocabulary`, one space apart, nothing
              inserted, no instruction. An answer is an insertion point: start == end == the end of the symbol
              at its position, and gold is the target's word. For a model whose tokenizer's words are the
              task's symbols (a saved membench model), the argmax after reading symbol `position` being gold's
              token is membench's own metric (logits at t against targets[t]).

Offsets are character offsets in `TextExample.text`; `symbol_spans[t]` is the span of id-level input t, so the
evidence of an answer is `symbol_spans[answer.position - answer.lag]`.

Worked example (associative_recall, vocab_size=8, num_kv_pairs=2, seq_len=9, seed=2; its ids are the table in
the task's docstring):

    >>> from membench.memtasks import get_task
    >>> task = get_task("associative_recall", vocab_size=8, num_kv_pairs=2)
    >>> example = render_text(task, task.sample(1, 9, seed=2), instruction=False)
    >>> print(example.text)
    k1: v2
    k3: v3
    k3: v3
    v2 k1: v2
    v3 v3
    >>> [(a.gold, a.position, a.lag, example.text[a.start:a.end]) for a in example.answers]
    [('v3', 4, 1, 'v3'), ('v2', 6, 5, 'v2')]
    >>> a = example.answers[1]
    >>> example.text[slice(*example.symbol_spans[a.position - a.lag])]  # the evidence: k1's value
    'v2'
    >>> plain = render_text(task, task.sample(1, 9, seed=2), mode="plain")
    >>> plain.text, [(a.start, a.end, a.gold) for a in plain.answers]
    ('k1 v2 k3 v3 k3 v2 k1 v3 v3', [(14, 14, 'v3'), (20, 20, 'v2')])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from membench.checks import ConfigError
from membench.memtasks.base import IGNORE, Batch, Joints, Task

MODES = ("readable", "plain")


@dataclass(frozen=True)
class Answer:
    """One scored answer of a `TextExample`."""

    start: int  # char offset in TextExample.text where the scored answer begins
    end: int  # char offset where it ends; in "plain" mode start == end (an insertion point)
    gold: str  # the answer as text, exactly as the rendering writes it (e.g. "v8"), no surrounding space
    position: int  # the id-level position t of the scored target (batch.targets[i, t])
    lag: int  # the id-level lag in symbols (batch.lags[i, t])
    candidates: tuple[str, ...] | None  # the closed answer set rendered like `gold`, or None when open


@dataclass(frozen=True)
class TextExample:
    """One example as text: the string, its scored answers in order, and the span of every input symbol."""

    text: str
    answers: tuple[Answer, ...]  # every scored position of the example, in order
    symbol_spans: tuple[tuple[int, int], ...]  # char span in `text` of each id-level input position 0..T-1
    mode: str  # "readable" or "plain"


def plain_vocabulary(task: Task) -> list[str]:
    """The word of each token id in plain mode (index = id): the task's token names when they are distinct,
    non-empty and free of whitespace, else `<id>` for every token. For building a word-level tokenizer.

    >>> from membench.memtasks import get_task
    >>> plain_vocabulary(get_task("flip_flop"))
    ['0', '1', 'w', 'r', 'i']
    """
    names = [task.token_name(token) for token in range(task.vocab_size)]
    if len(set(names)) == len(names) and all(name and not any(c.isspace() for c in name) for name in names):
        return names
    return [f"<{token}>" for token in range(task.vocab_size)]


def render_text(
    task: Task, batch: Batch, i: int = 0, *, mode: str = "readable", instruction: bool = True
) -> TextExample:
    """Example `i` of `batch` as text, in `mode` ("readable" or "plain", see the module doc); `instruction`
    puts the task's one-line instruction first (readable mode only)."""
    if mode not in MODES:
        raise ConfigError(f"text mode must be one of {', '.join(MODES)}, got {mode!r}")
    inputs, targets, lags = (x[i].tolist() for x in (batch.inputs, batch.targets, batch.lags))
    candidates = task.answer_candidates()
    if mode == "plain":
        return _render_plain(plain_vocabulary(task), inputs, targets, lags, candidates)
    table = task.symbol_table(len(inputs))
    joints = table.joints(inputs, targets)
    words = tuple(table.word(c) for c in candidates) if candidates is not None else None
    return _render_readable(table.word, joints, table.instruction if instruction else "", inputs, targets, lags,
                            words)


def _render_plain(vocab: list[str], inputs: list[int], targets: list[int], lags: list[int],
                  candidates: list[int] | None) -> TextExample:
    spans, answers, at = [], [], 0
    words = tuple(vocab[c] for c in candidates) if candidates is not None else None
    for t, token in enumerate(inputs):
        at += t > 0  # the space before every symbol but the first
        spans.append((at, at + len(vocab[token])))
        at += len(vocab[token])
        if targets[t] != IGNORE:
            answers.append(Answer(at, at, vocab[targets[t]], t, lags[t], words))
    text = " ".join(vocab[token] for token in inputs)
    return TextExample(text, tuple(answers), tuple(spans), "plain")


def _render_readable(word: Callable[[int], str], joints: Joints, instruction: str, inputs: list[int],
                     targets: list[int], lags: list[int], candidates: tuple[str, ...] | None) -> TextExample:
    """Symbol after symbol with `joints.before` between them; after a scored symbol its mark and answer, unless
    the next symbol is the answer fed back (then that symbol's span is the answer's)."""
    pieces = [instruction + "\n"] if instruction else []
    at = len(pieces[0]) if pieces else 0
    spans, answers = [], []

    def write(piece: str) -> tuple[int, int]:
        nonlocal at
        pieces.append(piece)
        at += len(piece)
        return at - len(piece), at

    for t, token in enumerate(inputs):
        write(joints.before[t])
        spans.append(write(word(token)))
        if targets[t] == IGNORE:
            continue
        gold = word(targets[t])
        if t in joints.fed:
            if t + 1 >= len(inputs) or inputs[t + 1] != targets[t]:
                raise ValueError(f"position {t} is declared fed, but the next input is not its answer {gold!r}")
            start = at + len(joints.before[t + 1])  # the next symbol, written on the next turn of the loop
            answers.append(Answer(start, start + len(gold), gold, t, lags[t], candidates))
            continue
        write(joints.marks[t])
        answers.append(Answer(*write(gold), gold, t, lags[t], candidates))
    return TextExample("".join(pieces), tuple(answers), tuple(spans), "readable")


def with_shots(example: TextExample, shots: Sequence[TextExample], separator: str = "\n\n") -> TextExample:
    """The k solved examples first, then `example`; only `example`'s answers are scored (offsets shifted).

    Render the first shot with the instruction and the rest (and `example`) without it, to state it once.
    `symbol_spans` are `example`'s own, shifted, so that `position - lag` still finds the evidence.

    >>> one = TextExample("a: b", (Answer(3, 4, "b", 1, 1, None),), ((0, 1), (3, 4)), "readable")
    >>> two = with_shots(one, [one])
    >>> two.text, two.answers[0].start, two.text[slice(*two.symbol_spans[1])]
    ('a: b\\n\\na: b', 9, 'b')
    """
    if any(shot.mode != example.mode for shot in shots):
        raise ValueError(f"shots must be rendered in the example's mode ({example.mode})")
    prefix = "".join(shot.text + separator for shot in shots)
    shift = len(prefix)
    return TextExample(
        prefix + example.text,
        tuple(replace(a, start=a.start + shift, end=a.end + shift) for a in example.answers),
        tuple((start + shift, end + shift) for start, end in example.symbol_spans),
        example.mode,
    )
