"""Blobs: ``GET``/``HEAD``/``DELETE /v2/<name>/blobs/<digest>``.

Filesystem blobs go out with sendfile(2): a whole-blob GET through :func:`_sendfile` (ours,
because aiohttp's FileResponse relies on ``loop.sendfile()``, which uvloop does not implement,
and then copies every chunk through Python), Range and conditional requests through aiohttp's
FileResponse (206/416); other drivers either redirect to a presigned URL or stream through.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from .. import errors
from ..storage.filesystem import open_regular
from . import apidoc as oa
from . import routes as route_names
from .common import API_HEADERS, BLOBS, BODY_BYTES, SETTINGS, publish, reader, request_principal, service
from .routes import Rule
from .routing import RouteTable
from .sendfile import sendfile_async

routes = RouteTable()

# -- OpenAPI: parts of this module's route operations (moorage.api.apidoc) --
_BLOB_HEADERS = {
    **oa.API_VERSION,
    "Docker-Content-Digest": oa.ref("headers", "Docker-Content-Digest"),
    "ETag": oa.str_header("The digest, quoted."),
    "Accept-Ranges": oa.str_header("``bytes``"),
    "Content-Length": {"description": "Blob size.", "schema": {"type": "integer", "minimum": 0}},
}
_OCTETS = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
#: Path-level keys shared by the operations of ``/v2/{name}/blobs/{digest}``.
_BLOB_PATH = {"parameters": [oa.NAME, oa.DIGEST]}
NAME = r"{name:[^{}]+?}"


def _headers(digest: str, size: int) -> dict[str, str]:
    return {
        **API_HEADERS,
        "Docker-Content-Digest": digest,
        "ETag": f'"{digest}"',
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000",
        "Content-Type": "application/octet-stream",
    }


BLOB_HEAD_DOC = {
    "tags": ["v2"],
    "operationId": "headBlob",
    "summary": "Check a blob exists in the repository",
    "responses": {"200": oa.empty("It exists.", _BLOB_HEADERS), **oa.errors(400, 404, *oa.AUTH_ERRORS, head=True)},
}


@routes.head(f"/v2/{NAME}/blobs/{{digest}}", name=route_names.BLOB_HEAD, rule=Rule.PULL, doc=BLOB_HEAD_DOC, path_item=_BLOB_PATH)
async def head_blob(request: web.Request) -> web.Response:
    name, digest = request.match_info["name"], request.match_info["digest"]
    size = await service(request).blob_size(name, digest, reader(request))
    headers = _headers(digest, size)
    headers["Content-Length"] = str(size)
    return web.Response(status=200, headers=headers)


BLOB_GET_DOC = {
    "tags": ["v2"],
    "operationId": "getBlob",
    "summary": "Pull a blob",
    "parameters": [oa.param("Range", "header", {"type": "string"}, "``bytes=start-end``: 206 with that part.")],
    "responses": {
        "200": {"description": "The blob.", "headers": _BLOB_HEADERS, "content": _OCTETS},
        "206": {
            "description": "Part of the blob.",
            "content": _OCTETS,
            "headers": {**_BLOB_HEADERS, "Content-Range": oa.str_header("``bytes start-end/size``")},
        },
        "307": oa.empty(
            "Fetch it from this (presigned) URL instead (``storage.redirect``).",
            {
                **oa.API_VERSION,
                "Location": oa.str_header("Where the blob is."),
                "Docker-Content-Digest": oa.ref("headers", "Docker-Content-Digest"),
            },
        ),
        **oa.errors(400, 404, 416, *oa.AUTH_ERRORS),
    },
}


@routes.get(f"/v2/{NAME}/blobs/{{digest}}", name=route_names.BLOB_GET, rule=Rule.PULL, doc=BLOB_GET_DOC, path_item=_BLOB_PATH)
async def get_blob(request: web.Request) -> web.StreamResponse:
    name, digest = request.match_info["name"], request.match_info["digest"]
    size = await service(request).blob_size(name, digest, reader(request))
    store = request.app[BLOBS]
    headers = _headers(digest, size)
    await publish(request, "pull", "blob", name, digest=digest, size=size)
    if request.app[SETTINGS].storage.redirect:
        url = await store.redirect_url(digest)
        if url:
            return web.Response(status=307, headers={**API_HEADERS, "Location": url, "Docker-Content-Digest": digest})
    path = store.local_path(digest)
    if path is not None:
        _check_range(request, size)  # FileResponse would answer a bad Range with an empty 416
        if not path.is_file() or path.is_symlink():  # stored blobs are never links: never follow one
            raise errors.BlobUnknown("blob data missing from storage", detail={"digest": digest})
        resp = await _sendfile(request, path, size, headers)
        if resp is not None:
            return resp
        return web.FileResponse(path, chunk_size=1 << 20, headers=headers)
    return await _stream(request, digest, size, headers)


#: Requests FileResponse answers itself (ranges, conditional GETs).
_FILERESPONSE_HEADERS = ("Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since")
#: A client that accepts nothing for this long is dropped.
_SEND_STALL_SECONDS = 60
#: A write to the client that waits longer than this releases the storage stream meanwhile.
_SLOW_CLIENT_SECONDS = 0.5


async def _sendfile(request: web.Request, path: Path, size: int, headers: dict[str, str]) -> web.StreamResponse | None:
    """Send the whole file with sendfile(2) driven by the event loop (no thread: a client that
    never reads holds only its own connection); None if that doesn't apply (TLS, range or
    conditional request, file not the expected size)."""
    transport = request.transport
    if transport is None or transport.get_extra_info("sslcontext") is not None:
        return None
    if any(h in request.headers for h in _FILERESPONSE_HEADERS):
        return None
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        fobj = open_regular(path)  # a local open(2) that refuses a link, closed below
    except FileNotFoundError:
        raise errors.BlobUnknown("blob data missing from storage") from None
    with fobj:
        if os.fstat(fobj.fileno()).st_size != size:
            return None
        resp = web.StreamResponse(status=200, headers=headers)
        resp.content_length = size
        await resp.prepare(request)
        # The headers must be on the wire before we write to the socket behind the transport.
        for _ in range(_SEND_STALL_SECONDS * 100):
            if transport.is_closing():
                return resp  # client went away
            if transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.01)
        else:
            transport.close()  # client does not read
            return resp
        try:
            sent = await sendfile_async(sock.fileno(), fobj.fileno(), size, stall_timeout=_SEND_STALL_SECONDS)
        except OSError as exc:
            # Client gone or stalled: some of the promised Content-Length is missing, so the
            # connection cannot be reused; nothing else to report.
            resp[BODY_BYTES] = getattr(exc, "sent", 0)
            transport.close()
            return resp
        resp[BODY_BYTES] = sent
        await resp.write_eof()
        return resp


def _range(request: web.Request, size: int) -> tuple[int, int] | None:
    """The request's byte range as [start, stop) within a ``size``-byte blob, None for the whole
    blob; a malformed (or multi-part) or unsatisfiable Range is a 416 RANGE_INVALID with the
    spec's error body and ``Content-Range: bytes */size``."""
    try:
        rng = request.http_range
    except ValueError:
        raise errors.RangeInvalid(
            "malformed Range header (one range of bytes=START-END, START- or -SUFFIX)",
            headers={"Content-Range": f"bytes */{size}"},
        ) from None
    start, stop = rng.start, rng.stop
    if start is None and stop is None:
        return None
    if start is not None and start < 0:  # suffix range "bytes=-N"
        start, stop = max(size + start, 0), size
    start = start or 0
    stop = size if stop is None else min(stop, size)
    if start >= size or start >= stop:
        raise errors.RangeInvalid(f"range not satisfiable for a {size}-byte blob", headers={"Content-Range": f"bytes */{size}"})
    return start, stop


