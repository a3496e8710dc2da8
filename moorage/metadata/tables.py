"""SQLAlchemy Core tables: the registry's index of repositories, blobs, manifests, tags and uploads.

Times are UNIX epoch seconds (float) so that SQLite and PostgreSQL behave the same.
The Alembic migrations in ``migrations/versions`` create exactly these tables.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

repositories = Table(
    "repositories",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("public", Boolean, nullable=False, default=False, server_default="0"),
    Column("created_at", Float, nullable=False),
)

#: One row per blob present in storage.  ``pending_until`` is a lease taken by an upload that
#: is about to move bytes into place; ``deleting_since`` is the garbage collector's tombstone.
blobs = Table(
    "blobs",
    metadata,
    Column("digest", String(200), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_linked_at", Float, nullable=False),
    Column("pending_until", Float, nullable=True),
    Column("deleting_since", Float, nullable=True),
)

#: Which blobs a repository may read (pushed or mounted into it), as Distribution's layer links.
repository_blobs = Table(
    "repository_blobs",
    metadata,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", String(200), ForeignKey("blobs.digest", ondelete="CASCADE"), primary_key=True),
    Column("created_at", Float, nullable=False),
    Index("ix_repository_blobs_digest", "digest"),
)

manifests = Table(
    "manifests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("digest", String(200), nullable=False),
    Column("media_type", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("artifact_type", String(255), nullable=True),
    Column("subject_digest", String(200), nullable=True),
    Column("annotations", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("repository_id", "digest", name="uq_manifests_repository_digest"),
    Index("ix_manifests_subject", "repository_id", "subject_digest"),
)

#: Blobs (config, layers) a manifest references: what keeps blobs alive for GC.
manifest_blobs = Table(
    "manifest_blobs",
    metadata,
    Column("manifest_id", Integer, ForeignKey("manifests.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", String(200), primary_key=True),
    Index("ix_manifest_blobs_digest", "digest"),
)

#: Manifests an index references (in the same repository).
manifest_children = Table(
    "manifest_children",
    metadata,
    Column("manifest_id", Integer, ForeignKey("manifests.id", ondelete="CASCADE"), primary_key=True),
    Column("child_digest", String(200), primary_key=True),
    Index("ix_manifest_children_child", "child_digest"),
)

tags = Table(
    "tags",
    metadata,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("manifest_id", Integer, ForeignKey("manifests.id", ondelete="CASCADE"), nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_tags_manifest", "manifest_id"),
)

uploads = Table(
    "uploads",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("driver_state", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)


# -- access control (issue 3) -----------------------------------------------------------------
#: Accounts.  ``password_hash`` is bcrypt (``None`` for robot accounts, which log in with tokens).
users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=True),
    Column("is_admin", Boolean, nullable=False, default=False, server_default="0"),
    Column("is_robot", Boolean, nullable=False, default=False, server_default="0"),
    Column("created_at", Float, nullable=False),
    Column("password_changed_at", Float, nullable=False),
)

#: Organisations / namespaces: a name prefix that can be marked public as a whole.
namespaces = Table(
    "namespaces",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("public", Boolean, nullable=False, default=False, server_default="0"),
    Column("created_at", Float, nullable=False),
)

#: ``actions`` (comma-separated pull/push/delete/admin) on repositories matching ``pattern``.
grants = Table(
    "grants",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("pattern", String(255), nullable=False),
    Column("actions", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("user_id", "pattern", name="uq_grants_user_pattern"),
)

#: Personal access tokens and robot tokens: shown once, stored as sha256 of the secret.
access_tokens = Table(
    "access_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("secret_hash", String(128), nullable=False),
    #: JSON list of ``PATTERN:ACTIONS``; NULL = the owner's full rights.
    Column("scope", Text, nullable=True),
    Column("expires_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
    Column("last_used_at", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Index("ix_access_tokens_user", "user_id"),
)

#: Token-signing keys, shared by every replica (``kid`` = JWK thumbprint).
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("algorithm", String(16), nullable=False),
    Column("private_pem", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

#: Failed logins per ``user|ip`` in the current window (shared by replicas).
login_failures = Table(
    "login_failures",
    metadata,
    Column("key", String(400), primary_key=True),
    Column("window_start", Float, nullable=False),
    Column("count", Integer, nullable=False),
)

# -- policies and GC state (issue 5) ------------------------------------------------------

#: Retention per repository or namespace pattern (see ``moorage.gc.retention``).  A tag is
#: removed only if every set rule agrees: beyond the newest ``keep_last`` tags (by push time),
#: older than ``expire_days``, and not matching ``keep_regex``.
retention_policies = Table(
    "retention_policies",
    metadata,
    Column("pattern", String(255), primary_key=True),
    Column("keep_last", Integer, nullable=True),
    Column("keep_regex", String(255), nullable=True),
    Column("expire_days", Float, nullable=True),
    Column("created_at", Float, nullable=False),
)

#: Tags matching ``tag_regex`` in repositories matching ``repo_pattern`` can't be moved.
immutable_tags = Table(
    "immutable_tags",
    metadata,
    Column("repo_pattern", String(255), primary_key=True),
    Column("tag_regex", String(255), primary_key=True),
    Column("created_at", Float, nullable=False),
)

#: Storage quota per namespace (the repository itself and everything below ``namespace/``).
quotas = Table(
    "quotas",
    metadata,
    Column("namespace", String(255), primary_key=True),
    Column("limit_bytes", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
)

#: One row per garbage-collection run (bookkeeping for monitoring and post-mortems).
gc_runs = Table(
    "gc_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    Column("dry_run", Boolean, nullable=False, default=False, server_default="0"),
    Column("manifests_removed", Integer, nullable=False, default=0, server_default="0"),
    Column("blobs_removed", Integer, nullable=False, default=0, server_default="0"),
    Column("bytes_removed", BigInteger, nullable=False, default=0, server_default="0"),
    Column("tags_removed", Integer, nullable=False, default=0, server_default="0"),
)

# Indexes on core tables that the collector's queries use (created by migration 0003).
# Partial: only tombstoned rows (a full index would lure SQLite's planner into scanning every live
# blob for "deleting_since IS NULL" instead of using the primary key).
Index("ix_blobs_deleting_since", blobs.c.deleting_since,
      sqlite_where=blobs.c.deleting_since.is_not(None), postgresql_where=blobs.c.deleting_since.is_not(None))
Index("ix_tags_updated", tags.c.repository_id, tags.c.updated_at)

# -- web UI (issue 11) ------------------------------------------------------------------------
#: Signed-in browser sessions.  ``id`` is the sha256 of the cookie's random secret (a stolen
#: database dump yields no usable cookie); every replica sees the same rows.
ui_sessions = Table(
    "ui_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("username", String(64), nullable=False),
    #: The access token used to sign in (its revocation ends the session), if any.
    Column("token_id", String(32), nullable=True),
    Column("csrf", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_ui_sessions_expires", "expires_at"),
)

#: Push / pull counts per repository and hour (``bucket`` = epoch hour), for the activity
#: chart.  Bounded: buckets older than ``ui.activity_days`` are pruned.
ui_activity = Table(
    "ui_activity",
    metadata,
    Column("bucket", Integer, primary_key=True),
    Column("repository", String(255), primary_key=True),
    Column("pushes", Integer, nullable=False, default=0, server_default="0"),
    Column("pulls", Integer, nullable=False, default=0, server_default="0"),
)

#: Per-repository figures the repository list sorts by (tag count, last push, bytes linked):
#: computing them for 10,000 repositories per page view is too slow, so the UI keeps this
#: copy -- refreshed for a repository after each push or delete event, and in full
#: periodically (catching GC, retention and other replicas).  Only the *order* of the list
#: comes from here; the figures shown are read live for the rows of the page.
ui_repo_stats = Table(
    "ui_repo_stats",
    metadata,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("tags", Integer, nullable=False),
    Column("last_push", Float, nullable=True),
    Column("size", BigInteger, nullable=False),
    Index("ix_ui_repo_stats_last_push", "last_push"),
    Index("ix_ui_repo_stats_size", "size"),
)
