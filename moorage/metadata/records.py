"""Record types the metadata stores return: plain dataclasses, no SQL, no behaviour beyond
describing themselves, so the packages above (gc/, auth/, api/) work on values they can build
in a unit test without a database.

One section per store family; keep each family's types together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

# -- auth: users, access tokens, grants (moorage.metadata.auth_store) --------------------------------


@dataclass(slots=True)
class UserRecord:
    id: int
    name: str
    password_hash: str | None
    is_admin: bool
    is_robot: bool
    created_at: float
    password_changed_at: float
    #: None: a local user; ``"ldap"``: a directory user (moorage.auth.ldap), no password here.
    source: str | None = None

    def public_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "admin": self.is_admin, "robot": self.is_robot, "created_at": self.created_at}
        if self.source is not None:
            out["source"] = self.source
        return out


@dataclass(slots=True)
class TokenRecord:
    """A personal access token or robot token (the secret itself is never stored)."""

    id: str
    user: str
    user_id: int
    name: str
    secret_hash: str
    scope: list[str] | None
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None
    created_at: float
    #: The access token this one was made with (revoking that one revokes this one too).
    parent_id: str | None = None

    def usable(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def public_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "name": self.name,
            "scope": self.scope,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "last_used_at": self.last_used_at,
            "created_at": self.created_at,
            "parent_id": self.parent_id,
        }


@dataclass(frozen=True, slots=True)
class GrantRow:
    """One row of a user's grants: a repository pattern and its comma-separated actions."""

    pattern: str
    actions: str


# -- end of auth ------------------------------------------------------------------------------------


# =============================================================================================
# Garbage collection and storage policies (metadata/gc_store.py, metadata/policy_store.py)
# =============================================================================================


@dataclass(frozen=True, slots=True)
class Quota:
    """A storage quota: unique blob bytes allowed in ``namespace`` and everything below it."""

    namespace: str
    limit_bytes: int


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Which tags ``moorage gc`` removes in repositories matching ``pattern`` (gc/retention.py)."""

    pattern: str
    keep_last: int | None = None
    keep_regex: str | None = None
    expire_days: float | None = None

    def describe(self) -> str:
        parts = []
        if self.keep_last is not None:
            parts.append(f"keep last {self.keep_last}")
        if self.expire_days is not None:
            parts.append(f"expire after {self.expire_days:g} days")
        if self.keep_regex is not None:
            parts.append(f"keep tags matching {self.keep_regex!r}")
        return ", ".join(parts) or "(no rule)"


@dataclass(frozen=True, slots=True)
class TagInfo:
    """One tag as the collector and the retention planner see it."""

    repository_id: int
    repository: str
    name: str
    manifest_id: int
    updated_at: float


@dataclass(frozen=True, slots=True)
class ImmutableRule:
    """Tags fully matching ``tag_regex`` in repositories matching ``repo_pattern`` never move."""

    repo_pattern: str
    tag_regex: str


@dataclass(frozen=True, slots=True)
class TagHolder:
    """Which manifest a tag points at (read under the tag's row lock)."""

    manifest_id: int
    digest: str


@dataclass(slots=True)
class ManifestNode:
    """A manifest in the GC's snapshot of the index (no payload)."""

    id: int
    repository_id: int
    digest: str
    #: The manifest's ``subject`` (it is a referrer of that digest in its repository), if any.
    subject: str | None
    created_at: float
    size: int
    #: When a tag delete left it untagged (None: never, or tagged again since).
    untagged_at: float | None = None


@dataclass(slots=True)
class BlobState:
    """A blob row in the GC's snapshot: its age and the leases that protect it."""

    size: int
    last_linked_at: float
    #: An upload's claim on the digest lasts until then (None: no claim).
    pending_until: float | None = None
    #: Set by a collector that is deleting it (a tombstone); None: alive.
    deleting_since: float | None = None


@dataclass
class IndexSnapshot:
    """Everything the mark phase needs, read in one transaction (:meth:`GCStore.snapshot`)."""

    #: repository id -> name
    repos: dict[int, str] = field(default_factory=dict)
    tags: list[TagInfo] = field(default_factory=list)
    #: manifest id -> manifest
    manifests: dict[int, ManifestNode] = field(default_factory=dict)
    #: index manifest id -> digests of the manifests it lists (same repository)
    children: dict[int, list[str]] = field(default_factory=dict)
    #: manifest id -> digests of the blobs it references (config, layers)
    mblobs: dict[int, list[str]] = field(default_factory=dict)
    #: digest -> blob row
    blobs: dict[str, BlobState] = field(default_factory=dict)
    #: (repository id, digest, linked at): the repository_blobs links
    links: list[tuple[int, str, float]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StaleUpload:
    """An upload session the collector may abort (idle since ``updated_at``)."""

    id: str
    driver_state: str
    updated_at: float


@dataclass
class ConsistencyRows:
    """What ``moorage gc --check`` compares against storage (:meth:`GCStore.consistency_rows`)."""

    #: (digest, size, deleting_since, quarantined_at)
    blobs: list[tuple[str, int, float | None, float | None]]
    #: (repository id, manifest digest, referenced blob digest)
    references: list[tuple[int, str, str]]
    #: (repository id, blob digest)
    links: set[tuple[int, str]]
    #: (repository id, index digest, child digest)
    children: list[tuple[int, str, str]]
    #: (repository id, manifest digest)
    manifests: set[tuple[int, str]]


@dataclass(frozen=True, slots=True)
class RepositoryDeleted:
    """What ``DELETE /api/v1/repositories/{name}`` removed; ``pending`` are the upload sessions
    (id, storage driver state) whose leftovers in storage the caller aborts."""

    tags: int
    manifests: int
    links: int
    pending: list[tuple[str, str]]
