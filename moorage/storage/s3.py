"""S3 driver (aiobotocore): AWS S3, MinIO, Ceph RGW, R2, GCS interop ...

Layout in the bucket (everything under the optional ``prefix``)::

    <prefix>/blobs/<algo>/<2 hex>/<hex>          verified, content-addressed blobs
    <prefix>/uploads/<id>/p<nnnnn>-<token>       full parts of an unfinished upload
    <prefix>/uploads/<id>/t-<token>              its tail (< one part), rewritten per append

Why parts are plain objects and not parts of an S3 multipart upload
-------------------------------------------------------------------
S3 has no API to *read* the parts of an unfinished multipart upload, but the registry must be
able to re-hash what was written so far when no saved hash state is usable (sha512 digests,
a libcrypto without the resumable SHA-256 API -- see ``moorage.registry.hashstate``).  So every full part (``part_size`` bytes, >= 5 MiB) is a plain
object, readable at any time; the remainder of a PATCH that does not fill a part is the *tail*
object, which the next PATCH (on any replica) reads back and prepends.  :meth:`upload_commit`
then assembles the content-addressed object **server-side** with one multipart upload whose
parts are ``UploadPartCopy``'d from the part objects (the tail is the last part, which may be
small), completed directly at the content address: the object appears atomically and complete,
or not at all.  One part and no tail (or only a tail) is a single ``CopyObject``.  Parts are at
most 5 GiB, so objects of any size work (``CopyObject``'s 5 GiB limit never applies).

Everything an append needs is in the JSON ``state`` the service stores in the database::

    {"v": 1,
     "parts": [{"key": "p00001-1a2b3c4d", "size": 16777216, "etag": "\\"...\\""}, ...],
     "tail":  {"key": "t-5e6f7a8b", "size": 1234} | null,
     "stale": ["t-0a1b2c3d", ...]}

Object names carry a random token, so two requests racing on one upload never overwrite each
other's objects: the database's compare-and-set picks the winner, the loser's objects are
garbage under the upload's prefix.  ``stale`` lists objects superseded by *this* state (an old
tail); once the state is the persisted one (the next append receives it) they are unreferenced
and deleted.  Abort deletes the whole ``uploads/<id>/`` prefix; commit deletes the objects the
state names (one DeleteObjects instead of ListObjectsV2 + DeleteObjects): a loser's objects
under the prefix are left to ``moorage purge-uploads`` (orphan upload data), as they are when
its session is still open.

At most one part (plus the request's current chunk) is held in memory per upload request.

radosgw 16.2 quirks handled: CompleteMultipartUpload answers an empty ETag (not used here);
``NoSuchKey`` instead of ``NoSuchUpload`` for an aborted multipart upload (both mean "gone").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from .base import FULL_REASON, BlobStat, BlobStore, PartialAppend, UploadState, os_outage, translate_outages

if TYPE_CHECKING:
    from ..config import S3Storage

log = logging.getLogger("moorage.storage.s3")

MiB = 1 << 20
GiB = 1 << 30
MIN_PART = 5 * MiB
MAX_PART = 5 * GiB
MAX_PARTS = 10_000
READ_CHUNK = 1 * MiB
#: Every this many parts the part size grows by one ``part_size``, so an upload never needs
#: more than S3's 10,000 parts (16 MiB parts: ~860 GiB).
_GROW_EVERY = 1000
_COPY_CONCURRENCY = 8
_GONE = {"NoSuchKey", "NoSuchUpload", "404", "NotFound"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


#: S3 error codes that mean "the service is overloaded or failing, retry" whatever the status.
_OUTAGE_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"}
#: The bucket's or user's quota is used up (Ceph RGW: 403 QuotaExceeded): full, not away.
_FULL_CODES = {"QuotaExceeded"}


def s3_outage(exc: BaseException) -> str | None:
    """The S3 driver's classifier: the endpoint unreachable or timing out, a 5xx or a SlowDown
    (after botocore's own retries), or a local file-system failure."""
    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ClientError) and _code(exc) in _FULL_CODES:
        return f"{FULL_REASON}{_code(exc)} ({_status(exc)})"
    if isinstance(exc, ClientError) and (_status(exc) >= 500 or _code(exc) in _OUTAGE_CODES):
        return f"{_code(exc) or 'HTTP ' + str(_status(exc))} ({_status(exc)})"
    return os_outage(exc)


