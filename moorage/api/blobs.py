"""Blobs: ``GET``/``HEAD``/``DELETE /v2/<name>/blobs/<digest>``.

Filesystem blobs go out with sendfile (aiohttp's FileResponse, which also answers Range
requests with 206/416); other drivers either redirect to a presigned URL or stream through.
"""

from __future__ import annotations

from aiohttp import web

from ..registry import errors
from .common import API_HEADERS, BLOBS, SETTINGS, service

routes = web.RouteTableDef()
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


@routes.route("HEAD", f"/v2/{NAME}/blobs/{{digest}}", name="blob_head")
async def head_blob(request: web.Request) -> web.Response:
    name, digest = request.match_info["name"], request.match_info["digest"]
    size = await service(request).blob_size(name, digest)
    headers = _headers(digest, size)
    headers["Content-Length"] = str(size)
    return web.Response(status=200, headers=headers)


@routes.get(f"/v2/{NAME}/blobs/{{digest}}", name="blob_get")
async def get_blob(request: web.Request) -> web.StreamResponse:
    name, digest = request.match_info["name"], request.match_info["digest"]
    size = await service(request).blob_size(name, digest)
    store = request.app[BLOBS]
    headers = _headers(digest, size)
    if request.app[SETTINGS].storage.redirect:
        url = await store.redirect_url(digest)
        if url:
            return web.Response(status=307, headers={**API_HEADERS, "Location": url, "Docker-Content-Digest": digest})
    path = store.local_path(digest)
    if path is not None:
        if not path.is_file():
            raise errors.BlobUnknown("blob data missing from storage", detail={"digest": digest})
        return web.FileResponse(path, chunk_size=1 << 20, headers=headers)
    return await _stream(request, digest, size, headers)


async def _stream(request: web.Request, digest: str, size: int, headers: dict[str, str]) -> web.StreamResponse:
    """Range-aware streaming for drivers without local files."""
    store = request.app[BLOBS]
    try:
        rng = request.http_range
    except ValueError:
        raise errors.RangeInvalid("malformed Range header", headers={"Content-Range": f"bytes */{size}"}) from None
    start, stop = rng.start, rng.stop
    status = 200
    if start is None and stop is None:
        start, stop = 0, size
    else:
        if start is not None and start < 0:  # suffix range "bytes=-N"
            start, stop = max(size + start, 0), size
        start = start or 0
        stop = size if stop is None else min(stop, size)
        if start >= size or start >= stop:
            raise errors.RangeInvalid(f"range not satisfiable for a {size}-byte blob",
                                      headers={"Content-Range": f"bytes */{size}"})
        status = 206
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    chunks = store.read(digest, start, stop - start)
    try:
        # The first chunk before the headers: data missing from storage is still a clean 404.
        try:
            first = await anext(chunks, b"")
        except FileNotFoundError:
            raise errors.BlobUnknown("blob data missing from storage", detail={"digest": digest}) from None
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = stop - start
        await resp.prepare(request)
        if first:
            await resp.write(first)
        async for chunk in chunks:
            await resp.write(chunk)
        await resp.write_eof()
        return resp
    finally:
        await chunks.aclose()


@routes.delete(f"/v2/{NAME}/blobs/{{digest}}", name="blob_delete")
async def delete_blob(request: web.Request) -> web.Response:
    await service(request).delete_blob(request.match_info["name"], request.match_info["digest"])
    return web.Response(status=202, headers=API_HEADERS)
