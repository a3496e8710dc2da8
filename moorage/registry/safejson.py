"""Parsing untrusted JSON bodies (manifests, admin API requests) without a 500 on hostile input.

``json.loads`` raises ``RecursionError`` (not ``ValueError``) on a document nested deeper than
the interpreter's recursion limit, e.g. ``[[[[...]]]]`` 100,000 deep; callers that catch only
``ValueError`` then answer 500.  :func:`loads_untrusted` turns every way a body can fail to be
JSON into one ``ValueError`` that the caller maps to its own 400.
"""

from __future__ import annotations

import json
from typing import Any


class UntrustedJSONError(ValueError):
    """The body is not JSON we accept (syntax, encoding, or nesting too deep)."""


def loads_untrusted(body: bytes | str) -> Any:
    """``json.loads`` for bodies a client sent; any failure is an :class:`UntrustedJSONError`."""
    try:
        return json.loads(body)
    except RecursionError:
        raise UntrustedJSONError("JSON nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise UntrustedJSONError(str(exc)) from None
