"""The classifier's pre-check: which lines of a text can match which patterns, in one pass.

A pattern with required literals (`Pattern.hints`) matches only lines holding one of them:
one RE2 set search (a DFA) finds which literals a text holds, and the pattern then runs on
those lines only. Patterns without literals run on the whole text.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

import re2

from .patterns import Pattern


def line_local(pattern: Pattern) -> bool:
    """True when `pattern` can run on its candidate lines only."""
    return bool(pattern.hints) and not any("\n" in h for h in pattern.hints)


class Prefilter:
    def __init__(self, patterns: Iterable[Pattern]):
        self.literals = sorted({h for p in patterns if line_local(p) for h in p.hints})
        self._set = None
        if self.literals:
            options = re2.Options()
            options.literal = True
            self._set = re2.Set.SearchSet(options)
            for literal in self.literals:
                self._set.Add(literal)
            self._set.Compile()

    def lines_by_literal(self, text: str) -> dict[str, list[tuple[int, int]]]:
        """Each literal found in `text`: the (start, end) of every line holding it."""
        if self._set is None:
            return {}
        found = self._set.Match(text.encode("utf-8", "surrogatepass")) or ()  # None: no literal
        return {self.literals[i]: _lines_with(text, self.literals[i]) for i in found}


def line_bounds(text: str, pos: int) -> tuple[int, int]:
    """(start, end) of the line of `text` that holds offset `pos` (end: its newline)."""
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return start, (len(text) if end < 0 else end)


def _lines_with(text: str, literal: str) -> list[tuple[int, int]]:
    lines = []
    pos = text.find(literal)
    while pos >= 0:
        lines.append(line_bounds(text, pos))
        pos = text.find(literal, lines[-1][1] + 1)
    return lines


class CandidateLines:
    """Some lines of a text joined by newlines, and the way back to their offsets."""

    def __init__(self, text: str, bounds: list[tuple[int, int]]):
        self.origins = [start for start, _ in bounds]
        self.starts: list[int] = []
        parts, offset = [], 0
        for start, end in bounds:
            self.starts.append(offset)
            parts.append(text[start:end])
            offset += end - start + 1
        self.text = "\n".join(parts)

    def origin(self, offset: int) -> int:
        """The offset in the original text of the line at `offset` of the joined text."""
        return self.origins[bisect_right(self.starts, offset) - 1]


def candidate_lines(pattern: Pattern, lines: dict[str, list[tuple[int, int]]], text: str) -> CandidateLines | None:
    """The lines of `text` that hold one of `pattern`'s literals (None: there are none)."""
    bounds = sorted({b for h in pattern.hints if h in lines for b in lines[h]})
    return CandidateLines(text, bounds) if bounds else None