async def _best_effort(what: str, work: Any) -> None:
    """Await ``work``, cleanup whose failure only leaves garbage behind (unreferenced objects that
    ``moorage gc`` / ``purge-uploads`` remove later): logged, never raised over the real outcome."""
    try:
        await work
    except Exception as exc:  # noqa: BLE001 - see above: the caller's result stands
        log.warning("s3: %s failed (left for gc/purge-uploads): %r", what, exc)


def _blob_rel(digest: str) -> str:
    algo, hexpart = digest.split(":", 1)
    if not (algo.isalnum() and hexpart.isalnum()):
        raise ValueError(f"refusing unsafe digest {digest!r}")
    return f"blobs/{algo}/{hexpart[:2]}/{hexpart}"


def _safe_upload_id(upload_id: str) -> str:
    if not upload_id or not all(c.isalnum() or c == "-" for c in upload_id):
        raise ValueError(f"refusing unsafe upload id {upload_id!r}")
    return upload_id


def _token() -> str:
    return secrets.token_hex(4)


_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def _session() -> Any:
    """One botocore session per event loop: loading the S3 service model costs ~0.3 s."""
    loop = asyncio.get_running_loop()
    session = _SESSIONS.get(loop)
    if session is None:
        session = _SESSIONS[loop] = get_session()
    return session


def empty_state() -> UploadState:
    return {"v": 1, "parts": [], "tail": None, "stale": []}


