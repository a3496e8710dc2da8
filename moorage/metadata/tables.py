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
#: SQLite only (migration 0017): ``repositories_fts``, an FTS5 trigram index of
#: ``repositories.name`` (external content, rowid = ``repositories.id``) kept by triggers, for
#: the UI's substring search.  A virtual table and triggers: created by the migration only,
#: queried by name in ``ui.queries`` (not declared here).  PostgreSQL: ``pg_trgm`` (0016).
REPOSITORIES_FTS = "repositories_fts"
#: Migration 0018, for search terms of one or two characters (no trigram holds them): SQLite's
#: ``repository_name_grams (gram, repository_id)``, the two-character substrings of
#: ``lower(name) || char(1)``, kept by triggers; PostgreSQL's GIN index on
#: ``moorage_name_grams(name)``, a name's one- and two-character substrings.  Created by the
#: migration only, queried by name in ``ui.queries``.
REPOSITORY_NAME_GRAMS = "repository_name_grams"
NAME_GRAMS_INDEX = "ix_repositories_name_grams"

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


# -- access control ---------------------------------------------------------------------------
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
    #: NULL: a local user; ``"ldap"``: provisioned at first sign-in from the directory (no
    #: password here; rights also from its groups).  Migration 0011.
    Column("source", String(16), nullable=True),
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

