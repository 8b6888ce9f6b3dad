"""multi_turn_qa: a synthetic dialogue of facts, updates, chit-chat and questions about the facts.

Every turn is a template of TURN_LEN = 5 tokens, so a batch is a (B, num_turns, 5) tensor filled with
vectorised ops and then flattened; the tail that does not fill a turn is padding:

    statement   USER E3 A2 is V7      entity E3's attribute A2 is now V7
    question    USER what is E3 A2    scored at A2: the latest value stated for (E3, A2) comes next
    chit-chat   USER|BOT w w w w      random filler words

A question ends with its key, so the position that must produce the answer holds the attribute token (as a
query key does in associative recall) and the marker `what` tells it apart from a statement early.

Generation without a loop over turns: the k-th new fact takes the k-th (entity, attribute) pair of a random
permutation; updates and questions pick uniformly among the pairs stated so far (the first min(k, P) of the
permutation). Values come from a per-pair running sum: each statement of a pair adds a step in [1, V), so
an update always changes the value, and the value a question asks for is the running sum at that point,
computed for all pairs at once by sorting the turns by (pair, time) and taking a cumulative sum.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar

import torch

from membench.checks import ConfigError, check_int
from membench.memtasks import IGNORE, NO_LAG, Batch, Task, param, register_task
from membench.memtasks.base import Joints, SymbolTable

TURN_LEN = 5
PAD, USER, BOT, IS, WHAT = range(5)
_SPECIAL_NAMES = ("_", "USER", "BOT", "is", "what")
CHAT, STATE, ASK = range(3)  # turn kinds


def _check_prob(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")


@register_task("multi_turn_qa", order=30)
@dataclass
class MultiTurnQA(Task):
    """A dialogue states and updates facts "entity E's attribute A is V" between chit-chat; questions
    `what is E A` must be answered with the latest value stated for (E, A).

    Params:
        num_entities, num_attributes: E and A; the P = E * A (entity, attribute) pairs are the facts.
        num_values:  V, values a fact can take (>= 2, so that an update can change it).
        num_words:   filler words of chit-chat turns.
        chat_prob:   probability that a turn is chit-chat (said by USER or BOT, evenly).
        ask_prob:    probability that a turn is a question; the rest are statements.
        update_prob: probability that a statement updates a fact already stated instead of stating a
                     new one (once all P facts are stated, every statement is an update).

    The first turn is always a statement and the last full turn always a question, so every example is
    scored. Questions are only about facts already stated. What grows with seq_len: the number of turns
    (seq_len // 5), so more facts are held (up to P) for longer.

    Lag: from the question's last token back to the value token of the latest statement of the asked
    pair (a multiple of 5).

    Worked example (num_entities=2, num_attributes=2, num_values=4, num_words=4, seq_len=27, seed=78;
    `.` = not scored). E0 A1 is stated as V3 and asked; then updated to V2 and asked: the latest value wins.

        t       inputs              targets      lags
        0-4     USER E0 A1 is V3    . . . . .    . . . . .
        5-9     BOT  w1 w2 w0 w1    . . . . .    . . . . .
        10-14   USER what is E0 A1  . . . . V3   . . . . 10
        15-19   USER E0 A1 is V2    . . . . .    . . . . .
        20-24   USER what is E0 A1  . . . . V2   . . . . 5
        25-26   _ _                 . .          . .

    `render` shows one turn per line, the scored answer marked [input -> answer]:

        USER: E0 A1 is V3
        BOT: w1 w2 w0 w1
        USER: what is E0 [A1 -> V3]
        USER: E0 A1 is V2
        USER: what is E0 [A1 -> V2]
        (padding: 2 tokens)

    Shapes: inputs, targets, lags (B, T) int64.
    """

    num_entities: int = param(8, check_int, 1)
    num_attributes: int = param(4, check_int, 1)
    num_values: int = param(16, check_int, 2)
    num_words: int = param(16, check_int, 1)
    chat_prob: float = param(0.25, _check_prob)
    ask_prob: float = param(0.35, _check_prob)
    update_prob: float = param(0.3, _check_prob)

    description: ClassVar[str] = (
        "a dialogue states and updates entity facts among chit-chat; answer questions with the latest value"
    )
    version: ClassVar[int] = 1

    def check_params(self) -> None:
        if self.chat_prob + self.ask_prob >= 1.0:
            raise ConfigError(
                f"chat_prob + ask_prob must be < 1 so that some turns state facts, "
                f"got chat_prob={self.chat_prob} and ask_prob={self.ask_prob}"
            )

    def min_length(self) -> int:
        return 2 * TURN_LEN  # a statement and a question

    # --- token ids: specials, then entities, attributes, values, words --------------------
    def _first_tokens(self) -> tuple[int, ...]:
        """The first token ids of the entities, attributes, values and words, then vocab_size: the ranges follow
        the specials back to back. Example (the defaults, 8, 4, 16 and 16): (5, 13, 17, 33, 49)."""
        sizes = (self.num_entities, self.num_attributes, self.num_values, self.num_words)
        return tuple(itertools.accumulate(sizes, initial=len(_SPECIAL_NAMES)))

    @property
    def vocab_size(self) -> int:
        return self._first_tokens()[-1]

    def answer_candidates(self) -> list[int]:
        """The value tokens: a question is answered with a fact's value."""
        _, _, first_value, first_word, _ = self._first_tokens()
        return list(range(first_value, first_word))

    # --- generation ------------------------------------------------------------------------
    def _generate(self, batch_size: int, seq_len: int, gen: torch.Generator, device: torch.device) -> Batch:
        B, N = batch_size, seq_len // TURN_LEN
        P, V = self.num_entities * self.num_attributes, self.num_values
        first_entity, first_attribute, first_value, first_word, _ = self._first_tokens()
        turn = torch.arange(N, device=device)  # (N,)

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(shape, generator=gen, device=device)

        def draw(high: int, *shape: int) -> torch.Tensor:
            return torch.randint(high, shape, generator=gen, device=device)

        # 1. turn kinds: chit-chat, question or statement; the first states, the last asks
        u = uniform(B, N)  # (B, N)
        kind = torch.where(u < self.chat_prob, CHAT, torch.where(u < self.chat_prob + self.ask_prob, ASK, STATE))
        kind[:, 0], kind[:, -1] = STATE, ASK
        is_state, is_ask = kind == STATE, kind == ASK  # (B, N)
        fresh = is_state & ((uniform(B, N) >= self.update_prob) | (turn == 0))  # (B, N): states a new fact

        # 2. which pair each turn is about: new facts walk a random permutation of the P pairs; updates and
        #    questions pick uniformly among the pairs stated before (the first min(stated, P) of it)
        order_of_pairs = uniform(B, P).argsort(dim=1)  # (B, P): a random permutation per example
        stated_before = fresh.long().cumsum(dim=1) - fresh.long()  # (B, N): new facts in turns < j
        known = stated_before.clamp(max=P)  # (B, N): >= 1 after turn 0
        earlier = (uniform(B, N) * known).long().clamp(max=P - 1)  # (B, N): uniform in [0, known)
        slot = torch.where(fresh, stated_before % P, earlier)  # (B, N)
        pair = torch.where(kind == CHAT, P, order_of_pairs.gather(1, slot))  # (B, N); P marks chit-chat

        # 3. values: a per-pair running sum of steps in [1, V), computed on the turns sorted by (pair, time)
        step = torch.where(is_state, 1 + draw(V - 1, B, N), 0)  # (B, N)
        base = draw(V, B, P + 1)  # (B, P+1): the start value of each pair (column P: chit-chat, unused)
        by_pair = (pair * N + turn).argsort(dim=1)  # (B, N): a pair's turns together, in time order
        pair_s, step_s = pair.gather(1, by_pair), step.gather(1, by_pair)  # (B, N) sorted
        total = step_s.cumsum(dim=1)  # (B, N)
        starts = torch.ones_like(pair_s, dtype=torch.bool)
        starts[:, 1:] = pair_s[:, 1:] != pair_s[:, :-1]  # (B, N): first turn of each pair's run
        before_run = torch.where(starts, total - step_s, 0).cummax(dim=1).values  # (B, N)
        value_s = (base.gather(1, pair_s) + total - before_run) % V  # (B, N): value after this turn
        # the latest statement at or before each sorted turn; a pair's run starts with a statement
        position = torch.arange(N, device=device).expand(B, N)  # (B, N)
        latest_s = torch.where(is_state.gather(1, by_pair), position, -1).cummax(dim=1).values
        latest_turn_s = by_pair.gather(1, latest_s.clamp(min=0))  # (B, N): time index of that statement
        value = torch.empty_like(value_s).scatter(1, by_pair, value_s)  # (B, N) back in time order
        latest_turn = torch.empty_like(latest_turn_s).scatter(1, by_pair, latest_turn_s)  # (B, N)

        # 4. tokens of every turn template
        entity = first_entity + pair.clamp(max=P - 1) // self.num_attributes  # (B, N)
        attribute = first_attribute + pair.clamp(max=P - 1) % self.num_attributes  # (B, N)
        answer = first_value + value  # (B, N)
        user, is_, what = (torch.full_like(entity, tok) for tok in (USER, IS, WHAT))  # (B, N) each
        statement = torch.stack([user, entity, attribute, is_, answer], dim=2)  # (B, N, 5)
        question = torch.stack([user, what, is_, entity, attribute], dim=2)  # (B, N, 5)
        speaker = torch.where(draw(2, B, N, 1).bool(), BOT, USER)  # (B, N, 1)
        chat = torch.cat([speaker, first_word + draw(self.num_words, B, N, TURN_LEN - 1)], dim=2)
        turns = torch.where(is_ask[..., None], question, torch.where((kind == CHAT)[..., None], chat, statement))

        targets = torch.full_like(turns, IGNORE)  # (B, N, 5)
        targets[:, :, -1] = torch.where(is_ask, answer, IGNORE)  # scored at the question's last token
        lags = torch.full_like(turns, NO_LAG)  # (B, N, 5)
        lags[:, :, -1] = torch.where(is_ask, TURN_LEN * (turn - latest_turn), NO_LAG)

        tail = (B, seq_len - N * TURN_LEN)  # padding that does not fill a turn
        return Batch(
            inputs=torch.cat([turns.reshape(B, -1), turns.new_full(tail, PAD)], dim=1),  # (B, T)
            targets=torch.cat([targets.reshape(B, -1), turns.new_full(tail, IGNORE)], dim=1),  # (B, T)
            lags=torch.cat([lags.reshape(B, -1), turns.new_full(tail, NO_LAG)], dim=1),  # (B, T)
        )

    # --- reference -------------------------------------------------------------------------
    def solve(self, inputs: torch.Tensor) -> torch.Tensor:
        """Answer each question with the value of the latest earlier statement of the same (entity,
        attribute): a (B, turns, turns) mask "turn i states the pair asked at turn j, i < j", then the
        largest such i. O(B * turns^2) memory, a different route from the generator's sort. (B, T) -> (B, T).
        """
        B, T = inputs.shape
        N = T // TURN_LEN
        turns = inputs[:, : N * TURN_LEN].reshape(B, N, TURN_LEN)  # (B, N, 5)
        is_state = (turns[..., 0] == USER) & (turns[..., 3] == IS)  # (B, N): USER E A is V
        is_ask = (turns[..., 1] == WHAT) & (turns[..., 2] == IS)  # (B, N): USER what is E A
        entity = torch.where(is_ask, turns[..., 3], turns[..., 1])  # (B, N)
        attribute = torch.where(is_ask, turns[..., 4], turns[..., 2])  # (B, N)
        i = torch.arange(N, device=inputs.device)
        same = (
            (entity[:, :, None] == entity[:, None, :])
            & (attribute[:, :, None] == attribute[:, None, :])
            & is_state[:, None, :]
            & (i[None, :] < i[:, None])
        )  # (B, N_j, N_i): turn i states the pair of turn j, earlier
        latest = torch.where(same, i, -1).amax(dim=2)  # (B, N): -1 where none
        value = turns[..., 4].gather(1, latest.clamp(min=0))  # (B, N): the value token of turn `latest`
        answer = torch.where(is_ask & (latest >= 0), value, IGNORE)  # (B, N)
        solved = torch.full_like(inputs, IGNORE)  # (B, T)
        solved[:, TURN_LEN - 1 : N * TURN_LEN : TURN_LEN] = answer
        return solved

    # --- display ---------------------------------------------------------------------------
    def token_name(self, token: int) -> str:
        first_entity, first_attribute, first_value, first_word, _ = self._first_tokens()
        for first, prefix in ((first_word, "w"), (first_value, "V"), (first_attribute, "A"), (first_entity, "E")):
            if token >= first:
                return f"{prefix}{token - first}"
        return _SPECIAL_NAMES[token]

    def symbol_table(self, seq_len: int) -> SymbolTable:
        """Readable text: a turn per line, `USER: E0 A1 is V3`; a question is answered after its `?`:
        `USER: what is E0 A1? V3`; padding on a last line of its own."""
        return SymbolTable(
            word=self.token_name,
            instruction="Answer each question with the value stated last for that entity and attribute.",
            joints=self._joints,
        )

    def _joints(self, inputs: list[int], targets: list[int]) -> Joints:
        T = len(inputs)
        N = T // TURN_LEN
        before = [" "] * T
        for t in range(0, N * TURN_LEN, TURN_LEN):
            before[t], before[t + 1] = "\n", ": "  # the speaker starts a line
        if N * TURN_LEN < T:
            before[N * TURN_LEN] = "\n"
        before[0] = ""
        return Joints(before, ["? "] * T)

    def render(self, batch: Batch, i: int = 0) -> str:
        """The dialogue, one turn per line (`USER: E3 A2 is V7`); a question's answer shown [A2 -> V7]."""
        inputs, targets = batch.inputs[i].tolist(), batch.targets[i].tolist()
        N = len(inputs) // TURN_LEN
        lines = []
        for j in range(N):
            cells = []
            for t in range(j * TURN_LEN + 1, (j + 1) * TURN_LEN):
                name = self.token_name(inputs[t])
                cells.append(f"[{name} -> {self.token_name(targets[t])}]" if targets[t] != IGNORE else name)
            lines.append(f"{self.token_name(inputs[j * TURN_LEN])}: {' '.join(cells)}")
        tail = len(inputs) - N * TURN_LEN
        if tail:
            lines.append(f"(padding: {tail} token{'s' if tail > 1 else ''})")
        return "\n".join(lines)
