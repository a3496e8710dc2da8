"""The registry's rules for push, pull and delete, between the HTTP layer and storage/metadata.

Handlers call one method per request; this module decides what is allowed and in which order
storage and metadata change:

* blob bytes are hashed while they stream into an upload session, and only a verified upload
  is moved to its content address (storage first, then metadata, so the index never names a
  blob that is not there);
* the running hash of an upload is kept in memory between PATCH requests and its SHA-256 state
  is saved with the upload in the database (:mod:`.hashstate`), so a process that does not
  have it (after a restart, or another replica) resumes it; only without a usable saved state
  (sha512, no libcrypto) does it re-hash what storage holds;
* a repository reads only blobs that were pushed or mounted into it;
* every change (manifest push and tag, manifest/tag/blob delete, blob push and mount,
  repository delete) is made for an explicit :class:`~.principal.Principal` and announced
  here, whichever face called: the bus's recorder writes the audit entry and the webhook outbox
  rows inside the change's own transaction (:meth:`RegistryService._change`), and the
  listeners hear of it after the commit.  With no recorder and no listener no event is built;
* manifests are served through one rule: :attr:`RegistryService.serve_guard` (the
  vulnerability pull policy) is asked about every manifest a client pulls, local or cached,
  by tag or by digest, index or index child.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .. import errors
from ..metadata.store import (
    MAX_CATALOG_RANGES,
    BlobBeingDeleted,
    ManifestRecord,
    MetadataStore,
    MissingReferences,
    ReferrerRecord,
    TooManyUploads,
    UploadClaimRefused,
    UploadRecord,
    WrongSizes,
)
from ..storage import BlobStore, PartialAppend
from . import hashstate
from .catalog_scope import CatalogScope, Keep
from .digests import Digest, new_hasher
from .events import Action, Actor, EventBus, InTransaction, Kind, RegistryEvent
from .manifests import Descriptor, parse_manifest
from .names import validate_name, validate_tag
from .principal import Principal
from .upload_claims import DEFAULT_LEASE, ClaimLost, ProcessLiveness, UploadClaim

if TYPE_CHECKING:
    from ..metadata.records import ManifestNode, TagInfo

#: Chunks at least this large are hashed in a worker thread (hashlib releases the GIL), so
#: hashing overlaps the driver's write of the same chunk.
_THREAD_HASH_MIN = 64 * 1024
_MAX_CACHED_HASHERS = 1024
#: A PATCH declaring at most this many bytes (Content-Length) on a session nobody holds is
#: written without taking the claim first: its bytes go to a part file of its own anyway, and
#: the one compare-and-set that records them also requires that nobody holds the claim, so a
#: concurrent writer still loses (416, its part dropped).  Saves a write transaction.
_UNCLAIMED_MAX = 1 << 20


class UploadOutOfOrder(errors.RangeInvalid):
    """A chunk did not start where the upload ends (416; the API adds the upload's progress headers)."""

    def __init__(self, record: UploadRecord, start: int) -> None:
        super().__init__(f"chunk starts at {start}, upload is at {record.size}", detail={"offset": record.size})
        self.record = record


class UploadBusy(UploadOutOfOrder):
    """Another request is writing to the session right now (416 with the progress headers)."""

    def __init__(self, record: UploadRecord) -> None:
        errors.RangeInvalid.__init__(
            self,
            "another request is writing to this upload session; query its status (GET) and resume when it is done",
            detail={"offset": record.size, "reason": "busy"},
        )
        self.record = record


def _require_offset(record: UploadRecord, content_range: tuple[int, int] | None) -> None:
    if content_range is not None and content_range[0] != record.size:
        raise UploadOutOfOrder(record, content_range[0])


#: Test hooks (tests/test_events_crash.py): seconds to pause, with a line on stderr, inside a
#: change's write transaction after its audit/outbox rows were written (before the commit), and
#: after the commit before the event is handed on for delivery -- so a test can kill -9 there.
PAUSE_BEFORE_COMMIT_ENV = "MOORAGE_TEST_PAUSE_BEFORE_COMMIT"
PAUSE_AFTER_COMMIT_ENV = "MOORAGE_TEST_PAUSE_AFTER_COMMIT"

#: Who acts when a caller names nobody: an internal job with the operator's rights.
SYSTEM = Principal.operator("job", "moorage")
#: The scheduled jobs' own actors (a run started otherwise passes its face: ``Principal.job``).
RETENTION = Principal.job("retention")
COLLECTOR = Principal.job("gc")

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C")


def operation(name: str) -> Callable[[F], F]:
    """Mark a method as a state-changing registry operation named ``name``.

    :meth:`RegistryService.operations` lists them (the parity test drives each through every
    face that offers it, so a new operation without coverage fails there)."""

    def mark(fn: F) -> F:
        fn.__registry_operation__ = name  # type: ignore[attr-defined]
        return fn

    return mark


def _pause(env: str, where: str) -> float:
    value = os.environ.get(env)
    if not value:
        return 0.0
    print(f"moorage: test pause {where} ({env})", file=sys.stderr, flush=True)
    return float(value)


@dataclass(slots=True)
class PutManifestResult:
    digest: str
    subject: str | None


class RegistryService:
    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        *,
        delete_enabled: bool = True,
        max_manifest_bytes: int = 4 << 20,
        commit_guard: Callable[[str, str, int], Awaitable[None]] | None = None,
        upload_limit: Callable[[str, str | None], Awaitable[int | None]] | None = None,
        writer_lease: float = DEFAULT_LEASE,
        max_sessions_per_repository: int = 0,
        max_sessions_per_user: int = 0,
        events: EventBus | None = None,
    ) -> None:
        self.store = store
        #: Where changes are announced (None: nowhere; set by the app).
        self.events = events
        #: ``await guard(repository, record)`` before a manifest is served for a pull; raises
        #: (DENIED) to refuse it.  None (no pull policy feature): nothing is asked.
        self.serve_guard: Callable[[str, ManifestRecord], Awaitable[None]] | None = None
        self.blobs = blobs
        self.delete_enabled = delete_enabled
        self.max_manifest_bytes = max_manifest_bytes
        # upload id -> (bytes hashed, sha256 state); LRU-bounded.
        self._hashers: OrderedDict[str, tuple[int, hashlib._Hash]] = OrderedDict()
        #: Optional ``await guard(repository, digest, size)`` run before a verified upload is
        #: committed; raises to refuse it (storage quotas, ``moorage.gc.setup``).
        self.commit_guard = commit_guard
        #: Optional ``await upload_limit(repository, digest or None)``: the most bytes an upload
        #: session in ``repository`` may hold (quota headroom), None = no limit.  Checked on the
        #: bytes as they stream in, so a body without Content-Length cannot write past it.
        self.upload_limit = upload_limit
        self.writer_lease = writer_lease
        #: Recognises claims of dead processes on this host (set by the app; None: lease only).
        self.liveness: ProcessLiveness | None = None
        #: Caps on open upload sessions (0 = none), see ``UploadSettings``.
        self.max_sessions_per_repository = max_sessions_per_repository
        self.max_sessions_per_user = max_sessions_per_user

    # --------------------------------------------------------------------------- changes
    @classmethod
    def operations(cls) -> dict[str, Callable[..., Any]]:
        """The state-changing operations, by name (introspected from :func:`operation`)."""
        found: dict[str, Callable[..., Any]] = {}
        for attr in dir(cls):
            fn = getattr(cls, attr)
            name = getattr(fn, "__registry_operation__", None)
            if name:
                found[name] = fn
        return found

    def _change(
        self,
        by: Principal,
        action: Action,
        kind: Kind,
        repository: str,
        *,
        digest: str | None = None,
        media_type: str | None = None,
        size: int | None = None,
        tag: str | None = None,
    ) -> tuple[RegistryEvent | None, InTransaction | None]:
        """The event of a change about to be made and what to write in its transaction.

        (None, None) when nobody wants it: no event object is built on the hot path."""
        bus = self.events
        if bus is None or not bus.wants_changes:
            return None, None
        event = RegistryEvent(
            action, kind, repository, digest=digest, media_type=media_type, size=size, tag=tag, actor=Actor.of(by), face=by.face
        )
        write = bus.recorder.in_transaction(event) if bus.recorder is not None else None
        if write is None:
            return event, None
        event = dataclasses.replace(event, durable=True)
        if os.environ.get(PAUSE_BEFORE_COMMIT_ENV):
            inner = write

            def write(conn: Any) -> None:
                inner(conn)
                time.sleep(_pause(PAUSE_BEFORE_COMMIT_ENV, f"before commit of {event.action} {event.kind} {event.id}"))

        return event, write

    async def _announce(self, event: RegistryEvent | None) -> None:
        """After the commit: start deliveries, tell the listeners (activity, insight, stats)."""
        if event is None or self.events is None:
            return
        if event.durable and os.environ.get(PAUSE_AFTER_COMMIT_ENV):
            await asyncio.sleep(_pause(PAUSE_AFTER_COMMIT_ENV, f"after commit of {event.action} {event.kind} {event.id}"))
        if event.durable and self.events.recorder is not None:
            self.events.recorder.committed(event)
        await self.events.publish(event)

    # ---------------------------------------------------------------------------- blobs
    async def blob_size(self, repository: str, digest: str, by: Principal = SYSTEM) -> int:
        """The size of a blob ``repository`` holds (a blob HEAD, and the GET before its bytes)."""
        by.require("pull", repository)
        validate_name(repository)
        Digest.parse(digest)
        size = await self.store.blob_size_in_repository(repository, digest)
        if size is None:
            raise errors.BlobUnknown(detail={"digest": digest})
        return size

    @operation("blob.delete")
    async def delete_blob(self, repository: str, digest: str, by: Principal = SYSTEM) -> None:
        by.require("delete", repository)
        validate_name(repository)
        Digest.parse(digest)
        self._require_delete()
        event, write = self._change(by, "delete", "blob", repository, digest=digest)
        if not await self.store.unlink_blob(repository, digest, record=write):
            raise errors.BlobUnknown(detail={"digest": digest})
        await self._announce(event)

    @operation("blob.mount")
    async def mount_blob(self, repository: str, digest: str, source: str, by: Principal = SYSTEM) -> bool:
        """Link a blob the source repository holds into ``repository``; False if it can't
        (a source the caller may not pull from is one: the client then uploads the blob)."""
        by.require("push", repository)
        validate_name(repository)
        try:
            Digest.parse(digest)
            validate_name(source)
        except errors.RegistryError:
            return False
        if by.may is not None and not by.may("pull", source):
            return False
        if await self.store.blob_size_in_repository(source, digest) is None:
            return False
        event, write = self._change(by, "mount", "blob", repository, digest=digest)
        if not await self.store.link_blob(repository, digest, record=write):
            return False
        await self._announce(event)
        return True

    async def link_cached_blob(self, repository: str, digest: str, by: Principal) -> bool:
        """The pull-through cache's mount: a blob stored for another repository that the
        upstream confirmed this one has (announced as a mount); False if it can't."""
        validate_name(repository)
        Digest.parse(digest)
        event, write = self._change(by, "mount", "blob", repository, digest=digest)
        if not await self.store.link_blob(repository, digest, record=write):
            return False
        await self._announce(event)
        return True

    # -------------------------------------------------------------------------- uploads
    async def start_upload(self, repository: str, owner: str | None = None, *, claim: UploadClaim | None = None) -> UploadRecord:
        """Open a session (``owner``: user name for the per-user cap); with ``claim``, the
        session is created already claimed by it (a monolithic upload: no second round trip)."""
        validate_name(repository)
        upload_id = str(uuid.uuid4())
        state = await self.blobs.upload_create(upload_id)
        try:
            await self.store.create_upload(
                upload_id,
                repository,
                state,
                owner=owner,
                writer=claim.token if claim else None,
                writer_until=claim.expiry() if claim else None,
                max_per_repository=self.max_sessions_per_repository,
                max_per_owner=self.max_sessions_per_user,
            )
        except TooManyUploads as too_many:
            await self.blobs.upload_abort(upload_id, state)
            raise errors.TooManyRequests(
                f"{too_many}: complete or cancel (DELETE) open upload sessions first; abandoned ones expire",
                detail={"scope": too_many.scope, "limit": too_many.limit},
            ) from None
        if claim is not None:
            claim.upload_id = upload_id
        self._remember(upload_id, 0, _new_sha256())
        now = time.time()
        return UploadRecord(upload_id, repository, 0, state, now, now)

    async def upload_status(self, repository: str, upload_id: str) -> UploadRecord:
        validate_name(repository)
        record = await self.store.get_upload(upload_id, repository) if _plausible_id(upload_id) else None
        if record is None:
            raise errors.BlobUploadUnknown(detail={"uuid": upload_id[:100]})
        return record

    async def _claim(self, record: UploadRecord) -> UploadClaim:
        """Become the session's only writer (before any byte is written), or be refused.

        Refusal is 416 RANGE_INVALID with the session's progress headers, what the spec has
        a client do for a chunk that cannot go where it asked (query the status, resume); the
        session itself is untouched and stays usable.
        """
        claim = self._new_claim(record.id)
        if await claim.take(record.size):
            return claim
        now = await self.store.get_upload(record.id, record.repository)
        if now is None:
            raise errors.BlobUploadUnknown(detail={"uuid": record.id})
        # The holder was a process on this host that died (kill -9, OOM): no need to wait
        # out its lease.
        if (
            now.writer
            and self.liveness is not None
            and now.size == record.size
            and self.liveness.is_dead(now.writer.split(".", 1)[0])
            and await self.store.take_over_upload(record.id, record.size, now.writer, claim.token, claim.expiry())
        ):
            return claim
        raise UploadBusy(now)

    def _new_claim(self, upload_id: str) -> UploadClaim:
        return UploadClaim(self.store, upload_id, self.writer_lease, self.liveness.instance if self.liveness else "")

    async def append_upload(
        self,
        repository: str,
        upload_id: str,
        body: AsyncIterator[bytes],
        content_range: tuple[int, int] | None = None,
        length: int | None = None,
        *,
        record: UploadRecord | None = None,
    ) -> UploadRecord:
        """Append a chunk; with ``content_range`` the chunk must start at the current end.

        ``length``: the body's declared size, if known (small bodies skip the claim).
        ``record``: the session as this request already read it (the claim, or the unclaimed
        append's compare-and-set, re-checks its size and writer)."""
        record = record if record is not None and record.id == upload_id else await self.upload_status(repository, upload_id)
        _require_offset(record, content_range)
        if (
            length is not None
            and length <= _UNCLAIMED_MAX
            and (record.writer is None or (record.writer_until or 0.0) < time.time())
        ):
            return await self._append(record, body, None, release=True)
        async with await self._claim(record) as claim:
            return await self._append(record, body, claim, release=True)

    async def _append(
        self,
        record: UploadRecord,
        body: AsyncIterator[bytes],
        claim: UploadClaim | None,
        *,
        release: bool,
        digest: str | None = None,
    ) -> UploadRecord:
        """Write ``body`` under ``claim``; the final compare-and-set requires the claim (and,
        with ``release``, ends it in the same statement).  Without a claim (a small PATCH),
        it requires that nobody holds one, and a refused write leaves nothing behind."""
        hasher = await self._hasher(record)
        chunks = claim.guard(body) if claim is not None else body
        if self.upload_limit is not None:
            limit = await self.upload_limit(record.repository, digest)
            if limit is not None:

                async def refuse(total: int) -> None:
                    if self.commit_guard is not None:  # the quota's own message (namespace, limit, usage)
                        await self.commit_guard(record.repository, digest or "", total)
                    raise errors.Denied(
                        f"storage quota exceeded: this upload would hold more than {limit} bytes", detail={"allowed": limit}
                    )

                chunks = _limited(chunks, limit - record.size, record.size, refuse)
        try:
            state, size = await self.blobs.upload_append(record.id, record.state, record.size, _hashing(chunks, hasher))
        except PartialAppend as partial:
            self._hashers.pop(record.id, None)
            if isinstance(partial.cause, errors.Denied):
                # Over quota: nothing this request sent is kept.  A completing PUT refused so is
                # the whole upload refused (discarded); a PATCH leaves the session as it was.
                if release or claim is None:
                    await self.blobs.upload_drop_append(record.id, record.state, partial.state)
                else:
                    await self._discard(record)
                    claim.released = True
                raise partial.cause from None
            if claim is None:
                await self.blobs.upload_drop_append(record.id, record.state, partial.state)
            # Keep what was durably written, so the client can resume from there.
            elif await self.store.update_upload(
                record.id, record.size, partial.size, _without_hash_state(partial.state), writer=claim.token, release=release
            ):
                claim.released = release
            if isinstance(partial.cause, errors.RegistryError):
                raise partial.cause from None
            raise errors.BlobUploadInvalid(f"upload interrupted: {partial.cause}") from None
        state = _with_hash_state(state, size, hasher)
        if not await self.store.update_upload(
            record.id, record.size, size, state, writer=claim.token if claim is not None else None, release=release
        ):
            if claim is None:  # someone else moved or holds the session: our part goes
                await self.blobs.upload_drop_append(record.id, record.state, state)
                now = await self.store.get_upload(record.id, record.repository)
                if now is None:
                    raise errors.BlobUploadUnknown(detail={"uuid": record.id})
                raise UploadBusy(now) if now.size == record.size else UploadOutOfOrder(now, record.size)
            self._hashers.pop(record.id, None)
            claim.lost = True
            raise ClaimLost()
        if claim is not None:
            claim.released = release
        self._remember(record.id, size, hasher)
        record.size, record.state, record.updated_at = size, state, time.time()
        return record

    @operation("blob.push")
    async def finish_upload(
        self,
        repository: str,
        upload_id: str,
        digest_text: str | None,
        body: AsyncIterator[bytes] | None,
        content_range: tuple[int, int] | None = None,
        *,
        record: UploadRecord | None = None,
        by: Principal = SYSTEM,
    ) -> str:
        """Complete an upload (optionally with a last chunk) and verify it against ``digest``.
        ``record``: the session as this request already read it (the claim re-checks its size)."""
        by.require("push", repository)
        record = record if record is not None and record.id == upload_id else await self.upload_status(repository, upload_id)
        if not digest_text:
            raise errors.DigestInvalid("the digest query parameter is required to complete an upload")
        digest = Digest.parse(digest_text)
        _require_offset(record, content_range)
        if body is None:
            return await self._finish_without_body(record, digest, by)
        async with await self._claim(record) as claim:
            return await self._finish(record, digest, body, claim, by)

    async def _finish_without_body(self, record: UploadRecord, digest: Digest, by: Principal) -> str:
        """``PUT ?digest=`` without a last chunk (the docker/podman flow): the bytes at
        ``record.size`` are immutable, so they are verified before the claim, which is then
        taken in the same transaction as the blob's lease."""
        actual = await self._final_digest(record, digest.algorithm)
        if actual != digest.hex:
            async with await self._claim(record) as claim:
                await self._discard(record)
                claim.released = True
            raise errors.DigestInvalid(detail={"expected": str(digest), "actual": f"{digest.algorithm}:{actual}"})
        if self.commit_guard is not None:
            try:
                await self.commit_guard(record.repository, str(digest), record.size)
            except errors.Denied:
                async with await self._claim(record) as claim:  # refused (quota): the data is not kept
                    await self._discard(record)
                    claim.released = True
                raise
        claim = self._new_claim(record.id)
        try:
            await self.store.claim_blob(str(digest), record.size, (record.id, record.size, claim.token, claim.expiry()))
        except UploadClaimRefused:
            claim = await self._claim(record)  # busy (416), gone (404), or held by a dead process
            try:
                await self.store.claim_blob(str(digest), record.size)
            except BlobBeingDeleted:
                await self.store.release_upload(record.id, claim.token)
                raise errors.Unavailable("blob is being garbage-collected; retry", headers={"Retry-After": "5"}) from None
        except BlobBeingDeleted:
            await self.store.release_upload(record.id, claim.token)
            raise errors.Unavailable("blob is being garbage-collected; retry", headers={"Retry-After": "5"}) from None
        async with claim:
            await self._place(record, str(digest), claim, by)
        return str(digest)

    async def _finish(
        self, record: UploadRecord, digest: Digest, body: AsyncIterator[bytes] | None, claim: UploadClaim, by: Principal
    ) -> str:
        if body is not None:
            record = await self._append(record, body, claim, release=False, digest=str(digest))
        actual = await self._final_digest(record, digest.algorithm)
        if actual != digest.hex:
            await self._discard(record)
            claim.released = True
            raise errors.DigestInvalid(detail={"expected": str(digest), "actual": f"{digest.algorithm}:{actual}"})
        claim.check()
        await self._commit(record, str(digest), claim, by)
        return str(digest)

    async def put_blob(
        self, repository: str, digest_text: str, body: AsyncIterator[bytes], owner: str | None = None, by: Principal = SYSTEM
    ) -> str:
        """Monolithic upload (``POST ?digest=`` with the whole blob as body)."""
        by.require("push", repository)
        digest = Digest.parse(digest_text)
        claim = self._new_claim("")
        record = await self.start_upload(repository, owner, claim=claim)
        try:
            async with claim:
                return await self._finish(record, digest, body, claim, by)
        except BaseException:
            await self._discard(record)
            raise

    async def cancel_upload(self, repository: str, upload_id: str) -> None:
        record = await self.upload_status(repository, upload_id)
        async with await self._claim(record) as claim:
            await self._discard(record)
            claim.released = True

    async def _commit(self, record: UploadRecord, digest: str, claim: UploadClaim, by: Principal) -> None:
        if self.commit_guard is not None:
            try:
                await self.commit_guard(record.repository, digest, record.size)
            except errors.Denied:
                # Refused (quota): the data is not kept.
                await self._discard(record)
                claim.released = True
                raise
        try:
            await self.store.claim_blob(digest, record.size)
        except BlobBeingDeleted:
            raise errors.Unavailable("blob is being garbage-collected; retry", headers={"Retry-After": "5"}) from None
        await self._place(record, digest, claim, by)

    async def _place(self, record: UploadRecord, digest: str, claim: UploadClaim, by: Principal) -> None:
        """Under ``claim`` and the blob's lease: bytes to their address, link, session gone."""
        placed = await self.blobs.upload_commit(record.id, record.state, record.size, digest)
        event, write = self._change(by, "push", "blob", record.repository, digest=digest, size=record.size)
        # Link and end the session in one transaction (the claim ends with the session's row).
        if not await self.store.link_blob(
            record.repository, digest, repaired=bool(placed), finished_upload=record.id, record=write
        ):
            raise errors.Unavailable("blob vanished while committing; retry", headers={"Retry-After": "1"})
        claim.released = True
        self._hashers.pop(record.id, None)
        await self._announce(event)

    async def _discard(self, record: UploadRecord) -> None:
        self._hashers.pop(record.id, None)
        await self.blobs.upload_abort(record.id, record.state)
        await self.store.delete_upload(record.id)

    async def _hasher(self, record: UploadRecord) -> hashlib._Hash:
        cached = self._hashers.get(record.id)
        if cached is not None and cached[0] == record.size:
            return cached[1].copy()
        # Another replica (or this one before a restart) wrote the last chunk: resume from the
        # hash state it saved with the upload; re-hash from storage only if there is none.
        saved = record.state.get(_HASH_KEY) if isinstance(record.state, dict) else None
        if hashstate.AVAILABLE and isinstance(saved, dict) and saved.get("size") == record.size:
            try:
                restored = hashstate.ResumableSHA256.restore(str(saved.get("state")))
            except (ValueError, TypeError):
                restored = None
            if restored is not None and restored.length == record.size:
                return restored  # type: ignore[return-value]
        return await self._rehash(record, "sha256")

    async def _rehash(self, record: UploadRecord, algorithm: str) -> hashlib._Hash:
        hasher = _new_sha256() if algorithm == "sha256" else new_hasher(algorithm)
        async for chunk in self.blobs.upload_read(record.id, record.state, record.size):
            await _update(hasher, chunk)
        return hasher

    async def _final_digest(self, record: UploadRecord, algorithm: str) -> str:
        if algorithm == "sha256":
            return (await self._hasher(record)).hexdigest()
        return (await self._rehash(record, algorithm)).hexdigest()

    def _remember(self, upload_id: str, size: int, hasher: hashlib._Hash) -> None:
        self._hashers[upload_id] = (size, hasher)
        self._hashers.move_to_end(upload_id)
        while len(self._hashers) > _MAX_CACHED_HASHERS:
            self._hashers.popitem(last=False)

    # ------------------------------------------------------------------------ manifests
    @operation("manifest.push")
    async def put_manifest(
        self,
        repository: str,
        reference: str,
        body: bytes,
        content_type: str | None,
        by: Principal = SYSTEM,
        *,
        verify_references: bool = True,
    ) -> PutManifestResult:
        """Store a manifest (and move ``reference`` to it when it is a tag).

        ``verify_references=False``: the pull-through cache records a manifest before its
        layers (the client asks for them next)."""
        by.require("push", repository)
        validate_name(repository)
        if len(body) > self.max_manifest_bytes:
            raise errors.ManifestInvalid(f"manifest larger than {self.max_manifest_bytes} bytes", status=413)
        tag: str | None = None
        if ":" in reference:
            wanted = Digest.parse(reference)
            digest = Digest.of(body, wanted.algorithm)
            if digest != wanted:
                raise errors.DigestInvalid(detail={"expected": str(wanted), "actual": str(digest)})
        else:
            tag = validate_tag(reference)
            digest = Digest.of(body)
        parsed = parse_manifest(body, content_type)
        event, write = self._change(
            by, "push", "manifest", repository, digest=str(digest), size=len(body), media_type=parsed.media_type, tag=tag
        )
        try:
            await self.store.put_manifest(
                repository,
                str(digest),
                parsed.media_type,
                body,
                blob_digests=[d.digest for d in parsed.blobs],
                blob_sizes=_declared_sizes(parsed.blobs),
                child_digests=[d.digest for d in parsed.manifests],
                subject=parsed.subject.digest if parsed.subject else None,
                artifact_type=parsed.artifact_type,
                annotations=parsed.annotations,
                tag=tag,
                verify_references=verify_references,
                record=write,
            )
        except MissingReferences as missing:
            found: list[errors.RegistryError] = [errors.ManifestBlobUnknown(detail={"digest": d}) for d in missing.blobs]
            found += [
                errors.ManifestBlobUnknown("manifest references a manifest unknown to the repository", detail={"digest": d})
                for d in missing.manifests
            ]
            first, first.more = found[0], found[1:]
            raise first from None
        except WrongSizes as bad:
            found = [
                errors.SizeInvalid(
                    f"descriptor declares {want} bytes, the blob has {have}",
                    detail={"digest": d, "declared": want, "actual": have},
                )
                for d, want, have in bad.wrong
            ]
            first, first.more = found[0], found[1:]
            raise first from None
        except BlobBeingDeleted:
            raise errors.Unavailable("manifest is being garbage-collected; retry", headers={"Retry-After": "1"}) from None
        await self._announce(event)
        return PutManifestResult(str(digest), parsed.subject.digest if parsed.subject else None)

    async def serve_manifest(self, repository: str, reference: str, by: Principal = SYSTEM) -> ManifestRecord:
        """The manifest a client pulls (GET): :meth:`get_manifest` under the pull rule.

        Every face that hands a manifest's bytes to a client calls this -- the ``/v2`` GET,
        including a pull-through cache's cold and warm hits (the cache only makes the content
        local first) -- so the policy sees local and cached content, tags, digests and index
        children alike.  Without a guard (no pull policy feature) it is :meth:`get_manifest`."""
        record = await self.get_manifest(repository, reference, by)
        if self.serve_guard is not None:
            await self.serve_guard(repository, record)
        return record

    async def get_manifest(self, repository: str, reference: str, by: Principal = SYSTEM) -> ManifestRecord:
        """A manifest of ``repository`` (a HEAD; :meth:`serve_manifest` for a GET).  Reads are
        authorized here as changes are (``by.require``), so a face that forgot its route rule
        still serves nothing its caller may not pull; internal readers (the scanner, mirror,
        the cache) read as the system."""
        by.require("pull", repository)
        validate_name(repository)
        by_digest = ":" in reference
        if by_digest:
            Digest.parse(reference)
        else:
            validate_tag(reference)
        record = await self.store.get_manifest(repository, reference, by_digest=by_digest)
        if record is None:
            if not await self.store.repository_exists(repository):
                raise errors.NameUnknown(detail={"name": repository})
            raise errors.ManifestUnknown(detail={"reference": reference})
        return record

    @operation("manifest.delete")
    async def delete_manifest(self, repository: str, reference: str, by: Principal = SYSTEM) -> None:
        """Delete a manifest (``reference`` a digest, with its tags) or one tag."""
        by.require("delete", repository)
        validate_name(repository)
        self._require_delete()
        if ":" in reference:
            Digest.parse(reference)
            event, write = self._change(by, "delete", "manifest", repository, digest=reference)
            deleted = await self.store.delete_manifest(repository, reference, record=write)
        else:
            validate_tag(reference)
            event, write = self._change(by, "delete", "tag", repository, tag=reference)
            deleted = await self.store.delete_tag(repository, reference, record=write)
        if not deleted:
            raise errors.ManifestUnknown(detail={"reference": reference})
        await self._announce(event)

    @operation("repository.delete")
    async def delete_repository(self, repository: str, by: Principal = SYSTEM) -> dict[str, int]:
        """Forget a repository: tags, manifests, links and upload sessions in one transaction
        (with its audit entry and event); blobs only it used are left to the next ``moorage gc``
        (the same sweep as everything else, so a delete never races a push of a shared layer).
        NAME_UNKNOWN if there is no such repository."""
        from ..metadata.gc_store import GCStore  # the collector's queries; loaded only for this

        by.require("delete", repository)
        validate_name(repository)
        self._require_delete()
        event, write = self._change(by, "delete", "repository", repository)
        deleted = await GCStore(self.store.db).delete_repository(repository, record=write)
        if deleted is None:
            raise errors.NameUnknown(detail={"name": repository})
        for upload_id, driver_state in deleted.pending:
            self._hashers.pop(upload_id, None)
            try:
                await self.blobs.upload_abort(upload_id, json.loads(driver_state))
            except Exception:  # noqa: BLE001 - leftovers of an aborted upload are harmless
                pass
        await self._announce(event)
        return {"tags": deleted.tags, "manifests": deleted.manifests, "links": deleted.links, "uploads": len(deleted.pending)}

    # ------------------------------------------------------------------- jobs' deletes
    @operation("tag.expire")
    async def expire_tags(self, doomed: Sequence[TagInfo], by: Principal = RETENTION, *, batch: int = 200) -> int:
        """Delete the tags a retention policy selected, each only if it still points where it
        did (a re-push wins): one transaction per ``batch``, holding the ``delete tag`` audit
        entries and events of exactly the tags it removed.  Returns how many were removed."""
        from ..metadata.policy_store import PolicyStore  # the policies' queries; loaded only for this

        def gone(tags: list[TagInfo]) -> list[RegistryEvent]:
            return [self._event(by, "delete", "tag", t.repository, tag=t.name) for t in tags]

        removed = 0
        for i in range(0, len(doomed), batch):
            chunk = doomed[i : i + batch]
            record, events = self._changes(gone)
            removed += await PolicyStore(self.store.db).remove_tags_unmoved(chunk, len(chunk), record=record)
            await self._announce_all(events)
        return removed

    @operation("manifest.collect")
    async def collect_manifests(
        self,
        doomed: Sequence[ManifestNode],
        repositories: Mapping[int, str],
        cutoff: float,
        *,
        delete_untagged: bool,
        by: Principal = COLLECTOR,
    ) -> list[int]:
        """The collector's delete of manifests nothing reaches (``repositories``: their names by
        id): one transaction re-checks each under its row lock, deletes those still
        unreachable, and writes their ``delete manifest`` audit entries and events (one
        statement each for the whole batch).  Returns the ids deleted."""
        from ..metadata.gc_store import GCStore

        by_id = {m.id: m for m in doomed}

        def gone(ids: list[int]) -> list[RegistryEvent]:
            nodes = [by_id[i] for i in ids]
            names = [repositories.get(m.repository_id, "?") for m in nodes]  # (never a KeyError inside the delete)
            return [self._event(by, "delete", "manifest", n, digest=m.digest) for n, m in zip(names, nodes, strict=True)]

        record, events = self._changes(gone)
        deleted = await GCStore(self.store.db).delete_manifests_unreachable(
            list(by_id), cutoff, delete_untagged=delete_untagged, record=record
        )
        await self._announce_all(events)
        return deleted

    def _event(self, by: Principal, action: Action, kind: Kind, repository: str, **fields: Any) -> RegistryEvent:
        return RegistryEvent(action, kind, repository, actor=Actor.of(by), face=by.face, **fields)

    def _changes(
        self, make: Callable[[list[C]], list[RegistryEvent]]
    ) -> tuple[Callable[[Any, list[C]], None] | None, list[RegistryEvent]]:
        """:meth:`_change` for a batch whose members only the store's transaction knows (which
        of a job's candidates it really deletes): the writer the store runs last in that
        transaction with what it changed -- the events are built there and their audit entries
        and outbox rows written in one go -- and the list they land in, for
        :meth:`_announce_all` after the commit.  (None, []) when nobody wants changes."""
        bus = self.events
        out: list[RegistryEvent] = []
        if bus is None or not bus.wants_changes:
            return None, out
        recorder = bus.recorder

        def record(conn: Any, changed: list[C]) -> None:
            events = make(changed)
            write = recorder.in_transaction_many(events) if recorder is not None and events else None
            if write is not None:
                events = [dataclasses.replace(e, durable=True) for e in events]
                write(conn)
                if os.environ.get(PAUSE_BEFORE_COMMIT_ENV):
                    time.sleep(
                        _pause(PAUSE_BEFORE_COMMIT_ENV, f"before commit of {len(events)} {events[0].action} {events[0].kind}")
                    )
            out[:] = events  # (a transaction run again replaces what its first try built)

        return record, out

    async def _announce_all(self, events: list[RegistryEvent]) -> None:
        """:meth:`_announce` for a committed batch (one hand-over to the bus)."""
        if not events or self.events is None:
            return
        if events[0].durable and os.environ.get(PAUSE_AFTER_COMMIT_ENV):
            await asyncio.sleep(
                _pause(PAUSE_AFTER_COMMIT_ENV, f"after commit of {len(events)} {events[0].action} {events[0].kind}")
            )
        await self.events.announce(events)

    # ---------------------------------------------------------------------- discovery
    async def list_tags(self, repository: str, n: int | None, last: str | None, by: Principal = SYSTEM) -> list[str]:
        by.require("pull", repository)
        validate_name(repository)
        found = await self.store.list_tags(repository, n, last)
        if found is None:
            raise errors.NameUnknown(detail={"name": repository})
        return found

    async def catalog(self, n: int | None, last: str | None, may_pull: Keep | CatalogScope | None = None) -> list[str]:
        """Listed repositories (``metadata.listing``: holding a manifest) after ``last``, at most
        ``n``, keeping those ``may_pull`` keeps (the caller's pull right; None: everything).

        With a bounded :class:`CatalogScope` only its name ranges are read (an index range scan
        each, ``MetadataStore.catalog_in``), then filtered by the same rule: a user with grants
        on 10 namespaces out of 100,000 reads 10 ranges, with exactly the result of filtering
        the whole catalog.  The one read rule of repository lists: the web UI's list applies
        the same two halves."""
        if may_pull is None:
            return await self.store.catalog(n, last)
        if n is not None and n <= 0:
            return []
        want = n if n is not None else sys.maxsize  # no page size: every name the caller may pull
        scope = may_pull if isinstance(may_pull, CatalogScope) else CatalogScope(may_pull, bounded=False)
        ranged = scope.bounded and len(scope.prefixes) + len(scope.names) <= MAX_CATALOG_RANGES
        if ranged and not scope.prefixes and not scope.names and not scope.public:
            return []
        found: list[str] = []
        batch = max(n or 1000, 100)
        while len(found) < want:  # the index (or the caller's ranges of it) in batches, filtered
            if ranged and scope.pull is not None:  # the rule needs nothing more from the database
                rows = await self.store.catalog_in_rows(batch, last, scope.prefixes, scope.names, public=scope.public)
                names = [name for name, _ in rows]
                found.extend(name for name, public in rows if scope.pull(name, public))
            else:
                if ranged:
                    names = await self.store.catalog_in(batch, last, scope.prefixes, scope.names, public=scope.public)
                else:
                    names = await self.store.catalog(batch, last)
                found.extend(await scope.keep(names))
            if not names:
                break
            last = names[-1]
            if len(names) < batch:
                break
        return found[:want]

    async def referrers(
        self, repository: str, digest: str, artifact_type: str | None, by: Principal = SYSTEM
    ) -> list[ReferrerRecord]:
        by.require("pull", repository)
        validate_name(repository)
        Digest.parse(digest)
        return await self.store.referrers(repository, digest, artifact_type)

    def _require_delete(self) -> None:
        if not self.delete_enabled:
            raise errors.Unsupported("deletes are disabled on this registry")


