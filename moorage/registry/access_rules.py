"""Pure access-control rules: scope strings, repository patterns, who may do what.

Nothing here touches the network or the database, so every rule is unit-tested directly
(``tests/test_auth_policy.py``).

Vocabulary (Docker Registry token spec):

* a *scope* is ``type[(class)]:name:actions`` -- e.g. ``repository:team/app:pull,push`` or
  ``registry:catalog:*``.  The name may itself contain ``:`` (``repository:localhost:5000/app:pull``
  is what some clients send for a registry addressed as ``host:port``), so a scope is split
  once from the left (type) and once from the right (actions); whatever is between is the name.
* a *grant* gives a set of actions on every repository matching a *pattern*: ``*`` in a pattern
  matches any run of characters, ``/`` included (``team/*`` covers ``team/app`` and
  ``team/tools/lint``); a pattern without ``*`` names one repository.
* actions are ``pull``, ``push``, ``delete`` and ``admin``; ``admin`` implies the other three
  and ``*`` in a scope asks for everything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .globs import glob_match

ACTIONS = ("pull", "push", "delete", "admin")
REPO_ACTIONS = frozenset(ACTIONS)
#: What ``admin`` (and ``*``) stands for on a repository.
ALL_REPO_ACTIONS = frozenset(("pull", "push", "delete"))


@dataclass(frozen=True, slots=True)
class Scope:
    type: str
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def parse_scope(text: str) -> Scope | None:
    """One scope string, or ``None`` if it is not of the form ``type:name:actions``.

    The resource class in ``repository(plugin):name:pull`` is dropped; empty and duplicate
    actions are removed (order kept).
    """
    text = text.strip()
    if text.count(":") < 2:
        return None
    rtype, rest = text.split(":", 1)
    name, actions = rest.rsplit(":", 1)
    rtype = rtype.split("(", 1)[0].strip()
    if not rtype or not name:
        return None
    acts = tuple(dict.fromkeys(a.strip() for a in actions.split(",") if a.strip()))
    return Scope(rtype, name, acts)


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """All scopes of (possibly repeated) ``scope`` parameters; each may hold several,
    separated by spaces.  Malformed ones are skipped -- an unknown scope grants nothing but is
    not an error.  Scopes naming the same resource are merged."""
    merged: dict[tuple[str, str], list[str]] = {}
    for value in values:
        for part in value.split():
            scope = parse_scope(part)
            if scope is None:
                continue
            acts = merged.setdefault((scope.type, scope.name), [])
            acts.extend(a for a in scope.actions if a not in acts)
    return [Scope(t, n, tuple(a)) for (t, n), a in merged.items()]


def format_challenge_scope(type_: str, name: str, actions: Sequence[str]) -> str:
    return f"{type_}:{name}:{','.join(actions)}"


# -- patterns ---------------------------------------------------------------------------------
_PATTERN_OK = re.compile(r"[a-z0-9*][a-z0-9._/*-]*")


def valid_pattern(pattern: str) -> bool:
    """A grant pattern: a repository name where ``*`` may stand for any run of characters.
    (``fullmatch``: ``$`` of a ``match`` also accepted a trailing newline, stored as a pattern
    that never matched anything.)"""
    return len(pattern) <= 255 and _PATTERN_OK.fullmatch(pattern) is not None and "//" not in pattern


#: Longest directory group name (``group_grants.group_name``).
MAX_GROUP_NAME = 255


def valid_group_name(name: str) -> bool:
    """Group names are the directory's (``cn`` values: spaces, capitals ...): any printable
    text of 1-255 characters without surrounding spaces.  ``isprintable`` refuses control
    characters, NUL (PostgreSQL refuses it in text), lone surrogates, and the invisible
    format characters (bidi overrides, zero-width spaces) that would make two grants look alike."""
    return 0 < len(name) <= MAX_GROUP_NAME and name.isprintable() and name == name.strip()


def pattern_matches(pattern: str, repository: str) -> bool:
    """Glob match in linear-bounded time (:mod:`moorage.registry.globs`; a regex of
    ``a*a*a*...b`` once took minutes).  Grant patterns hold no ``?``/``[``
    (:func:`valid_pattern`), so only ``*`` is special here."""
    if "*" not in pattern:
        return pattern == repository
    return glob_match(pattern, repository)


def parse_actions(text: str | Iterable[str]) -> frozenset[str]:
    """``"pull,push"`` -> {pull, push}; raises ValueError on an unknown action."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = set()
    for a in items:
        a = a.strip().lower()
        if not a:
            continue
        if a == "*":
            a = "admin"
        if a not in REPO_ACTIONS:
            raise ValueError(f"unknown action {a!r} (use {', '.join(ACTIONS)})")
        out.add(a)
    return frozenset(out)


def expand(actions: Iterable[str]) -> frozenset[str]:
    """Actions with ``admin`` spelled out."""
    s = set(actions)
    if "admin" in s or "*" in s:
        s |= ALL_REPO_ACTIONS | {"admin"}
    s.discard("*")
    return frozenset(s)


# -- who may do what --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Grant:
    pattern: str
    actions: frozenset[str]


@dataclass(slots=True)
class Principal:
    """Who is asking, with everything needed to decide (loaded once per token request).

    ``token_scope`` restricts a personal access token / robot token to a subset of its owner's
    rights (``None`` = the owner's full rights).
    """

    name: str | None  # None = anonymous
    is_admin: bool = False
    is_robot: bool = False
    grants: list[Grant] = field(default_factory=list)
    token_scope: list[Grant] | None = None
    token_id: str | None = None
    user_id: int | None = None
    user_created_at: float | None = None
    #: For a directory user: the fingerprint of the groups their rights came from (moorage.auth.groups).
    directory: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.name is None


def owns(user: str, repository: str) -> bool:
    """A (human) user always has every right under their own name: ``alice`` and ``alice/*``."""
    return repository == user or repository.startswith(user + "/")


def namespace_prefixes(repository: str) -> list[str]:
    """``a/b/c`` -> [``a``, ``a/b``]: the namespaces a repository lives in."""
    parts = repository.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def repository_rights(principal: Principal, repository: str, *, public: bool) -> frozenset[str]:
    """Every action ``principal`` may perform on ``repository`` (``admin`` expanded)."""
    rights: set[str] = set()
    if public:
        rights.add("pull")
    if principal.anonymous:
        return frozenset(rights)
    if principal.is_admin or not principal.is_robot and owns(principal.name or "", repository):
        rights |= ALL_REPO_ACTIONS | {"admin"}
    for g in principal.grants:
        if pattern_matches(g.pattern, repository):
            rights |= expand(g.actions)
    if principal.token_scope is not None:
        allowed: set[str] = {"pull"} if public else set()
        for g in principal.token_scope:
            if pattern_matches(g.pattern, repository):
                allowed |= expand(g.actions)
        rights &= allowed
    return frozenset(rights)


def pull_patterns(principal: Principal) -> tuple[list[str], list[str] | None]:
    """The read rule of :func:`repository_rights` for ``pull`` as patterns, for a face that
    filters in SQL (the web UI's lists, ``ui.queries.Visibility``): the patterns that
    give ``principal`` pull through its account (``*`` for an administrator; a user's own
    ``name`` and ``name/*``; its grants with pull), and the access token's scope patterns with
    pull (``None``: not scoped).  A repository is visible when it is public (and the token's
    scope does not matter: public content is for everyone) or matches the first list and, when
    scoped, the second -- exactly ``"pull" in repository_rights(...)``
    (tests/test_auth_policy.py checks the two against each other)."""
    if principal.anonymous:
        return [], None
    patterns: list[str] = []
    if principal.is_admin:
        patterns.append("*")
    elif not principal.is_robot and principal.name:
        patterns += [principal.name, principal.name + "/*"]
    patterns += [g.pattern for g in principal.grants if "pull" in expand(g.actions)]
    scope = None
    if principal.token_scope is not None:
        scope = [g.pattern for g in principal.token_scope if "pull" in expand(g.actions)]
    return patterns, scope


def pull_ranges(principal: Principal) -> tuple[list[str], list[str]] | None:
    """Name ranges holding every repository ``principal`` may pull through an account (not
    through ``public``): ``(prefixes, names)``, or None when no bounded set of ranges does
    (an administrator, a grant pattern starting with ``*``).

    A superset, never a subset: a pattern ``team/*/app`` gives the range of ``team/``; the
    catalog filters the names these ranges hold with :func:`repository_rights` afterwards, so
    the ranges only decide how much of the index is read (issue 24), never what is listed.
    A token's scope only narrows rights, so the account's ranges cover the token's too.
    """
    if principal.anonymous:
        return [], []
    if principal.is_admin:
        return None
    prefixes: list[str] = []
    names: list[str] = []
    if not principal.is_robot and principal.name:
        names.append(principal.name)
        prefixes.append(principal.name + "/")
    for g in principal.grants:
        if "pull" not in expand(g.actions):
            continue
        if "*" not in g.pattern:
            names.append(g.pattern)
            continue
        head = g.pattern[: g.pattern.index("*")]
        if not head:
            return None
        prefixes.append(head)
    return sorted(set(prefixes)), sorted(set(names))


def granted_actions(requested: Sequence[str], rights: frozenset[str]) -> tuple[str, ...]:
    """The requested actions that ``rights`` cover, in request order; ``*`` only for admins."""
    out: list[str] = []
    for a in requested:
        if a == "*":
            if "admin" in rights:
                out.append("*")
        elif a in rights and a in REPO_ACTIONS:
            out.append(a)
    return tuple(dict.fromkeys(out))


def registry_actions(principal: Principal, scope: Scope) -> tuple[str, ...]:
    """Actions granted on a ``registry:...`` scope: the catalog for any signed-in caller
    (it is filtered to what they may pull); anything else only for admins."""
    if principal.anonymous:
        return ()
    if scope.name == "catalog":
        return tuple(a for a in scope.actions if a == "*")
    if principal.is_admin:
        return tuple(scope.actions)
    return ()


def token_covers(access: Sequence[dict[str, Any]], type_: str, name: str, actions: Sequence[str]) -> tuple[bool, bool]:
    """Does a token's ``access`` claim cover ``actions`` on (type, name)?

    Returns ``(covered, known)``: ``known`` says whether the token has an entry for that
    resource at all (a token that was issued for the resource but without the action is a
    refusal -- 403 DENIED; a token for another resource asks the client to fetch a new
    one -- 401 insufficient_scope).
    """
    have: set[str] = set()
    known = False
    for entry in access:
        if not isinstance(entry, dict):
            continue
        if entry.get("type") == type_ and entry.get("name") == name:
            known = True
            acts = entry.get("actions") or []
            if isinstance(acts, list):
                have.update(a for a in acts if isinstance(a, str))
    if "*" in have:
        return True, known
    return all(a in have for a in actions), known


def parse_token_scope(items: Iterable[str]) -> list[Grant]:
    """CLI/API form of an access token's scope: ``PATTERN:ACTIONS`` items
    (``team/*:pull``); the pattern may hold ``:`` so split from the right."""
    out = []
    for item in items:
        if ":" not in item:
            raise ValueError(f"token scope {item!r} is not PATTERN:ACTIONS")
        pattern, acts = item.rsplit(":", 1)
        if not valid_pattern(pattern):
            raise ValueError(f"invalid repository pattern {pattern!r}")
        out.append(Grant(pattern, parse_actions(acts)))
    return out


_USERNAME = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")


def valid_username(name: str) -> bool:
    """User names double as namespaces (``alice/*``), so they follow the repository-name
    component grammar: lower-case letters, digits and single separators, at most 64."""
    return len(name) <= 64 and _USERNAME.fullmatch(name) is not None


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``12h``, ``30d``, ``1w`` or plain seconds -> seconds."""
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
    mult = units.get(text[-1:])
    number = text[:-1] if mult else text
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"invalid duration {text!r} (e.g. 30d, 12h, 3600)") from None
    if value <= 0:
        raise ValueError("a duration must be positive")
    return value * (mult or 1)
