"""Glob patterns over repository names, matched without backtracking.

Used by the access grants (:mod:`moorage.registry.access_rules`) and the retention/immutability rules
(:mod:`moorage.gc.patterns`).  Why not a regex: ``a*a*a*...b`` turned into ``a.*a.*...b$`` takes
time exponential in the number of stars on a name of ``a``\\ s (a token request once spun the
event loop for minutes).  Why not :mod:`fnmatch`: it also compiles to a regex, and its cache is
per process and unbounded in the patterns it sees.

The algorithm: split the pattern at ``*`` into segments; the first must match at the start,
the last at the end, and every middle one is placed at its *leftmost* possible position after
the previous one.  Leftmost placement is always safe for ``*``-globs (any match can be shifted
left without losing the rest), so nothing is ever retried: time O(len(name) * len(pattern))
at worst, and O(len(name)) for segments without ``?``/``[...]`` (``str.find``).

Syntax: ``*`` any run of characters (``/`` included), ``?`` one character, ``[abc]``/``[a-z]``/
``[!abc]`` one character of (not of) a set, anything else itself.  A ``[`` without a closing
``]`` is a literal ``[`` (as in :mod:`fnmatch`).
"""

from __future__ import annotations

from functools import lru_cache

#: One pattern character: a literal, ``None`` for ``?``, or ``(negated, ranges)`` for a set.
_Atom = str | None | tuple[bool, tuple[tuple[str, str], ...]]


def _parse_set(pattern: str, i: int) -> tuple[_Atom, int] | None:
    """The set starting at ``pattern[i] == "["``; None if it is not closed."""
    j = i + 1
    negated = j < len(pattern) and pattern[j] == "!"
    if negated:
        j += 1
    start = j
    ranges: list[tuple[str, str]] = []
    while j < len(pattern):
        c = pattern[j]
        if c == "]" and j > start:
            return (negated, tuple(ranges)), j + 1
        if j + 2 < len(pattern) and pattern[j + 1] == "-" and pattern[j + 2] != "]":
            ranges.append((c, pattern[j + 2]))
            j += 3
        else:
            ranges.append((c, c))
            j += 1
    return None


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> tuple[tuple[_Atom, ...], ...]:
    """Pattern -> its segments (between ``*``), each a tuple of atoms."""
    segments: list[tuple[_Atom, ...]] = []
    atoms: list[_Atom] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            segments.append(tuple(atoms))
            atoms = []
            i += 1
        elif c == "?":
            atoms.append(None)
            i += 1
        elif c == "[" and (parsed := _parse_set(pattern, i)) is not None:
            atoms.append(parsed[0])
            i = parsed[1]
        else:
            atoms.append(c)
            i += 1
    segments.append(tuple(atoms))
    return tuple(segments)


def _atom_matches(atom: _Atom, ch: str) -> bool:
    if atom is None:
        return True
    if isinstance(atom, str):
        return atom == ch
    negated, ranges = atom
    return any(lo <= ch <= hi for lo, hi in ranges) != negated


def _literal(segment: tuple[_Atom, ...]) -> str | None:
    if all(isinstance(a, str) for a in segment):
        return "".join(segment)  # type: ignore[arg-type]
    return None


def _matches_at(segment: tuple[_Atom, ...], text: str, pos: int) -> bool:
    if pos + len(segment) > len(text):
        return False
    return all(_atom_matches(a, text[pos + k]) for k, a in enumerate(segment))


def _find(segment: tuple[_Atom, ...], text: str, start: int, end: int) -> int:
    """Leftmost position >= start where ``segment`` matches inside ``text[:end]``; -1 if none."""
    lit = _literal(segment)
    if lit is not None:
        return text.find(lit, start, end)
    for pos in range(start, end - len(segment) + 1):
        if _matches_at(segment, text, pos):
            return pos
    return -1


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> tuple[tuple[tuple[_Atom, ...], str | None], ...]:
    """Each segment with its literal text (None if it holds ``?``/``[...]``), computed once per
    pattern: a literal segment is matched by ``str.startswith``/``endswith``/``find`` in C,
    not atom by atom (the catalog's pull filter matches every name against every grant)."""
    return tuple((seg, _literal(seg)) for seg in _compile(pattern))


def _at(seg: tuple[tuple[_Atom, ...], str | None], text: str, pos: int) -> bool:
    atoms, lit = seg
    if lit is not None:
        return text.startswith(lit, pos)
    return _matches_at(atoms, text, pos)


def glob_match(pattern: str, text: str) -> bool:
    """Does ``text`` match the glob ``pattern`` as a whole?  Linear-bounded, never backtracks."""
    if "*" not in pattern and "?" not in pattern and "[" not in pattern:
        return pattern == text
    segments = _compiled(pattern)
    if len(segments) == 1:  # no star: the one segment is the whole text
        return len(segments[0][0]) == len(text) and _at(segments[0], text, 0)
    head, *middle, tail = segments
    if len(head[0]) + len(tail[0]) > len(text):
        return False
    if not _at(head, text, 0) or not _at(tail, text, len(text) - len(tail[0])):
        return False
    pos, end = len(head[0]), len(text) - len(tail[0])
    for seg, lit in middle:
        found = text.find(lit, pos, end) if lit is not None else _find(seg, text, pos, end)
        if found < 0:
            return False
        pos = found + len(seg)
    return True