def _check_range(request: web.Request, size: int) -> None:
    """Refuse a bad Range before FileResponse sees it (it answers 416 with no error body).
    With If-Range, FileResponse may ignore the range (validator changed), so only its syntax
    is checked then."""
    if "Range" not in request.headers:
        return
    if "If-Range" in request.headers:
        try:
            request.http_range  # noqa: B018 - parsing it is the check
        except ValueError:
            raise errors.RangeInvalid("malformed Range header", headers={"Content-Range": f"bytes */{size}"}) from None
        return
    _range(request, size)


async def _stream(request: web.Request, digest: str, size: int, headers: dict[str, str]) -> web.StreamResponse:
    """Range-aware streaming for drivers without local files."""
    store = request.app[BLOBS]
    rng = _range(request, size)
    status = 200
    if rng is None:
        start, stop = 0, size
    else:
        start, stop = rng
        status = 206
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    chunks: AsyncIterator[bytes] | None = store.read(digest, start, stop - start)
    try:
        # The first chunk before the headers: data missing from storage is still a clean 404.
        try:
            first = await anext(chunks, b"")  # type: ignore[arg-type]
        except FileNotFoundError:
            raise errors.BlobUnknown("blob data missing from storage", detail={"digest": digest}) from None
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = stop - start
        await resp.prepare(request)
        pos, chunk = start, first
        while chunk:
            # A client that reads slowly (or never) must hold only its own connection, not
            # one of the storage driver's pooled connections: if a write has to wait for the
            # client, let go of the storage stream and reopen it at the offset afterwards.
            write = asyncio.ensure_future(resp.write(chunk))
            done, _ = await asyncio.wait({write}, timeout=_SLOW_CLIENT_SECONDS)
            pos += len(chunk)
            if not done:
                if chunks is not None:
                    await _aclose(chunks)
                    chunks = None
                try:
                    await asyncio.wait_for(write, _SEND_STALL_SECONDS)
                except TimeoutError:
                    if request.transport is not None:
                        request.transport.close()  # client does not read
                    return resp
            else:
                write.result()
            if pos >= stop:
                break
            if chunks is None:
                chunks = store.read(digest, pos, stop - pos)
            chunk = await anext(chunks, b"")
        resp[BODY_BYTES] = pos - start
        await resp.write_eof()
        return resp
    finally:
        if chunks is not None:
            await _aclose(chunks)


BLOB_DELETE_DOC = {
    "tags": ["v2"],
    "operationId": "deleteBlob",
    "summary": "Unlink a blob from the repository",
    "responses": {
        "202": oa.empty("Unlinked (the bytes go at the next garbage collection).", oa.API_VERSION),
        **oa.errors(400, 404, 405, *oa.AUTH_ERRORS),
    },
}


@routes.delete(
    f"/v2/{NAME}/blobs/{{digest}}", name=route_names.BLOB_DELETE, rule=Rule.DELETE, doc=BLOB_DELETE_DOC, path_item=_BLOB_PATH
)
async def delete_blob(request: web.Request) -> web.Response:
    name, digest = request.match_info["name"], request.match_info["digest"]
    await service(request).delete_blob(name, digest, request_principal(request))
    return web.Response(status=202, headers=API_HEADERS)


async def _aclose(chunks: AsyncIterator[bytes]) -> None:
    """Close a driver's read stream now (the drivers' ``read`` are async generators), releasing
    its file or pooled connection instead of waiting for the garbage collector."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