@translate_outages(s3_outage)
class S3BlobStore(BlobStore):
    name = "s3"

    def __init__(self, cfg: S3Storage) -> None:
        self.cfg = cfg
        self.bucket = cfg.bucket
        self.prefix = cfg.prefix.strip("/")
        self.part_size = min(max(int(cfg.part_size), MIN_PART), MAX_PART)
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._presigner: Any = None

    # -- lifecycle --------------------------------------------------------------------------
    def _client_kwargs(self, endpoint_url: str | None) -> dict[str, Any]:
        cfg = self.cfg
        config = AioConfig(
            s3={"addressing_style": "path" if cfg.path_style else "auto"},
            signature_version="s3v4",
            max_pool_connections=cfg.max_connections,
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=10,
            read_timeout=120,
            # Old RGW/MinIO releases do not understand the newer default CRC32 trailers, and
            # the registry verifies content by digest anyway.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        kwargs: dict[str, Any] = {"region_name": cfg.region, "config": config}
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
        if cfg.access_key and cfg.secret_key:
            kwargs["aws_access_key_id"] = cfg.access_key
            kwargs["aws_secret_access_key"] = cfg.secret_key
        # else: the usual AWS chain (env, shared config/credentials files, container/instance roles)
        return kwargs

    async def open(self) -> None:
        if not self.bucket:
            raise ValueError("storage.s3.bucket is required for the s3 driver")
        if self._client is not None:
            return
        session = _session()
        stack = contextlib.AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(
                session.create_client("s3", **self._client_kwargs(self.cfg.endpoint_url))
            )
            if self.cfg.public_endpoint_url:
                self._presigner = await stack.enter_async_context(
                    session.create_client("s3", **self._client_kwargs(self.cfg.public_endpoint_url))
                )
            else:
                self._presigner = self._client
            await self._ensure_bucket()
        except BaseException:
            self._client = self._presigner = None
            await stack.aclose()
            raise
        self._stack = stack

    async def close(self) -> None:
        stack, self._stack = self._stack, None
        self._client = self._presigner = None
        if stack is not None:
            await stack.aclose()

    async def _ensure_bucket(self) -> None:
        try:
            await self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if _status(exc) != 404 and _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise RuntimeError(f"S3 bucket {self.bucket!r} is not accessible: {exc}") from None
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.cfg.region and self.cfg.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.cfg.region}
        try:
            await self._client.create_bucket(**kwargs)
            log.info("created S3 bucket %s", self.bucket)
        except ClientError as exc:
            # Another replica created it first.
            if _code(exc) != "BucketAlreadyOwnedByYou":
                raise

    # -- keys -------------------------------------------------------------------------------
    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _blob_key(self, digest: str) -> str:
        return self._key(_blob_rel(digest))

    def _upload_prefix(self, upload_id: str) -> str:
        return self._key(f"uploads/{_safe_upload_id(upload_id)}/")

    def _upload_key(self, upload_id: str, name: str) -> str:
        return self._upload_prefix(upload_id) + name

    # -- blobs ------------------------------------------------------------------------------
    async def stat(self, digest: str) -> BlobStat | None:
        try:
            head = await self._client.head_object(Bucket=self.bucket, Key=self._blob_key(digest))
        except ClientError as exc:
            if _status(exc) == 404 or _code(exc) in _GONE:
                return None
            raise
        return BlobStat(size=int(head["ContentLength"]))

    async def read(self, digest: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        async for chunk in self._read_key(self._blob_key(digest), offset, length):
            yield chunk

    async def _read_key(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        if length == 0:
            return
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            kwargs["Range"] = f"bytes={offset}-{end}"
        try:
            resp = await self._client.get_object(**kwargs)
        except ClientError as exc:
            if _status(exc) == 404 or _code(exc) in _GONE:
                raise FileNotFoundError(f"s3://{self.bucket}/{key}") from None
            raise
        async with resp["Body"] as body:
            async for chunk in body.iter_chunks(READ_CHUNK):
                yield chunk

    async def _get_bytes(self, key: str) -> bytes:
        resp = await self._client.get_object(Bucket=self.bucket, Key=key)
        async with resp["Body"] as body:
            data: bytes = await body.read()
            return data

    async def redirect_url(self, digest: str, method: str = "GET") -> str | None:
        op = "head_object" if method.upper() == "HEAD" else "get_object"
        url: str | None = await self._presigner.generate_presigned_url(
            op, Params={"Bucket": self.bucket, "Key": self._blob_key(digest)}, ExpiresIn=self.cfg.presign_expiry
        )
        return url

    async def delete(self, digest: str) -> None:
        try:
            await self._client.delete_object(Bucket=self.bucket, Key=self._blob_key(digest))
        except ClientError as exc:
            if not (_status(exc) == 404 or _code(exc) in _GONE):
                raise

    async def list_blobs(self) -> AsyncIterator[str]:
        base = self._key("blobs/")
        async for key in self._list_keys(base):
            parts = key[len(base) :].split("/")
            if len(parts) == 3 and parts[2] and parts[2].startswith(parts[1]):
                yield f"{parts[0]}:{parts[2]}"

    async def _list_keys(self, prefix: str) -> AsyncIterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", ()):
                yield obj["Key"]

    async def _delete_keys(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = keys[i : i + 1000]
            resp = await self._client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
            failed = [e for e in resp.get("Errors", ()) if e.get("Code") not in _GONE]
            if failed:
                log.warning("could not delete %d objects, first: %s", len(failed), failed[0])

    async def _delete_prefix(self, prefix: str) -> None:
        keys = [k async for k in self._list_keys(prefix)]
        if keys:
            await self._delete_keys(keys)

    # -- uploads ----------------------------------------------------------------------------
    async def upload_create(self, upload_id: str) -> UploadState:
        _safe_upload_id(upload_id)
        return empty_state()  # nothing in the bucket until the first byte arrives

    def _part_size_for(self, index: int) -> int:
        """Size of the part with 0-based ``index`` (grows so 10,000 parts are never exceeded)."""
        return min(self.part_size * (1 + index // _GROW_EVERY), MAX_PART)

    async def _put(self, key: str, data: bytes) -> str:
        resp = await self._client.put_object(Bucket=self.bucket, Key=key, Body=data)
        return str(resp.get("ETag", ""))

    async def upload_append(
        self, upload_id: str, state: UploadState, offset: int, chunks: AsyncIterator[bytes]
    ) -> tuple[UploadState, int]:
        state = state or empty_state()
        parts: list[dict[str, Any]] = [dict(p) for p in state.get("parts", ())]
        tail: dict[str, Any] | None = state.get("tail")
        have = sum(int(p["size"]) for p in parts) + (int(tail["size"]) if tail else 0)
        if have != offset:
            raise RuntimeError(f"upload {upload_id}: driver state holds {have} bytes, metadata says {offset}")
        # Objects superseded by the (now persisted) incoming state: nobody references them.
        cleanup = [self._upload_key(upload_id, k) for k in state.get("stale", ())]
        cleanup_task = asyncio.ensure_future(self._delete_keys(cleanup)) if cleanup else None

        buf = bytearray()
        if tail:
            try:
                buf += await self._get_bytes(self._upload_key(upload_id, tail["key"]))
                if len(buf) != int(tail["size"]):
                    raise RuntimeError(f"tail object has {len(buf)} bytes, expected {tail['size']}")
            except Exception as exc:  # S3 failing (or the upload finished meanwhile): nothing changed
                if cleanup_task is not None:
                    await _best_effort("deleting stale upload objects", cleanup_task)
                raise PartialAppend(state, offset, exc) from exc
        tail_consumed = False  # the old tail's bytes went into a part
        received = 0
        try:
            try:
                async for chunk in chunks:
                    buf += chunk
                    received += len(chunk)
                    while len(buf) >= (want := self._part_size_for(len(parts))):
                        if len(parts) >= MAX_PARTS:
                            raise ValueError("upload exceeds the S3 part limit")
                        data = bytes(buf[:want])
                        name = f"p{len(parts) + 1:05d}-{_token()}"
                        etag = await self._put(self._upload_key(upload_id, name), data)
                        del data
                        del buf[:want]
                        parts.append({"key": name, "size": want, "etag": etag})
                        tail_consumed = True
            except BaseException as exc:
                raise PartialAppend(*(await self._salvage(upload_id, parts, tail, tail_consumed, buf, exc)), exc) from exc
            new_tail = tail
            stale: list[str] = []
            if tail_consumed or received:
                new_tail = None
                if buf:
                    name = f"t-{_token()}"
                    try:
                        await self._put(self._upload_key(upload_id, name), bytes(buf))
                    except BaseException as exc:
                        raise PartialAppend(
                            *(await self._salvage(upload_id, parts, tail, tail_consumed, bytearray(), exc)), exc
                        ) from exc
                    new_tail = {"key": name, "size": len(buf)}
                if tail:
                    stale.append(tail["key"])
        finally:
            if cleanup_task is not None:
                await _best_effort("deleting stale upload objects", cleanup_task)
        size = sum(int(p["size"]) for p in parts) + (int(new_tail["size"]) if new_tail else 0)
        assert size == offset + received
        return {"v": 1, "parts": parts, "tail": new_tail, "stale": stale}, size

    async def _salvage(
        self,
        upload_id: str,
        parts: list[dict[str, Any]],
        tail: dict[str, Any] | None,
        tail_consumed: bool,
        buf: bytearray,
        exc: BaseException,
    ) -> tuple[UploadState, int]:
        """State and size that are durable after a broken append (keep the buffer if we can)."""
        stale: list[str] = []
        new_tail = None if tail_consumed else tail
        if buf and isinstance(exc, Exception):
            name = f"t-{_token()}"
            try:
                await self._put(self._upload_key(upload_id, name), bytes(buf))
            except Exception:  # S3 itself is failing: keep what is already there
                log.warning("upload %s: could not save %d buffered bytes", upload_id, len(buf))
            else:
                new_tail = {"key": name, "size": len(buf)}
        if tail and new_tail is not tail:
            stale.append(tail["key"])
        size = sum(int(p["size"]) for p in parts) + (int(new_tail["size"]) if new_tail else 0)
        return {"v": 1, "parts": parts, "tail": new_tail, "stale": stale}, size

    async def upload_drop_append(self, upload_id: str, before: UploadState, after: UploadState) -> None:
        keep = {s["key"] for s in self._segments(before or empty_state())}
        drop = [self._upload_key(upload_id, s["key"]) for s in self._segments(after or empty_state()) if s["key"] not in keep]
        if drop:
            await _best_effort("dropping a refused append's objects", self._delete_keys(drop))

    def _segments(self, state: UploadState) -> list[dict[str, Any]]:
        segs = list(state.get("parts", ()))
        if state.get("tail"):
            segs.append(state["tail"])
        return segs

    async def upload_read(self, upload_id: str, state: UploadState, size: int) -> AsyncIterator[bytes]:
        remaining = size
        for seg in self._segments(state or empty_state()):
            if remaining <= 0:
                break
            n = min(int(seg["size"]), remaining)
            async for chunk in self._read_key(self._upload_key(upload_id, seg["key"]), 0, n):
                yield chunk
            remaining -= n

    async def upload_commit(self, upload_id: str, state: UploadState, size: int, digest: str) -> bool:
        """Assemble the verified parts at the content address unless an object is already there.

        An existing blob is never rewritten by a re-push (checked with a HEAD first: S3's
        CopyObject has no "only if absent" condition that RGW honours); an object of another
        size under the address is not this blob and is set aside under ``quarantine/``.  Two commits of one
        digest racing between HEAD and write both carry the same verified bytes.  The parts are
        objects with random names that only the request which wrote them ever wrote, so what
        is assembled is what was hashed.  Returns True if this call placed the blob.
        """
        state = state or empty_state()
        segs = self._segments(state)
        have = sum(int(s["size"]) for s in segs)
        if have != size:
            raise RuntimeError(f"upload {upload_id}: driver state holds {have} bytes, commit of {size}")
        dst = self._blob_key(digest)
        existing = await self._size_of(dst)
        if existing == size:
            await _best_effort("deleting a committed upload's parts", self._delete_keys(self._known_keys(upload_id, state)))
            return False
        if existing is not None:
            # An object of the wrong size (no commit of ours made it): set it aside, place ours.
            await self.quarantine(digest)
        if not segs:
            await self._client.put_object(Bucket=self.bucket, Key=dst, Body=b"")
        elif len(segs) == 1:
            await self._client.copy_object(
                Bucket=self.bucket,
                Key=dst,
                MetadataDirective="REPLACE",
                ContentType="application/octet-stream",
                CopySource={"Bucket": self.bucket, "Key": self._upload_key(upload_id, segs[0]["key"])},
            )
        else:
            await self._compose(dst, [self._upload_key(upload_id, s["key"]) for s in segs])
        await _best_effort("deleting a committed upload's parts", self._delete_keys(self._known_keys(upload_id, state)))
        return True

    def _known_keys(self, upload_id: str, state: UploadState) -> list[str]:
        """The session's objects as its state names them (parts, tail, superseded tails)."""
        names = [str(s["key"]) for s in self._segments(state)] + [str(k) for k in state.get("stale", ())]
        return [self._upload_key(upload_id, n) for n in names]

    async def _size_of(self, key: str) -> int | None:
        try:
            head = await self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _status(exc) == 404 or _code(exc) in _GONE:
                return None
            raise
        return int(head["ContentLength"])

    async def quarantine(self, digest: str) -> bool:
        """Move the blob's object to ``quarantine/<algo>/<hex>-<time>`` (kept for inspection)."""
        src = self._blob_key(digest)
        algo, hexpart = digest.split(":", 1)
        dst = self._key(f"quarantine/{algo}/{hexpart}-{int(time.time())}")
        try:
            await self._client.copy_object(Bucket=self.bucket, Key=dst, CopySource={"Bucket": self.bucket, "Key": src})
        except ClientError as exc:
            if _status(exc) == 404 or _code(exc) in _GONE:
                return False
            raise
        await self.delete(digest)
        return True

    async def _compose(self, dst: str, sources: list[str]) -> None:
        """Assemble ``dst`` from ``sources`` server-side (multipart upload of UploadPartCopy's)."""
        mpu = await self._client.create_multipart_upload(Bucket=self.bucket, Key=dst, ContentType="application/octet-stream")
        upload = mpu["UploadId"]
        sem = asyncio.Semaphore(_COPY_CONCURRENCY)

        async def copy(n: int, src: str) -> dict[str, Any]:
            async with sem:
                resp = await self._client.upload_part_copy(
                    Bucket=self.bucket, Key=dst, UploadId=upload, PartNumber=n, CopySource={"Bucket": self.bucket, "Key": src}
                )
            return {"PartNumber": n, "ETag": resp["CopyPartResult"]["ETag"]}

        try:
            done = await asyncio.gather(*(copy(i + 1, src) for i, src in enumerate(sources)))
            # radosgw 16.2 answers an empty ETag here; nothing below depends on it.
            await self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=dst, UploadId=upload, MultipartUpload={"Parts": list(done)}
            )
        except BaseException:
            await _best_effort("aborting a failed multipart copy", self._abort_multipart(dst, upload))
            raise

    async def _abort_multipart(self, key: str, upload: str) -> None:
        try:
            await self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
        except ClientError as exc:
            if _code(exc) not in _GONE:  # RGW 16.2 says NoSuchKey for an upload already gone
                raise

    async def upload_abort(self, upload_id: str, state: UploadState) -> None:
        await self._delete_prefix(self._upload_prefix(upload_id))

    async def list_upload_ids(self) -> AsyncIterator[str]:
        base = self._key("uploads/")
        paginator = self._client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=base, Delimiter="/"):
            for cp in page.get("CommonPrefixes", ()):
                name = cp["Prefix"][len(base) :].rstrip("/")
                if name:
                    yield name

    async def upload_age(self, upload_id: str) -> float | None:
        """Seconds since the upload's data last changed, None if it has none."""
        newest = None
        paginator = self._client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self._upload_prefix(upload_id)):
            for obj in page.get("Contents", ()):
                ts = obj["LastModified"].timestamp()
                newest = ts if newest is None else max(newest, ts)
        return None if newest is None else max(0.0, time.time() - newest)

    async def purge_leftovers(self, older_than: float, session_exists: Any) -> dict[str, int]:
        out = await super().purge_leftovers(older_than, session_exists)
        out["multipart_uploads"] = await self.abort_stale_multipart_uploads(older_than)
        return out

    async def abort_stale_multipart_uploads(self, older_than: float) -> int:
        """Abort multipart uploads under our prefix started more than ``older_than`` s ago.

        Commits complete their multipart upload within one request; one left behind was
        interrupted (killed replica, S3 outage) and only costs storage.
        """
        cutoff = time.time() - older_than
        aborted = 0
        paginator = self._client.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key("")):
            for up in page.get("Uploads", ()):
                if up["Initiated"].timestamp() < cutoff:
                    await self._abort_multipart(up["Key"], up["UploadId"])
                    aborted += 1
        return aborted
