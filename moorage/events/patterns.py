"""Repository glob patterns (``*`` matches any run of characters, ``/`` included), matched in
linear time without regular expressions (a hostile pattern such as ``*a*a*a*a*b`` can't make a
backtracking matcher spin on every event)."""

from __future__ import annotations

import re

_PATTERN_OK = re.compile(r"^[a-z0-9*][a-z0-9._/*-]*$")


def valid_pattern(pattern: str) -> bool:
    return len(pattern) <= 255 and bool(_PATTERN_OK.match(pattern)) and "//" not in pattern


def glob_matches(pattern: str, text: str) -> bool:
    """Greedy left-to-right glob match: each ``*``-separated piece is found at its earliest
    position after the previous one (correct for ``*``-only globs, O(len(text) * pieces))."""
    if "*" not in pattern:
        return pattern == text
    parts = pattern.split("*")
    head, tail, middle = parts[0], parts[-1], parts[1:-1]
    if len(head) + len(tail) > len(text) or not text.startswith(head) or not text.endswith(tail):
        return False
    pos, end = len(head), len(text) - len(tail)
    for piece in middle:
        if not piece:
            continue
        found = text.find(piece, pos, end)
        if found < 0:
            return False
        pos = found + len(piece)
    return True
