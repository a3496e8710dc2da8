"""Optional features and the extra that installs each (``pip install 'moorage[s3]'``).

Why: the default install is what the default registry (filesystem storage, SQLite) needs; the
S3 driver, PostgreSQL and image insight (SBOMs, vulnerability matching) pull tens of megabytes
of libraries most registries never load.  A configured feature whose extra is missing stops
the command or the server with one line naming the extra, never with an ImportError traceback.
Standard library only: the CLI and the server's master process check before importing anything.
"""

from __future__ import annotations

import importlib.util

#: extra -> the top-level modules it provides (all must be importable).
EXTRAS: dict[str, tuple[str, ...]] = {
    "s3": ("aiobotocore", "botocore"),
    "postgres": ("asyncpg",),
    "insight": ("univers", "cvss"),
}


class MissingExtra(RuntimeError):
    """A configured feature's libraries are not installed (the message names the extra)."""


def has(extra: str) -> bool:
    """True if every module of ``extra`` can be imported."""
    return all(importlib.util.find_spec(m) is not None for m in EXTRAS[extra])


def require(extra: str, feature: str) -> None:
    """Raise :class:`MissingExtra` naming ``extra`` if it is not installed."""
    if not has(extra):
        raise MissingExtra(f"{feature} needs the {extra!r} extra, which is not installed: pip install 'moorage[{extra}]'")