#: Grants to directory groups (migration 0011): every member of ``group_name`` gets ``actions``
#: on repositories matching ``pattern``, on top of their own grants.
group_grants = Table(
    "group_grants",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("group_name", String(255), nullable=False),
    Column("pattern", String(255), nullable=False),
    Column("actions", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("group_name", "pattern", name="uq_group_grants_group_pattern"),
)

#: OpenID Connect sign-ins under way (migration 0011): one row per authorization request, keyed
#: by the SHA-256 of its ``state``; deleted when the callback uses it (a replayed state finds
#: nothing) or when it is older than ``moorage.auth.oidc.LOGIN_TTL``.
oidc_logins = Table(
    "oidc_logins",
    metadata,
    Column("state_hash", String(64), primary_key=True),
    Column("nonce", String(128), nullable=False),
    Column("code_verifier", String(128), nullable=False),
    Column("next_url", String(1024), nullable=False),
    Column("redirect_uri", String(1024), nullable=False),
    Column("created_at", Float, nullable=False),
)

#: OpenID Connect users (``users.source = 'oidc'``): the provider's subject, its refresh token
#: (to re-read the groups without the user: the access tokens they made stop when the provider
#: says no) and the groups last read.
oidc_identities = Table(
    "oidc_identities",
    metadata,
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("subject", String(255), nullable=False),
    Column("refresh_token", Text, nullable=True),
    Column("groups", Text, nullable=False),
    Column("checked_at", Float, nullable=False),
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
    #: The access token this one was made with (NULL: made with a password session, the CLI or
    #: an administrator's password); revoking a token revokes every token it made (migration 0010).
    Column("parent_id", String(32), nullable=True),
    Index("ix_access_tokens_user", "user_id"),
    Index("ix_access_tokens_parent", "parent_id"),
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

# -- policies and GC state ------------------------------------------------------------------

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
# blob for "deleting_since IS NULL" instead of using the primary key).  Partial on PostgreSQL too
# (migration 0003 says so); not declared here, as any ``postgresql_*`` argument makes SQLAlchemy
# import its PostgreSQL dialect into every process (~2 MiB, ~70 ms of each command's start).
Index("ix_blobs_deleting_since", blobs.c.deleting_since, sqlite_where=blobs.c.deleting_since.is_not(None))
Index("ix_tags_updated", tags.c.repository_id, tags.c.updated_at)
# PostgreSQL only (migration 0012, not declared here for the reason above): byte-ordered
# ("C" collation) indexes ``ix_repositories_name_c`` on repositories (name) and
# ``ix_tags_repository_name_c`` on tags (repository_id, name), so the catalog, the tags list
# and the UI's name order (``Database.lexical``) are index range scans.  SQLite's unique
# indexes compare BINARY already and serve that order as they are.
# PostgreSQL only (migration 0016, when the server allows pg_trgm): ``ix_repositories_name_trgm``,
# a trigram GIN index on repositories (name) serving the UI's substring search (``LIKE '%q%'``).

# ------------------------------------------------------------------ image insight (migration 0008)
#: OSV advisories imported with ``moorage vulndb import``; ``modified`` makes re-imports incremental.
insight_advisories = Table(
    "insight_advisories",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("modified", String(64), nullable=False, default=""),
    Column("summary", Text, nullable=False, default=""),
    Column("severity", String(16), nullable=False, default="UNKNOWN"),
    Column("score", Float, nullable=True),
    Column("aliases", Text, nullable=False, default="[]"),
    Column("source", String(1024), nullable=False, default=""),
    Column("imported_at", Float, nullable=False),
)

#: One row per (advisory, affected package): what matching looks up by ecosystem family and name.
insight_affected = Table(
    "insight_affected",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("advisory_id", String(255), ForeignKey("insight_advisories.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("ecosystem", String(128), nullable=False),
    Column("family", String(64), nullable=False),
    Column("package", String(512), nullable=False),
    #: JSON: {"ranges": [...], "versions": [...]} as OSV gives them.
    Column("spec", Text, nullable=False),
)
Index("ix_insight_affected_pkg", insight_affected.c.family, insight_affected.c.package)

#: The inventory and findings of one image manifest (a platform manifest, never an index).
insight_images = Table(
    "insight_images",
    metadata,
    Column("digest", String(255), primary_key=True),
    Column("repository", String(255), nullable=False),
    Column("os", String(255), nullable=False, default=""),
    Column("platform", String(255), nullable=False, default=""),
    Column("package_count", Integer, nullable=False, default=0),
    Column("packages", Text, nullable=False, default="[]"),
    Column("skipped", Text, nullable=False, default="[]"),
    Column("sboms", Text, nullable=False, default="{}"),
    Column("scanned_at", Float, nullable=False),
    Column("findings", Text, nullable=False, default="[]"),
    Column("counts", Text, nullable=False, default="{}"),
    Column("worst", String(16), nullable=False, default=""),
    Column("matched_generation", Integer, nullable=False, default=0),
)

#: Package -> images index for search ("which images contain openssl < 3.0.12").
insight_image_packages = Table(
    "insight_image_packages",
    metadata,
    Column("digest", String(255), ForeignKey("insight_images.digest", ondelete="CASCADE"), nullable=False, index=True),
    Column("ecosystem", String(64), nullable=False),
    Column("name", String(512), nullable=False),
    Column("version", String(255), nullable=False),
)
Index("ix_insight_image_packages_name", insight_image_packages.c.name)

#: Key/value state: the vulnerability database's generation (bumped by every import) and imports.
insight_state = Table(
    "insight_state",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

#: Pull policy per namespace: refuse images with findings at or above ``block_severity``.
insight_policies = Table(
    "insight_policies",
    metadata,
    Column("namespace", String(255), primary_key=True),
    Column("block_severity", String(16), nullable=False),
    Column("updated_at", Float, nullable=False),
)

#: Advisories a namespace accepts until ``expires_at`` (None = no expiry).
insight_allowlist = Table(
    "insight_allowlist",
    metadata,
    Column("namespace", String(255), primary_key=True),
    Column("advisory_id", String(255), primary_key=True),
    Column("expires_at", Float, nullable=True),
    Column("reason", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
)
# ---------------------------------------------------------------------------------------------
# Events: webhooks, delivery outbox, audit log (migration 0005, moorage/events/).
# ---------------------------------------------------------------------------------------------

#: Webhook endpoints made through the admin API (config-file endpoints are not stored).
#: ``namespace`` is set when a namespace admin made it (they see and manage only theirs).
webhooks = Table(
    "webhooks",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("url", String(2048), nullable=False),
    Column("secret", String(512), nullable=False, default="", server_default=""),
    Column("format", String(32), nullable=False),
    Column("actions", Text, nullable=False),  # JSON list
    Column("repositories", Text, nullable=False),  # JSON list of patterns
    Column("targets", Text, nullable=False),  # JSON list
    Column("timeout", Float, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("namespace", String(255), nullable=True),
    Column("created_by", String(255), nullable=True),
    Column("created_at", Float, nullable=False),
)

#: The durable outbox: one row per (event, matching endpoint), delivered in ``id`` order per
#: (endpoint, repository).  ``status``: pending -> delivering (claimed until ``claimed_until``
#: by ``claimed_by``) -> delivered | dead; a failed attempt goes back to pending with a later
#: ``next_attempt_at``.  ``body`` is the exact payload (signed at send time).
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("endpoint", String(64), nullable=False),
    Column("repository", String(255), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("content_type", String(128), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("next_attempt_at", Float, nullable=False),
    Column("claimed_by", String(64), nullable=True),
    Column("claimed_until", Float, nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    Index("ix_webhook_deliveries_queue", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_order", "endpoint", "repository", "status", "id"),
    Index("ix_webhook_deliveries_history", "endpoint", "id"),
)

#: Append-only audit log.  ``dedupe_key`` (unique, NULL for most rows) makes aggregated entries
#: (pulls, successful logins: one per key per window) and imported ones (GC runs) idempotent
#: across workers and replicas.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("time", Float, nullable=False),
    Column("actor", String(255), nullable=True),
    Column("action", String(64), nullable=False),
    Column("repository", String(255), nullable=True),
    Column("target", String(300), nullable=True),
    Column("client_ip", String(64), nullable=True),
    Column("user_agent", String(300), nullable=True),
    Column("detail", Text, nullable=True),  # JSON object
    Column("dedupe_key", String(400), nullable=True, unique=True),
    #: Through which face (``api``, ``ui``, ``cli``, ``v2`` ...) and with what outcome (``ok``,
    #: ``denied``) -- NULL on entries older than migration 0010.
    Column("face", String(16), nullable=True),
    Column("outcome", String(16), nullable=True),
    Index("ix_audit_log_time", "time"),
    Index("ix_audit_log_actor", "actor", "time"),
    Index("ix_audit_log_repository", "repository", "time"),
    Index("ix_audit_log_action", "action", "time"),
)


# -- web UI ---------------------------------------------------------------------------------
#: Signed-in browser sessions.  ``id`` is the sha256 of the cookie's random secret (a stolen
#: database dump yields no usable cookie); every replica sees the same rows.
ui_sessions = Table(
    "ui_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("username", String(64), nullable=False),
    #: The access token used to sign in (its revocation ends the session), if any.
    Column("token_id", String(32), nullable=True),
    #: htpasswd mode: HMAC of the user's hash line keyed with the cookie value (migration
    #: 0013); a password change makes it differ and ends the session.
    Column("credential", String(64), nullable=True),
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
    #: The repository's name (migration 0016), so the list sorted by last push or size walks
    #: one index (key, name): PostgreSQL ``ix_ui_repo_stats_push_name`` on
    #: (coalesce(last_push, 0) DESC, name COLLATE "C"), ``ix_ui_repo_stats_size_name`` on
    #: (size DESC, name COLLATE "C"); SQLite the same without the collation.  Expression
    #: indexes, created by the migration only (not declared here: see the core tables' note).
    Column("name", String(255), nullable=True),
    Index("ix_ui_repo_stats_last_push", "last_push"),
    Index("ix_ui_repo_stats_size", "size"),
)


# -- integrity ------------------------------------------------------------------------------
# Appended to the core tables above (created by migration 0004), kept here to keep merges simple.

#: The one request allowed to write to an upload session (a random token) and until when its
#: claim holds without renewal: taken by compare-and-set *before* any byte is written, so a
#: second concurrent request on the session is refused (see ``moorage.registry.service``).
uploads.append_column(Column("writer", String(64), nullable=True))
uploads.append_column(Column("writer_until", Float, nullable=True))
#: Who opened the session (user name, NULL when anonymous): caps open sessions per user.
uploads.append_column(Column("owner", String(64), nullable=True))
Index("ix_uploads_repository", uploads.c.repository_id)
Index("ix_uploads_owner", uploads.c.owner)

#: Set by ``moorage scrub`` when the stored bytes do not hash to the digest: the blob is then
#: unknown to every read and to manifest references, until a verified re-push replaces it.
blobs.append_column(Column("quarantined_at", Float, nullable=True))

#: ``moorage scrub`` progress per scope ("" = every blob, else a repository or namespace):
#: blobs are visited in digest order, so a run resumes after ``last_digest``.
scrub_progress = Table(
    "scrub_progress",
    metadata,
    Column("scope", String(255), primary_key=True),
    Column("last_digest", String(200), nullable=True),
    Column("started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("checked", BigInteger, nullable=False, default=0, server_default="0"),
    Column("checked_bytes", BigInteger, nullable=False, default=0, server_default="0"),
    Column("corrupt", Integer, nullable=False, default=0, server_default="0"),
    Column("finished_at", Float, nullable=True),
)

#: What scrub found: one row per quarantined blob (kept after a repair, for the record).
quarantined_blobs = Table(
    "quarantined_blobs",
    metadata,
    Column("digest", String(200), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("actual", String(200), nullable=True),
    Column("actual_size", BigInteger, nullable=True),
    Column("detected_at", Float, nullable=False),
    Column("repaired_at", Float, nullable=True),
)

#: When a tag delete (API, UI, retention) took the manifest's last tag: from then on (after the
#: grace period) the collector frees it without ``--delete-untagged``; NULL for a manifest
#: pushed by digest only or untagged by a tag moving elsewhere (kept, pullable by digest), and
#: cleared when a tag points at it again (docs/gc.md "What is kept").
manifests.append_column(Column("untagged_at", Float, nullable=True))

#: A registry:2 (Distribution) tree found in the storage root and imported by ``moorage serve``
#: on start (:mod:`moorage.compat.auto_import`), one row per tree: ``state`` is ``running``,
#: ``done`` (a later start imports nothing) or ``failed``; ``done``/``total`` count the blobs
#: and manifests of the plan (the "importing N of M" of ``/readyz`` and the UI).
distribution_imports = Table(
    "distribution_imports",
    metadata,
    Column("source", String(1024), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("done", Integer, nullable=False, default=0, server_default="0"),
    Column("total", Integer, nullable=False, default=0, server_default="0"),
    Column("started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    Column("detail", Text, nullable=True),
)
