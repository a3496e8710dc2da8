"""Queries over the metadata tables: what the registry service asks of the database.

Every method is one short transaction with one or two indexed statements.  Methods take
repository *names* (already validated by the caller) and return plain values or small
dataclasses, so nothing above this module sees SQL.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, delete, exists, func, or_, select, union, update

from .db import Database, _SyncReader
from .tables import (
    blobs,
    manifest_blobs,
    manifest_children,
    manifests,
    quarantined_blobs,
    repositories,
    repository_blobs,
    tags,
    uploads,
)
from .writer import run_inline

if TYPE_CHECKING:  # the asyncio extension (and the ORM it imports) is not loaded on SQLite
    from sqlalchemy.ext.asyncio import AsyncConnection

#: Most ranges (prefixes + single names) one :meth:`MetadataStore.catalog_in` query unions.
MAX_CATALOG_RANGES = 200
#: Appended to a name, the smallest string after it that it does not start: ``[name,
#: name + EXACT_END)`` holds ``name`` alone (PostgreSQL text holds no NUL, byte order).
EXACT_END = "\x01"


def catalog_ranges(prefixes: Sequence[str], names: Sequence[str]) -> list[tuple[str, str]] | None:
    """Prefixes and single names as sorted, disjoint half-open byte-order ranges ``[lo, hi)``
    (overlapping ones merged, so no name is read twice); None if a prefix has no upper bound."""
    spans: list[tuple[str, str]] = []
    for prefix in prefixes:
        upper = prefix_successor(prefix)
        if upper is None:
            return None
        spans.append((prefix, upper))
    spans += [(name, name + EXACT_END) for name in names]
    merged: list[tuple[str, str]] = []
    for lo, hi in sorted(spans, key=lambda r: (r[0].encode(), r[1].encode())):
        if merged and lo.encode() <= merged[-1][1].encode():
            if hi.encode() > merged[-1][1].encode():
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def _catalog_ranges_statement(repo_name: Any) -> Any:
    """PostgreSQL's :meth:`MetadataStore.catalog_in`: a LATERAL index range scan per element
    of the arrays ``:lo``/``:hi`` (each stopping after ``:n`` names), plus the public
    repositories if ``:public``, merged in order.  The SQL text is the same for any number of
    ranges, so it is planned once per connection (asyncpg's prepared statements) and cheaply."""
    from sqlalchemy import ARRAY, Boolean, Integer, Text, literal_column

    g = (
        func.unnest(bindparam("lo", type_=ARRAY(Text)), bindparam("hi", type_=ARRAY(Text)))
        .table_valued("lo", "hi")
        .render_derived(name="g")
    )
    has_manifest = exists().where(manifests.c.repository_id == repositories.c.id)
    after = repo_name > bindparam("last", type_=Text)
    cols = (repositories.c.name.label("name"), repositories.c.public.label("public"))
    per_range = (
        select(*cols)
        .where(repo_name >= g.c.lo, repo_name < g.c.hi, after, has_manifest)
        .order_by(repo_name)
        .limit(bindparam("n", type_=Integer))
        .lateral("r")
    )
    in_ranges = select(per_range.c.name, per_range.c.public).select_from(g).join(per_range, literal_column("true"))
    public = (
        select(*cols)
        .where(repositories.c.public, after, has_manifest, bindparam("public", type_=Boolean))
        .order_by(repo_name)
        .limit(bindparam("n", type_=Integer))
        .subquery()
    )
    merged = union(in_ranges, select(public.c.name, public.c.public)).subquery()
    return select(merged.c.name, merged.c.public).order_by(merged.c.name.collate("C")).limit(bindparam("n", type_=Integer))


def prefix_successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (byte order), or
    None if there is none: ``"team/"`` -> ``"team0"``, so ``prefix <= name < successor``."""
    stripped = prefix.rstrip("\U0010ffff")
    if not stripped:
        return None
    return stripped[:-1] + chr(ord(stripped[-1]) + 1)


#: How long an upload may hold its claim on a blob between "about to move bytes into place"
#: and "linked"; after that the garbage collector may treat the claim as abandoned.
CLAIM_LEASE = 600.0
#: A GC tombstone older than this is treated as left by a killed collector.
TOMBSTONE_STALE = 300.0


@dataclass(slots=True)
class ManifestRecord:
    digest: str
    media_type: str
    size: int
    payload: bytes


@dataclass(slots=True)
class UploadRecord:
    id: str
    repository: str
    size: int
    state: dict[str, Any]
    created_at: float
    updated_at: float
    #: Until when another request's claim on the session holds (None: nobody writes now).
    writer_until: float | None = None
    #: The claim's token (``<process instance>.<random>``), None when nobody writes.
    writer: str | None = None


class TooManyUploads(Exception):
    """Opening one more upload session would exceed a cap (``scope`` is "repository" or "user")."""

    def __init__(self, scope: str, limit: int) -> None:
        super().__init__(f"too many open upload sessions for this {scope} (limit {limit})")
        self.scope = scope
        self.limit = limit


@dataclass(slots=True)
class ReferrerRecord:
    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    annotations: dict[str, str] | None


# Hot read paths use statements built once (bound parameters), sparing SQLAlchemy the work of
# constructing and hashing an expression tree per request.
_MANIFEST_COLS = (manifests.c.digest, manifests.c.media_type, manifests.c.size, manifests.c.payload)
_GET_MANIFEST_BY_DIGEST = (
    select(*_MANIFEST_COLS)
    .select_from(manifests.join(repositories, repositories.c.id == manifests.c.repository_id))
    .where(repositories.c.name == bindparam("repo"), manifests.c.digest == bindparam("ref"))
)
_GET_MANIFEST_BY_TAG = (
    select(*_MANIFEST_COLS)
    .select_from(
        tags.join(repositories, repositories.c.id == tags.c.repository_id).join(manifests, manifests.c.id == tags.c.manifest_id)
    )
    .where(repositories.c.name == bindparam("repo"), tags.c.name == bindparam("ref"))
)
_REPOSITORY_ID = select(repositories.c.id).where(repositories.c.name == bindparam("repo"))
_BLOB_SIZE_IN_REPOSITORY = (
    select(blobs.c.size)
    .select_from(
        repository_blobs.join(repositories, repositories.c.id == repository_blobs.c.repository_id).join(
            blobs, blobs.c.digest == repository_blobs.c.digest
        )
    )
    .where(
        repositories.c.name == bindparam("repo"),
        repository_blobs.c.digest == bindparam("digest"),
        blobs.c.deleting_since.is_(None),
        blobs.c.quarantined_at.is_(None),
    )
)


# Upload-session statements of the push path, built once like the reads above.
_COUNT_OPEN_UPLOADS = select(
    select(func.count()).select_from(uploads).where(uploads.c.repository_id == bindparam("repo_id")).scalar_subquery(),
    select(func.count()).select_from(uploads).where(uploads.c.owner == bindparam("owner")).scalar_subquery(),
)
_CLAIM_UPLOAD = (
    update(uploads)
    .where(
        uploads.c.id == bindparam("uid"),
        uploads.c.size == bindparam("expected"),
        or_(uploads.c.writer.is_(None), uploads.c.writer_until < bindparam("now"), uploads.c.writer == bindparam("w")),
    )
    .values(writer=bindparam("w"), writer_until=bindparam("until"))
)
_UPDATE_UPLOAD = (
    update(uploads)
    .where(uploads.c.id == bindparam("uid"), uploads.c.size == bindparam("expected"))
    .values(size=bindparam("new_size"), driver_state=bindparam("state"), updated_at=bindparam("now"))
)
_UPDATE_UPLOAD_CLAIMED = _UPDATE_UPLOAD.where(uploads.c.writer == bindparam("w"))
_UPDATE_UPLOAD_UNCLAIMED = _UPDATE_UPLOAD.where(
    or_(uploads.c.writer.is_(None), uploads.c.writer_until < bindparam("now"))
).values(writer=None, writer_until=None)
_UPDATE_UPLOAD_RELEASE = _UPDATE_UPLOAD_CLAIMED.values(writer=None, writer_until=None)
_INSERT_UPLOAD = uploads.insert()
_DELETE_UPLOAD = delete(uploads).where(uploads.c.id == bindparam("uid"))
_BLOB_FOR_UPDATE = select(blobs.c.deleting_since).where(blobs.c.digest == bindparam("digest")).with_for_update()
_BLOB_LINK_FOR_UPDATE = (
    select(blobs.c.deleting_since, blobs.c.quarantined_at).where(blobs.c.digest == bindparam("digest")).with_for_update()
)
_RENEW_BLOB_LEASE = (
    update(blobs)
    .where(blobs.c.digest == bindparam("d"))
    .values(size=bindparam("new_size"), pending_until=bindparam("until"), deleting_since=None, last_linked_at=bindparam("now"))
)
_BLOB_LINKED = update(blobs).where(blobs.c.digest == bindparam("d")).values(last_linked_at=bindparam("now"), pending_until=None)


def _rowcount(stmt: Any, params: dict[str, Any] | None = None) -> Callable[[Connection], int]:
    """A one-statement write transaction answering how many rows it changed."""
    return lambda conn: int(conn.execute(stmt, params).rowcount or 0)


#: Extra writes a change's caller runs inside the change's own transaction, after the change:
#: the audit entry and webhook outbox rows of its event (``moorage.registry.events``).
Record = Callable[[Connection], None]


class MissingReferences(Exception):
    def __init__(self, blobs: list[str], manifests: list[str]) -> None:
        super().__init__("missing references")
        self.blobs = blobs
        self.manifests = manifests


class WrongSizes(Exception):
    """Descriptors whose declared size differs from the stored blob's: (digest, declared, actual)."""

    def __init__(self, wrong: list[tuple[str, int, int]]) -> None:
        super().__init__("descriptor sizes do not match the blobs")
        self.wrong = wrong


class BlobBeingDeleted(Exception):
    """The garbage collector holds a tombstone on this digest; retry shortly."""


class UploadClaimRefused(Exception):
    """``claim_blob(upload=...)``: the upload session moved or another request holds it."""


#: A rule consulted inside put_manifest's transaction before a tag moves; raises to refuse.
#: Arguments: (connection, database, repository id, repository name, tag, new manifest id).
TagGuard = Callable[["AsyncConnection", Database, int, str, str, int], Awaitable[None]]


class MetadataStore:
    def __init__(self, db: Database, *, tag_guards: list[TagGuard] | None = None) -> None:
        self.db = db
        #: Optional policies (e.g. immutable tags, from the policies extension) checked in the
        #: same transaction as the tag move, so concurrent pushes cannot slip past them.
        self.tag_guards: list[TagGuard] = list(tag_guards or [])
        # Listing statements, built once per dialect (``lexical`` differs); ``last`` defaults to
        # "" (every name sorts after it) so one statement serves the first and later pages.
        tag_name, repo_name = db.lexical(tags.c.name), db.lexical(repositories.c.name)
        repo_id = select(repositories.c.id).where(repositories.c.name == bindparam("repo")).scalar_subquery()
        self._list_tags = (
            select(tags.c.name).where(tags.c.repository_id == repo_id, tag_name > bindparam("last")).order_by(tag_name)
        )
        self._list_tags_n = self._list_tags.limit(bindparam("n"))
        self._catalog = (
            select(repositories.c.name)
            .where(exists().where(manifests.c.repository_id == repositories.c.id), repo_name > bindparam("last"))
            .order_by(repo_name)
        )
        self._catalog_n = self._catalog.limit(bindparam("n"))
        self._catalog_rows_n = self._catalog_n.add_columns(repositories.c.public)
        self._catalog_ranges = None if db.is_sqlite else _catalog_ranges_statement(repo_name)
        link = db.insert(repository_blobs)
        self._link_upsert = link.on_conflict_do_update(
            index_elements=["repository_id", "digest"], set_={"created_at": link.excluded.created_at}
        )

    # -- repositories ---------------------------------------------------------------------
    # Write methods run their transaction as one synchronous function through
    # ``Database.run_write`` (SQLite: on the writer thread with group commit).
    def _ensure_repository(self, conn: Connection, name: str) -> int:
        repo_id = conn.execute(_REPOSITORY_ID, {"repo": name}).scalar()
        if repo_id is not None:
            return int(repo_id)
        conn.execute(
            self.db.insert(repositories)
            .values(name=name, public=False, created_at=time.time())
            .on_conflict_do_nothing(index_elements=["name"])
        )
        return int(conn.execute(_REPOSITORY_ID, {"repo": name}).scalar_one())

    async def repository_exists(self, name: str) -> bool:
        async with self.db.read(snapshot=False) as conn:
            return (await conn.execute(select(repositories.c.id).where(repositories.c.name == name))).first() is not None

    async def catalog(self, n: int | None, last: str | None) -> list[str]:
        """Repositories holding at least one manifest, lexically ordered, after ``last``."""
        stmt, params = (self._catalog, {"last": last or ""}) if n is None else (self._catalog_n, {"last": last or "", "n": n})
        return [row[0] for row in await self.db.all(stmt, params)]  # (PostgreSQL: straight through asyncpg)

    async def catalog_in(
        self, n: int, last: str | None, prefixes: Sequence[str] = (), names: Sequence[str] = (), *, public: bool = False
    ) -> list[str]:
        """The catalog restricted to what a caller may see, without reading the rest of it.

        ``prefixes``: name prefixes (a grant ``team/*`` is the prefix ``team/``), each one a
        range of the name index; ``names``: single repositories; ``public``: also every
        repository marked public (a partial index).  Each branch is an ordered index range
        scan stopping after ``n`` rows; the union is merged in order -- a user with grants on
        10 namespaces out of 100,000 reads 10 ranges, not the catalog.  At most
        :data:`MAX_CATALOG_RANGES` prefixes and names (the caller falls back to filtering
        the plain catalog beyond that).
        """
        return [name for name, _ in await self.catalog_in_rows(n, last, prefixes, names, public=public)]

    async def catalog_in_rows(
        self, n: int, last: str | None, prefixes: Sequence[str] = (), names: Sequence[str] = (), *, public: bool = False
    ) -> list[tuple[str, bool]]:
        """:meth:`catalog_in` with each repository's own ``public`` flag, so that the caller's
        pull filter needs no second query (``CatalogScope.pull``)."""
        if len(prefixes) + len(names) > MAX_CATALOG_RANGES:
            raise ValueError("too many catalog ranges")
        if any(not p for p in prefixes):  # everything
            return [(r[0], bool(r[1])) for r in await self.db.all(self._catalog_rows_n, {"last": last or "", "n": n})]
        ranges = catalog_ranges(prefixes, names)
        if ranges == [] and not public:
            return []
        if self._catalog_ranges is not None and ranges is not None:
            # PostgreSQL: one statement whatever the number of ranges (planned in well under a
            # millisecond; a UNION of 12 branches took ~3 ms to plan for 1 ms of execution).
            params = {"lo": [r[0] for r in ranges], "hi": [r[1] for r in ranges], "last": last or "", "n": n}
            params["public"] = public
            async with self.db.read(snapshot=False) as conn:
                return [(r[0], bool(r[1])) for r in await conn.execute(self._catalog_ranges, params)]
        name = self.db.lexical(repositories.c.name)
        has_manifest = exists().where(manifests.c.repository_id == repositories.c.id)
        after = name > (last or "")
        cols = (repositories.c.name.label("name"), repositories.c.public.label("public"))
        branches = []
        for prefix in sorted(set(prefixes)):
            where = [name >= prefix, after, has_manifest]
            upper = prefix_successor(prefix)
            if upper is not None:
                where.append(name < upper)
            branches.append(select(*cols).where(*where).order_by(name).limit(n))
        exact = sorted(set(names))
        if exact:
            branches.append(
                select(*cols)
                .where(repositories.c.name.in_(exact), after, has_manifest)
                .order_by(name)  # the first n in order, not any n of them
                .limit(n)
            )
        if public:
            branches.append(
                select(*cols)
                .where(repositories.c.public, after, has_manifest)  # (the partial index's predicate, as written)
                .order_by(name)
                .limit(n)
            )
        # Each branch as a subquery (SQLite allows ORDER BY/LIMIT only there in a compound).
        parts = [select(*b.subquery().c) for b in branches]
        merged = union(*parts).subquery() if len(parts) > 1 else branches[0].subquery()
        q = select(merged.c.name, merged.c.public).order_by(self.db.lexical(merged.c.name)).limit(n)
        async with self.db.read(snapshot=False) as conn:
            return [(r[0], bool(r[1])) for r in await conn.execute(q)]

    # -- blobs ----------------------------------------------------------------------------
    async def blob_size_in_repository(self, repository: str, digest: str) -> int | None:
        """Size of ``digest`` if ``repository`` may read it (pushed or mounted there) and it is live."""
        row = await self.db.first(_BLOB_SIZE_IN_REPOSITORY, {"repo": repository, "digest": digest})
        return None if row is None or row[0] is None else int(row[0])

    async def blob_size(self, digest: str) -> int | None:
        """Size of a live blob known to the registry (any repository)."""
        async with self.db.read(snapshot=False) as conn:
            size = (
                await conn.execute(
                    select(blobs.c.size).where(
                        blobs.c.digest == digest, blobs.c.deleting_since.is_(None), blobs.c.quarantined_at.is_(None)
                    )
                )
            ).scalar()
        return None if size is None else int(size)

    async def claim_blob(self, digest: str, size: int, upload: tuple[str, int, str, float] | None = None) -> None:
        """Take a lease on ``digest`` before its bytes are moved into place.

        The garbage collector never tombstones a blob with a live lease, and an upload never
        proceeds while a tombstone stands (it waits; a stale tombstone left by a killed
        collector is cleared).  Raises :class:`BlobBeingDeleted` if the wait runs out.

        ``upload`` = (upload id, expected size, writer token, claim until): also claim that
        upload session in the same transaction (a completing PUT without body then costs no
        transaction of its own for its claim); :class:`UploadClaimRefused` if it can't.
        """

        def txn(conn: Connection) -> str:
            now = time.time()
            if upload is not None:
                upload_id, expected, writer, until = upload
                res = conn.execute(
                    _CLAIM_UPLOAD, {"uid": upload_id, "expected": expected, "now": now, "w": writer, "until": until}
                )
                if not res.rowcount:
                    raise UploadClaimRefused(upload_id)
            row = conn.execute(_BLOB_FOR_UPDATE, {"digest": digest}).first()
            if row is None:
                res = conn.execute(
                    self.db.insert(blobs)
                    .values(digest=digest, size=size, created_at=now, last_linked_at=now, pending_until=now + CLAIM_LEASE)
                    .on_conflict_do_nothing(index_elements=["digest"])
                )
                # Else someone inserted the row meanwhile (PostgreSQL can't lock an absent
                # row): maybe the collector's orphan tombstone -- look again (docs/gc.md).
                return "claimed" if res.rowcount else "again"
            if row.deleting_since is None or row.deleting_since < now - TOMBSTONE_STALE:
                conn.execute(_RENEW_BLOB_LEASE, {"d": digest, "new_size": size, "until": now + CLAIM_LEASE, "now": now})
                return "claimed"
            return "wait"

        for _ in range(600):
            outcome = await self.db.run_write(txn)
            if outcome == "claimed":
                return
            if outcome == "wait":
                await asyncio.sleep(0.1)
        raise BlobBeingDeleted(digest)

    async def link_blob(
        self,
        repository: str,
        digest: str,
        *,
        repaired: bool = False,
        finished_upload: str | None = None,
        record: Record | None = None,
    ) -> bool:
        """Let ``repository`` read ``digest`` (after upload or mount); releases the upload's lease.

        ``repaired``: the caller has just put verified bytes at the content address (which
        ``moorage scrub`` had emptied), so a quarantine on the digest ends.
        ``finished_upload``: the session whose bytes these were is deleted in the same
        transaction (a blob PUT then costs two write transactions, not three).
        Returns False (and deletes nothing) if the blob is unknown or being deleted.
        """

        def txn(conn: Connection) -> bool:
            now = time.time()
            row = conn.execute(_BLOB_LINK_FOR_UPDATE, {"digest": digest}).first()
            if row is None or row.deleting_since is not None:
                return False
            repo_id = self._ensure_repository(conn, repository)
            if repaired and row.quarantined_at is not None:
                conn.execute(
                    update(quarantined_blobs)
                    .where(quarantined_blobs.c.digest == digest, quarantined_blobs.c.repaired_at.is_(None))
                    .values(repaired_at=now)
                )
                conn.execute(
                    update(blobs)
                    .where(blobs.c.digest == digest)
                    .values(last_linked_at=now, pending_until=None, quarantined_at=None)
                )
            else:
                conn.execute(_BLOB_LINKED, {"d": digest, "now": now})
            conn.execute(self._link_upsert, {"repository_id": repo_id, "digest": digest, "created_at": now})
            if finished_upload is not None:
                conn.execute(_DELETE_UPLOAD, {"uid": finished_upload})
            if record is not None:
                record(conn)
            return True

        return await self.db.run_write(txn)

    async def unlink_blob(self, repository: str, digest: str, *, record: Record | None = None) -> bool:
        def txn(conn: Connection) -> bool:
            repo_id = conn.execute(_REPOSITORY_ID, {"repo": repository}).scalar()
            if repo_id is None:
                return False
            res = conn.execute(
                delete(repository_blobs).where(repository_blobs.c.repository_id == repo_id, repository_blobs.c.digest == digest)
            )
            if res.rowcount and record is not None:
                record(conn)
            return bool(res.rowcount)

        return await self.db.run_write(txn)

    # -- uploads --------------------------------------------------------------------------
    async def create_upload(
        self,
        upload_id: str,
        repository: str,
        state: dict[str, Any],
        *,
        owner: str | None = None,
        writer: str | None = None,
        writer_until: float | None = None,
        max_per_repository: int = 0,
        max_per_owner: int = 0,
    ) -> None:
        """Record a new session; ``writer`` creates it already claimed (monolithic uploads).

        The caps (0 = none) are checked in the same write transaction as the insert, by two
        counts over indexed columns; on PostgreSQL the repository row is locked first, so
        concurrent POSTs to one repository cannot both pass its last free slot.
        """
        driver_state = json.dumps(state)

        def txn(conn: Connection) -> None:
            now = time.time()
            repo_id = self._ensure_repository(conn, repository)
            per_owner = max_per_owner > 0 and owner is not None
            if max_per_repository > 0 or per_owner:
                if not self.db.is_sqlite and max_per_repository > 0:
                    conn.execute(select(repositories.c.id).where(repositories.c.id == repo_id).with_for_update())
                # One statement, two index-only counts.
                n_repo, n_owner = conn.execute(_COUNT_OPEN_UPLOADS, {"repo_id": repo_id, "owner": owner}).one()
                if max_per_repository > 0 and int(n_repo or 0) >= max_per_repository:
                    raise TooManyUploads("repository", max_per_repository)
                if per_owner and int(n_owner or 0) >= max_per_owner:
                    raise TooManyUploads("user", max_per_owner)
            conn.execute(
                _INSERT_UPLOAD,
                {
                    "id": upload_id,
                    "repository_id": repo_id,
                    "size": 0,
                    "driver_state": driver_state,
                    "created_at": now,
                    "updated_at": now,
                    "owner": owner,
                    "writer": writer,
                    "writer_until": writer_until,
                },
            )

        await self.db.run_write(txn)

    async def get_upload(self, upload_id: str, repository: str) -> UploadRecord | None:
        q = (
            select(uploads, repositories.c.name)
            .select_from(uploads.join(repositories, repositories.c.id == uploads.c.repository_id))
            .where(uploads.c.id == upload_id, repositories.c.name == repository)
        )
        async with self.db.read(snapshot=False) as conn:
            row = (await conn.execute(q)).first()
        if row is None:
            return None
        return UploadRecord(
            row.id,
            row.name,
            int(row.size),
            json.loads(row.driver_state),
            row.created_at,
            row.updated_at,
            row.writer_until if row.writer is not None else None,
            row.writer,
        )

    async def claim_upload(self, upload_id: str, expected_size: int, writer: str, until: float) -> bool:
        """Make ``writer`` the session's only writer, if it is at ``expected_size`` and nobody
        else holds an unexpired claim (one indexed compare-and-set, before any byte is written)."""
        # (A claim this writer already holds counts as free: the statement is shared with
        # claim_blob, where a retried transaction may find its own claim.)
        params = {"uid": upload_id, "expected": expected_size, "now": time.time(), "w": writer, "until": until}
        return bool(await self.db.run_write(_rowcount(_CLAIM_UPLOAD, params)))

    async def take_over_upload(self, upload_id: str, expected_size: int, old_writer: str, writer: str, until: float) -> bool:
        """Replace the claim of a writer known to be dead (its process is gone) by ``writer``'s."""
        stmt = (
            update(uploads)
            .where(uploads.c.id == upload_id, uploads.c.size == expected_size, uploads.c.writer == old_writer)
            .values(writer=writer, writer_until=until)
        )
        return bool(await self.db.run_write(_rowcount(stmt)))

    async def renew_upload_claim(self, upload_id: str, writer: str, until: float) -> bool:
        """Extend ``writer``'s claim (and the session's idle clock); False if it was lost."""
        stmt = (
            update(uploads)
            .where(uploads.c.id == upload_id, uploads.c.writer == writer)
            .values(writer_until=until, updated_at=time.time())
        )
        return bool(await self.db.run_write(_rowcount(stmt)))

    async def release_upload(self, upload_id: str, writer: str) -> None:
        """Give up ``writer``'s claim without changing the session (a no-op if not held)."""
        stmt = update(uploads).where(uploads.c.id == upload_id, uploads.c.writer == writer).values(writer=None, writer_until=None)
        await self.db.run_write(_rowcount(stmt))

    async def update_upload(
        self,
        upload_id: str,
        expected_size: int,
        size: int,
        state: dict[str, Any],
        *,
        writer: str | None = None,
        release: bool = True,
    ) -> bool:
        """Compare-and-set the upload's progress; False if someone else moved it meanwhile.

        With ``writer``, only while that claim still holds (and ``release`` ends it in the same
        statement, so a PATCH costs one claim and one update); without, only while nobody
        holds an unexpired claim (and an expired one ends).
        """
        params: dict[str, Any] = {
            "uid": upload_id,
            "expected": expected_size,
            "new_size": size,
            "state": json.dumps(state),
            "now": time.time(),
        }
        if writer is None:
            stmt = _UPDATE_UPLOAD_UNCLAIMED
        else:
            stmt = _UPDATE_UPLOAD_RELEASE if release else _UPDATE_UPLOAD_CLAIMED
            params["w"] = writer
        return bool(await self.db.run_write(_rowcount(stmt, params)))

    async def delete_upload(self, upload_id: str) -> None:
        await self.db.run_write(_rowcount(_DELETE_UPLOAD, {"uid": upload_id}))

    async def stale_uploads(self, older_than: float) -> list[UploadRecord]:
        q = (
            select(uploads, repositories.c.name)
            .select_from(uploads.join(repositories, repositories.c.id == uploads.c.repository_id))
            .where(uploads.c.updated_at < older_than)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(q)).all()
        return [UploadRecord(r.id, r.name, int(r.size), json.loads(r.driver_state), r.created_at, r.updated_at) for r in rows]

    # -- manifests ------------------------------------------------------------------------
    async def put_manifest(
        self,
        repository: str,
        digest: str,
        media_type: str,
        payload: bytes,
        *,
        blob_digests: Sequence[str],
        child_digests: Sequence[str],
        subject: str | None,
        artifact_type: str | None,
        annotations: dict[str, str] | None,
        tag: str | None,
        blob_sizes: dict[str, int] | None = None,
        verify_references: bool = True,
        record: Record | None = None,
    ) -> None:
        """Store a manifest (and point ``tag`` at it) if everything it references is present.

        ``blob_sizes`` (digest -> size the manifest declares) are checked against the stored
        blobs: a descriptor with a wrong size would make every client's pull fail verification.

        One write transaction: the reference check, the manifest row, its reference rows and
        the tag move together, and the referenced blob rows are share-locked so the garbage
        collector cannot tombstone them in between (see docs/gc.md).

        ``verify_references=False`` records a manifest whose blobs and children are not here
        yet (a pull-through cache stores a manifest before the client asks for its layers).
        ``record``: the event's audit/outbox writes, run last in the same transaction.
        """
        blob_set = sorted(set(blob_digests))
        child_set = sorted(set(child_digests))
        annotations_json = json.dumps(annotations) if annotations else None

        def txn(conn: Connection) -> None:
            now = time.time()
            repo_id = self._ensure_repository(conn, repository)
            if blob_set and verify_references:
                stored = dict(
                    conn.execute(
                        select(blobs.c.digest, blobs.c.size)
                        .select_from(blobs.join(repository_blobs, repository_blobs.c.digest == blobs.c.digest))
                        .where(
                            repository_blobs.c.repository_id == repo_id,
                            blobs.c.digest.in_(blob_set),
                            blobs.c.deleting_since.is_(None),
                            blobs.c.quarantined_at.is_(None),
                        )
                        # Share-lock the link rows too: a link pruned by the collector meanwhile
                        # then drops out of the result instead of being read from our snapshot.
                        .with_for_update(read=True, of=[blobs, repository_blobs])
                    )
                    .tuples()
                    .all()
                )
            else:
                stored = {}
            found = set(stored)
            wrong = [
                (d, want, int(stored[d])) for d, want in (blob_sizes or {}).items() if d in stored and int(stored[d]) != want
            ]
            if wrong:
                raise WrongSizes(wrong)
            missing_children: list[str] = []
            if child_set and verify_references:
                have = set(
                    conn.execute(
                        select(manifests.c.digest)
                        .where(manifests.c.repository_id == repo_id, manifests.c.digest.in_(child_set))
                        .with_for_update(read=True)  # GC deleting an untagged child waits or skips (docs/gc.md)
                    ).scalars()
                )
                missing_children = [d for d in child_set if d not in have]
            missing_blobs = [d for d in blob_set if d not in found]
            if (missing_blobs or missing_children) and verify_references:
                raise MissingReferences(missing_blobs, missing_children)

            manifest_id = None
            for _ in range(3):
                conn.execute(
                    self.db.insert(manifests)
                    .values(
                        repository_id=repo_id,
                        digest=digest,
                        media_type=media_type,
                        size=len(payload),
                        payload=payload,
                        artifact_type=artifact_type,
                        subject_digest=subject,
                        annotations=annotations_json,
                        created_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["repository_id", "digest"])
                )
                # Share-locked: the collector deleting this (untagged) manifest waits or skips;
                # if it deleted it just now, insert again.
                manifest_id = conn.execute(
                    select(manifests.c.id)
                    .where(manifests.c.repository_id == repo_id, manifests.c.digest == digest)
                    .with_for_update(read=True)
                ).scalar()
                if manifest_id is not None:
                    break
            if manifest_id is None:
                raise BlobBeingDeleted(digest)
            if blob_set:
                conn.execute(
                    self.db.insert(manifest_blobs).on_conflict_do_nothing(),
                    [{"manifest_id": manifest_id, "digest": d} for d in blob_set],
                )
            if child_set:
                conn.execute(
                    self.db.insert(manifest_children).on_conflict_do_nothing(),
                    [{"manifest_id": manifest_id, "child_digest": d} for d in child_set],
                )
            if tag is not None:
                if self.tag_guards:
                    # The guards are async (``await conn.execute``) but never wait for anything
                    # but SQL: run them here, inside this transaction.
                    face = _SyncReader(conn)
                    for guard in self.tag_guards:
                        run_inline(guard(face, self.db, repo_id, repository, tag, manifest_id))  # type: ignore[arg-type]
                conn.execute(
                    self.db.insert(tags)
                    .values(repository_id=repo_id, name=tag, manifest_id=manifest_id, updated_at=now)
                    .on_conflict_do_update(
                        index_elements=["repository_id", "name"], set_={"manifest_id": manifest_id, "updated_at": now}
                    )
                )
                # Tagged again after a tag delete: no longer the collector's (docs/gc.md).
                conn.execute(
                    update(manifests)
                    .where(manifests.c.id == manifest_id, manifests.c.untagged_at.is_not(None))
                    .values(untagged_at=None)
                )
            if record is not None:
                record(conn)

        await self.db.run_write(txn)

    async def get_manifest(self, repository: str, reference: str, *, by_digest: bool) -> ManifestRecord | None:
        stmt = _GET_MANIFEST_BY_DIGEST if by_digest else _GET_MANIFEST_BY_TAG
        row = await self.db.first(stmt, {"repo": repository, "ref": reference})
        if row is None:
            return None
        digest, media_type, size, payload = row  # _MANIFEST_COLS, in order
        return ManifestRecord(digest, media_type, int(size), bytes(payload))

    async def delete_manifest(self, repository: str, digest: str, *, record: Record | None = None) -> bool:
        """Remove a manifest by digest, with every tag pointing at it."""

        def txn(conn: Connection) -> bool:
            repo_id = conn.execute(_REPOSITORY_ID, {"repo": repository}).scalar()
            if repo_id is None:
                return False
            mid = conn.execute(
                select(manifests.c.id).where(manifests.c.repository_id == repo_id, manifests.c.digest == digest)
            ).scalar()
            if mid is None:
                return False
            # Explicit deletes, so correctness never depends on SQLite's foreign_keys pragma.
            conn.execute(delete(tags).where(tags.c.manifest_id == mid))
            conn.execute(delete(manifest_blobs).where(manifest_blobs.c.manifest_id == mid))
            conn.execute(delete(manifest_children).where(manifest_children.c.manifest_id == mid))
            conn.execute(delete(manifests).where(manifests.c.id == mid))
            if record is not None:
                record(conn)
            return True

        return await self.db.run_write(txn)

    async def delete_tag(self, repository: str, tag: str, *, record: Record | None = None) -> bool:
        """Remove one tag; the manifest and its other tags stay.  A manifest left without tags
        is stamped ``untagged_at``: the collector frees it once the grace period has passed
        (deleting a tag is asking for its space back; docs/gc.md)."""

        def txn(conn: Connection) -> bool:
            repo_id = conn.execute(_REPOSITORY_ID, {"repo": repository}).scalar()
            if repo_id is None:
                return False
            mid = conn.execute(select(tags.c.manifest_id).where(tags.c.repository_id == repo_id, tags.c.name == tag)).scalar()
            if mid is None:
                return False
            conn.execute(delete(tags).where(tags.c.repository_id == repo_id, tags.c.name == tag))
            mark_untagged(conn, [mid])
            if record is not None:
                record(conn)
            return True

        return await self.db.run_write(txn)

    async def list_tags(self, repository: str, n: int | None, last: str | None) -> list[str] | None:
        """Tags in lexical order after ``last``; None if the repository is unknown."""
        params: dict[str, Any] = {"repo": repository, "last": last or ""}
        if n is not None:
            params["n"] = n
        async with self.db.read(snapshot=False) as conn:
            found = (await conn.execute(self._list_tags if n is None else self._list_tags_n, params)).scalars().all()
            if found or (await conn.execute(_REPOSITORY_ID, {"repo": repository})).first() is not None:
                return list(found)
        return None

    async def referrers(self, repository: str, subject: str, artifact_type: str | None) -> list[ReferrerRecord]:
        q = (
            select(
                manifests.c.digest, manifests.c.media_type, manifests.c.size, manifests.c.artifact_type, manifests.c.annotations
            )
            .select_from(manifests.join(repositories, repositories.c.id == manifests.c.repository_id))
            .where(repositories.c.name == repository, manifests.c.subject_digest == subject)
            .order_by(manifests.c.created_at, manifests.c.digest)
        )
        if artifact_type is not None:
            q = q.where(manifests.c.artifact_type == artifact_type)
        async with self.db.read(snapshot=False) as conn:
            rows = (await conn.execute(q)).all()
        return [
            ReferrerRecord(
                r.digest, r.media_type, int(r.size), r.artifact_type, json.loads(r.annotations) if r.annotations else None
            )
            for r in rows
        ]


def mark_untagged(conn: Connection, manifest_ids: Sequence[int]) -> None:
    """Stamp ``untagged_at`` on those of ``manifest_ids`` that no tag points at any more (inside
    the transaction that deleted their tags)."""
    if manifest_ids:
        conn.execute(untagged_statement(manifest_ids))


def untagged_statement(manifest_ids: Sequence[int]) -> Any:
    """The UPDATE of :func:`mark_untagged` (async callers execute it themselves)."""
    return (
        update(manifests)
        .where(manifests.c.id.in_(list(manifest_ids)), ~exists().where(tags.c.manifest_id == manifests.c.id))
        .values(untagged_at=time.time())
    )