def _declared_sizes(descriptors: list[Descriptor]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for d in descriptors:
        if sizes.setdefault(d.digest, d.size) != d.size:
            raise errors.ManifestInvalid("one digest declared with two different sizes", detail={"digest": d.digest})
    return sizes


#: The service's own entry in an upload's persisted state: the running SHA-256 state at
#: ``size`` bytes (drivers ignore keys they do not know).
_HASH_KEY = "_sha256"


def _new_sha256() -> hashlib._Hash:
    return hashstate.ResumableSHA256() if hashstate.AVAILABLE else new_hasher("sha256")  # type: ignore[return-value]


def _without_hash_state(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k != _HASH_KEY} if _HASH_KEY in state else state


def _with_hash_state(state: dict[str, Any], size: int, hasher: object) -> dict[str, Any]:
    state = _without_hash_state(state)
    if isinstance(hasher, hashstate.ResumableSHA256) and hasher.length == size:
        state = {**state, _HASH_KEY: {"size": size, "state": hasher.state()}}
    return state


def _plausible_id(upload_id: str) -> bool:
    return 0 < len(upload_id) <= 64 and all(c.isalnum() or c == "-" for c in upload_id)


async def _update(hasher: hashlib._Hash, chunk: bytes) -> None:
    if len(chunk) >= _THREAD_HASH_MIN:
        await asyncio.to_thread(hasher.update, chunk)
    else:
        hasher.update(chunk)


async def _limited(
    body: AsyncIterator[bytes], allowed: int, have: int, refuse: Callable[[int], Awaitable[None]]
) -> AsyncIterator[bytes]:
    """``body``, refused (``await refuse(total)`` raises DENIED) as soon as more than ``allowed``
    bytes arrived; the chunk that crosses the limit is never passed on to be written."""
    seen = 0
    async for chunk in body:
        seen += len(chunk)
        if seen > allowed:
            await refuse(have + seen)
            raise errors.Denied("storage quota exceeded")
        yield chunk


async def _hashing(body: AsyncIterator[bytes], hasher: hashlib._Hash) -> AsyncIterator[bytes]:
    """Yield ``body``'s chunks, hashing each in a thread while the consumer writes it and the
    next chunk is received; the hash of a chunk is awaited only before the next one starts
    (updates stay in order) and before the generator finishes."""
    pending: asyncio.Future[None] | None = None
    try:
        async for chunk in body:
            if pending is not None:
                await pending
                pending = None
            if len(chunk) >= _THREAD_HASH_MIN:
                pending = asyncio.ensure_future(asyncio.to_thread(hasher.update, chunk))
            else:
                hasher.update(chunk)
            yield chunk
    finally:
        if pending is not None:
            await pending
