"""Formatting for people: numbers with fixed precision, and tables for the terminal and for Markdown.

    >>> print(text_table(["model", "acc"], [["lstm", "0.981"], ["transformer", "1.000"]], right=[1]))
    model          acc
    lstm         0.981
    transformer  1.000
    >>> print(markdown_table(["model", "acc"], [["lstm", "0.981"]], left=["model"]))
    | model | acc |
    |---|---:|
    | lstm | 0.981 |
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence


def is_missing(value: object) -> bool:
    """None, NaN or pandas' NA."""
    try:
        return value is None or math.isnan(value)
    except TypeError:
        return value is not None and str(value) == "<NA>"


def fixed(value: float | None, digits: int) -> str:
    """`value` with `digits` decimals; '' for a missing value (None or NaN)."""
    return "" if is_missing(value) else f"{value:.{digits}f}"


def count(value: float | None, missing: str = "") -> str:
    """A whole count with thousands separators ('9,712'); `missing` for None or NaN."""
    return missing if is_missing(value) else f"{int(round(value)):,}"


def text_table(header: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()) -> str:
    """Columns padded to their widest cell, two spaces apart, trailing spaces removed; the columns whose
    indices are in `right` are right-aligned (numbers)."""
    lines = [list(header), *(list(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = set(right)
    return "\n".join(
        "  ".join(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths)))
        .rstrip()
        for line in lines
    )


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], left: Iterable[str] = ()) -> str:
    """A Markdown table; columns named in `left` are left-aligned, the others right-aligned (numbers).
    Cells are escaped so that a `|` or a line break in a value cannot break the table."""
    left = set(left)
    lines = [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "|" + "|".join("---" if h in left else "---:" for h in header) + "|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    return " ".join(str(value).split()).replace("|", "\\|")
