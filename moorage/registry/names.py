"""Repository names and tags, validated with the OCI Distribution Spec's grammar.

The grammar makes path traversal impossible: no component may be empty, ``.`` or ``..``, and
no character outside ``[a-z0-9._/-]`` is accepted, so a valid name is always a safe relative
path (the storage layer never builds paths from names anyway; this is defence in depth).
"""

from __future__ import annotations

import re

from ..errors import NameInvalid, TagInvalid

# spec: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
NAME_MAX = 255


def is_valid_name(name: str) -> bool:
    return len(name) <= NAME_MAX and NAME_RE.fullmatch(name) is not None


def validate_name(name: str) -> str:
    if not is_valid_name(name):
        raise NameInvalid(detail={"name": name[:300]})
    return name


def is_valid_tag(tag: str) -> bool:
    return TAG_RE.fullmatch(tag) is not None


def validate_tag(tag: str) -> str:
    if not is_valid_tag(tag):
        raise TagInvalid("invalid tag", detail={"tag": tag[:300]})
    return tag
