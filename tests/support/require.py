"""Skip-or-fail for things a test needs from the machine (client binaries, services, modules).

On a developer's machine a missing client skips the tests that need it.  In CI -- ``CI`` set to
true/1/yes, or ``MOORAGE_REQUIRE_CLIENTS=1`` (scripts/test.sh sets it after installing
everything) -- the same absence FAILS, so a CI that forgot an install step cannot pass by
skipping.  Every "is it installed?" check in tests/ goes through here.
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType
from typing import NoReturn

import pytest

__all__ = ["required", "missing", "require_binary", "require_module"]

_TRUE = ("1", "true", "yes", "on")


def required() -> bool:
    """True when missing prerequisites must fail rather than skip."""
    return (
        os.environ.get("MOORAGE_REQUIRE_CLIENTS", "").strip().lower() in _TRUE
        or os.environ.get("CI", "").strip().lower() in _TRUE
    )


def missing(msg: str) -> NoReturn:
    """Skip with ``msg`` -- or fail, when prerequisites are required."""
    if required():
        pytest.fail(f"{msg} -- required here (CI / MOORAGE_REQUIRE_CLIENTS=1)", pytrace=False)
    pytest.skip(msg)


def require_binary(path_or_name: str, package: str) -> str:
    """The binary's path, or skip/fail naming the Debian package that provides it."""
    if os.path.isabs(path_or_name):
        found = path_or_name if os.access(path_or_name, os.X_OK) else None
    else:
        found = shutil.which(path_or_name)
    if found:
        return found
    missing(f"{path_or_name} not installed (Debian package {package}; run .ci/install-clients.sh)")


def require_module(name: str, package: str | None = None) -> ModuleType:
    """``pytest.importorskip`` that fails when prerequisites are required."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        missing(f"Python module {name} not importable ({e}); pip install -e '.[test]' ({package or name})")
