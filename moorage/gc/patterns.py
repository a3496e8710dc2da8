"""Repository patterns shared by the policies.

A pattern is a glob over repository names (``*`` also matches ``/``): ``team/app`` names one
repository *and* everything below it (``team/app/x``), ``team/*`` everything below ``team``,
``*`` every repository.
"""

from __future__ import annotations

import re

from ..registry.globs import glob_match

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)


def repo_matches(pattern: str, repository: str) -> bool:
    """fnmatch syntax, matched without regexes (:mod:`moorage.registry.globs`: linear-bounded)."""
    return glob_match(pattern, repository) or glob_match(pattern.rstrip("/") + "/*", repository)


def in_namespace(namespace: str, repository: str) -> bool:
    """``repository`` is ``namespace`` itself or lies below it."""
    ns = namespace.strip("/")
    return repository == ns or repository.startswith(ns + "/")


def parse_size(text: str) -> int:
    """``1024``, ``10M``, ``1.5GiB``, ``500kb`` -> bytes (binary multiples)."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 1073741824, 500M, 10GiB)")
    number, unit = float(m.group(1)), m.group(2).lower()
    return int(number * (1024 ** " kmgtp".index(unit or " ")))


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def compile_regex(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {text!r}: {exc}") from None
