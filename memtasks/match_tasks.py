"""What the tasks that judge symbols MATCH or NONMATCH share (delayed_match, n_back): their vocabulary and
their answers.

Their tokens are a few named specials, MATCH and NONMATCH among them, then `num_symbols` symbols written
s0, s1, ..; every answer is MATCH or NONMATCH, computed from the symbols rather than copied from them.

    >>> from membench.memtasks import get_task
    >>> task = get_task("n_back", num_symbols=4)  # specials MATCH and NONMATCH, tokens 0 and 1
    >>> task.vocab_size, task.token_name(1), task.token_name(2), task.answer_candidates(), task.readable_word(0)
    (6, 'NONMATCH', 's0', [0, 1], 'yes')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from membench.memtasks.base import Task


@dataclass
class MatchTask(Task):
    """A task whose tokens are `special_names` (token i is special_names[i]), then the symbols s0 ..
    s{num_symbols - 1}, and whose answers are the specials MATCH and NONMATCH.

    A subclass names its specials, and their words in the text rendering (`readable_names`: MATCH reads
    yes), and declares the param `num_symbols`.
    """

    special_names: ClassVar[tuple[str, ...]]
    readable_names: ClassVar[tuple[str, ...]]
    recalls_token: ClassVar[bool] = False

    @property
    def first_symbol(self) -> int:
        """Symbol i is token first_symbol + i."""
        return len(self.special_names)

    @property
    def vocab_size(self) -> int:
        return self.first_symbol + self.num_symbols

    def answer_candidates(self) -> list[int]:
        """MATCH and NONMATCH, wherever the task's specials put them."""
        return [self.special_names.index("MATCH"), self.special_names.index("NONMATCH")]

    def token_name(self, token: int) -> str:
        if 0 <= token < self.first_symbol:
            return self.special_names[token]
        return f"s{token - self.first_symbol}"

    def readable_word(self, token: int) -> str:
        """A token's word in the text rendering: a special's readable name, a symbol's own name."""
        return self.readable_names[token] if token < self.first_symbol else self.token_name(token)
