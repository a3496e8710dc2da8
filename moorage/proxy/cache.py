"""The pull-through cache: what happens when a pull misses in a namespace served from an upstream.

The core handlers stay as they are; a middleware (:func:`proxy_middleware`) sits in front of the
manifest and blob routes of cached namespaces and makes sure the content is local before the
core handler serves it:

* **manifest by tag**: served locally while the tag was validated less than ``tag_ttl`` seconds
  ago; otherwise a HEAD upstream gives the digest, and only a changed digest fetches the
  manifest.  Upstream unreachable (or refusing us) -> the cached copy is served with
  ``X-Moorage-Cache: stale`` and a warning in the log;
* **manifest by digest**: immutable, so local if present, else fetched (index children are
  fetched this way, one by one as the client asks for them);
* **blob**: local if present; else one upstream GET per (repository, digest) however many
  clients ask at once ("single flight"): the first request streams the bytes to its client
  while they are hashed into an ordinary upload session; the others wait for the commit and
  are served the stored blob.  The digest is verified by the core upload path; a mismatch
  discards the upload (nothing is stored) and the streaming client's response is cut short
  before its last chunk, so no client ever receives a complete wrong blob.

Fetched content is recorded like pushed content, through the same :class:`RegistryService`
operations (``put_manifest``, the upload APIs) with the pulling client as the principal and
``proxy`` as the face, so it counts in storage, shows in listings, is collected by GC and
retention like the rest, and is audited and sent to webhooks like any change.  What is served
is served by the core handler, so the registry service's pull rule (the vulnerability policy)
applies to cached content exactly as to local content.  Pushes into a cached namespace are refused (405 UNSUPPORTED).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .. import errors
from ..api import routes as route_names
from ..api.routing import ROUTE_REGISTRY
from ..config import ProxyUpstream, Settings
from ..metadata.store import MetadataStore
from ..registry.digests import Digest
from ..registry.manifests import parse_manifest
from ..registry.names import validate_name, validate_tag
from ..registry.principal import Principal
from ..registry.service import RegistryService
from .client import RegistryClient, UpstreamError, UpstreamNotFound
from .stats import ProxyStats

log = logging.getLogger("moorage.proxy")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CACHE_HEADER = "X-Moorage-Cache"
_MANIFEST_ROUTES = {route_names.MANIFEST_GET, route_names.MANIFEST_HEAD}
_BLOB_ROUTES = {route_names.BLOB_GET, route_names.BLOB_HEAD}


def push_routes(app: web.Application) -> frozenset[str]:
    """Every route the app declared PUSH (upload start with and without the trailing slash,
    PATCH, PUT, status, cancel; manifest PUT): derived, so a push route added later is refused
    in a cached namespace without anyone remembering to list it here."""
    return app[ROUTE_REGISTRY].names(route_names.Rule.PUSH)


_DOCKER_HUB_HOSTS = {"registry-1.docker.io", "docker.io", "index.docker.io", "registry.hub.docker.com"}
_MAX_FRESH_ENTRIES = 100_000
#: A streaming client that does not take a chunk for this long is detached (the fetch goes on).
_LEADER_STALL_SECONDS = 60.0
_QUEUE_CHUNKS = 8


@dataclass
class Upstream:
    """One configured upstream and its client."""

    cfg: ProxyUpstream
    client: RegistryClient
    stats: ProxyStats

    @property
    def name(self) -> str:
        return self.cfg.name

    def describe(self) -> dict[str, Any]:
        """What the admin API and the UI show of it: never its credentials."""
        return {
            "name": self.name,
            "url": self.client.base_url,
            "namespace": self.cfg.namespace,
            "tag_ttl": self.cfg.tag_ttl,
            "authenticated": self.cfg.username is not None,
            "stats": self.stats.as_dict(),
        }

    def remote_name(self, local: str) -> str | None:
        """The upstream repository for local repository ``local``, or None if not ours."""
        ns = self.cfg.namespace.strip("/")
        if ns:
            if not local.startswith(ns + "/"):
                return None
            remote = local[len(ns) + 1 :]
        else:
            remote = local
        if not remote:
            return None
        if "/" not in remote and self.client.host in _DOCKER_HUB_HOSTS:
            remote = "library/" + remote  # Docker Hub's official images
        return remote


@dataclass
class _Flight:
    """One upstream blob fetch that several requests share."""

    size: int | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    #: The leading request's chunk queue; None once it has gone (or never streamed).
    queue: asyncio.Queue[bytes | None] | None = None


class PullThroughCache:
    """The cache's state: upstreams, tag freshness, blob fetches in flight, statistics."""

    def __init__(self, settings: Settings, store: MetadataStore, service: RegistryService) -> None:
        self.settings = settings
        self.store = store
        self.service = service
        self.upstreams: list[Upstream] = []
        for cfg in settings.proxy.upstreams:
            password = cfg.password
            if cfg.password_env:
                import os

                password = os.environ.get(cfg.password_env)
                if password is None:
                    raise ValueError(f"proxy upstream {cfg.name!r}: environment variable {cfg.password_env} is not set")
            client = RegistryClient(
                cfg.url,
                username=cfg.username,
                password=password,
                tls_verify=cfg.tls_verify,
                ca_file=cfg.ca_file,
                timeout=cfg.timeout,
                read_timeout=cfg.read_timeout,
            )
            self.upstreams.append(Upstream(cfg, client, ProxyStats()))
        names = [u.name for u in self.upstreams]
        if len(set(names)) != len(names):
            raise ValueError("proxy upstream names must be unique")
        spaces = [u.cfg.namespace.strip("/") for u in self.upstreams]
        if len(set(spaces)) != len(spaces):
            raise ValueError("two proxy upstreams serve the same namespace")
        for ns in spaces:
            if ns:
                validate_name(ns)
        # Longest namespace first, the whole-registry mirror ("") last.
        self.upstreams.sort(key=lambda u: -len(u.cfg.namespace.strip("/")))
        self._fresh: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._flights: dict[tuple[str, str], _Flight] = {}
        self._tag_fetches: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except asyncio.CancelledError:
                pass  # cancelled just above
            except Exception:  # noqa: BLE001 - the fetch reported its own failure to its waiters
                log.debug("proxy: a fetch ended with an error at shutdown", exc_info=True)
        for up in self.upstreams:
            await up.client.close()

    def match(self, name: str) -> tuple[Upstream, str] | None:
        for up in self.upstreams:
            remote = up.remote_name(name)
            if remote is not None:
                return up, remote
        return None

    # -------------------------------------------------------------------- middleware
    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def proxy_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            route = getattr(request.match_info.route, "name", None)
            if route not in _MANIFEST_ROUTES and route not in _BLOB_ROUTES and route not in push_routes(request.app):
                return await handler(request)
            name = request.match_info.get("name", "")
            found = self.match(name)
            if found is None:
                return await handler(request)
            up, remote = found
            if route in push_routes(request.app):
                raise errors.Unsupported(
                    f"{name} is in a pull-through cache of {up.cfg.url} (upstream {up.name!r}); "
                    f"pushes are refused here: push to the upstream or to a repository outside the cached namespace",
                    detail={"repository": name[:200], "upstream": up.name},
                )
            validate_name(name)
            if route in _MANIFEST_ROUTES:
                return await self._manifest(request, handler, up, remote)
            return await self._blob(request, handler, up, remote)

        return proxy_middleware

    # --------------------------------------------------------------------- manifests
    def _is_fresh(self, key: tuple[str, str], ttl: int) -> bool:
        at = self._fresh.get(key)
        return at is not None and time.monotonic() - at < ttl

    def _mark_fresh(self, key: tuple[str, str]) -> None:
        self._fresh[key] = time.monotonic()
        self._fresh.move_to_end(key)
        while len(self._fresh) > _MAX_FRESH_ENTRIES:
            self._fresh.popitem(last=False)

    async def _manifest(self, request: web.Request, handler: Handler, up: Upstream, remote: str) -> web.StreamResponse:
        name, ref = request.match_info["name"], request.match_info["reference"]
        by_digest = ":" in ref
        if by_digest:
            Digest.parse(ref)
        else:
            validate_tag(ref)
        local = await self.store.get_manifest(name, ref, by_digest=by_digest)
        if by_digest:
            if local is not None:
                return await self._served(request, handler, up, "hit", local.size)
            await self._fetch_manifest_once(up, name, remote, ref, None, _by(request))
            return await self._served(request, handler, up, "miss")
        key = (name, ref)
        if local is not None and self._is_fresh(key, up.cfg.tag_ttl):
            return await self._served(request, handler, up, "hit", local.size)
        try:
            info = await up.client.head_manifest(remote, ref)
        except UpstreamNotFound:
            up.stats.misses += 1
            raise errors.ManifestUnknown(
                f"{remote}:{ref} is not on upstream {up.name!r}", detail={"reference": ref, "upstream": up.name}
            ) from None
        except UpstreamError as exc:
            return await self._upstream_failed(request, handler, up, exc, have_local=local is not None)
        if local is not None and info.digest and info.digest == local.digest:
            self._mark_fresh(key)
            up.stats.revalidated += 1
            return await self._served(request, handler, up, "hit", local.size)
        try:
            await self._fetch_manifest_once(up, name, remote, ref, info.digest, _by(request))
        except errors.Unavailable as exc:
            if local is None:
                raise
            return await self._upstream_failed(request, handler, up, exc, have_local=True)
        self._mark_fresh(key)
        return await self._served(request, handler, up, "miss")

    async def _served(
        self, request: web.Request, handler: Handler, up: Upstream, how: str, size: int | None = None
    ) -> web.StreamResponse:
        if how == "hit":
            up.stats.hits += 1
            if size and request.method == "GET":
                up.stats.bytes_saved += size
        elif how == "miss":
            up.stats.misses += 1
        resp = await handler(request)
        if not resp.prepared:
            resp.headers[CACHE_HEADER] = how
        return resp

    async def _upstream_failed(
        self, request: web.Request, handler: Handler, up: Upstream, exc: Exception, *, have_local: bool
    ) -> web.StreamResponse:
        up.stats.upstream_errors += 1
        if not have_local:
            raise errors.Unavailable(f"upstream {up.name!r} unavailable: {exc}", headers={"Retry-After": "10"}) from None
        up.stats.stale += 1
        log.warning(
            "proxy: upstream %s unavailable (%s); serving cached %s%s",
            up.name,
            exc,
            request.match_info.get("name", "")[:200],
            ":" + request.match_info.get("reference", "")[:128],
        )
        return await self._served(request, handler, up, "stale")

    async def _fetch_manifest_once(
        self, up: Upstream, name: str, remote: str, ref: str, digest: str | None, by: Principal
    ) -> None:
        """Fetch and store a manifest; concurrent requests for the same one share the fetch."""
        key = (name, digest or ref)
        pending = self._tag_fetches.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._tag_fetches[key] = pending
            try:
                await self._fetch_manifest(up, name, remote, ref, digest, by)
                pending.set_result(None)
            except BaseException as exc:
                pending.set_exception(exc if isinstance(exc, Exception) else errors.Unavailable("fetch cancelled"))
                pending.exception()  # retrieved, whether or not anyone else waits
                raise
            finally:
                self._tag_fetches.pop(key, None)
            return
        await asyncio.shield(pending)

    async def _fetch_manifest(self, up: Upstream, name: str, remote: str, ref: str, digest: str | None, by: Principal) -> None:
        by_digest = ":" in ref
        try:
            body, media_type = await up.client.get_manifest(remote, digest or ref, limit=self.settings.max_manifest_bytes)
        except UpstreamNotFound:
            raise errors.ManifestUnknown(
                f"{remote}@{digest or ref} is not on upstream {up.name!r}", detail={"reference": ref, "upstream": up.name}
            ) from None
        except UpstreamError as exc:
            up.stats.upstream_errors += 1
            raise errors.Unavailable(f"upstream {up.name!r} unavailable: {exc}", headers={"Retry-After": "10"}) from None
        expected = digest or (ref if by_digest else None)
        algorithm = Digest.parse(expected).algorithm if expected else "sha256"
        actual = str(Digest.of(body, algorithm))
        if expected and actual != expected:
            up.stats.upstream_errors += 1
            log.error("proxy: upstream %s sent manifest %s for %s@%s", up.name, actual, remote, expected)
            raise errors.Unavailable(
                f"upstream {up.name!r} sent a manifest whose digest does not match; not stored", headers={"Retry-After": "10"}
            )
        try:
            parse_manifest(body, media_type or None)
        except errors.RegistryError as exc:
            up.stats.upstream_errors += 1
            raise errors.Unavailable(f"upstream {up.name!r} sent a manifest this registry cannot store: {exc.message}") from None
        if not by_digest and algorithm != "sha256":  # a tag names what the service addresses by sha256
            by_digest, ref = True, actual
        await self.service.put_manifest(name, actual if by_digest else ref, body, media_type or None, by, verify_references=False)
        up.stats.bytes_fetched += len(body)
        log.info("proxy: cached manifest %s@%s from %s", name[:200], actual, up.name)

    # ------------------------------------------------------------------------- blobs
    async def _blob(self, request: web.Request, handler: Handler, up: Upstream, remote: str) -> web.StreamResponse:
        name, digest = request.match_info["name"], request.match_info["digest"]
        Digest.parse(digest)
        size = await self.store.blob_size_in_repository(name, digest)
        if size is not None:
            return await self._served(request, handler, up, "hit", size)
        key = (name, digest)
        flight = self._flights.get(key)
        if flight is None:
            if request.method == "HEAD":
                return await self._head_miss(up, remote, digest)
            if await self.store.blob_size(digest) is not None:
                # Stored for another repository: link it here once the upstream confirms this
                # repository has it (a cache must not widen what a repository exposes).
                try:
                    await up.client.head_blob(remote, digest)
                except UpstreamNotFound:
                    raise errors.BlobUnknown(detail={"digest": digest}) from None
                except UpstreamError as exc:
                    up.stats.upstream_errors += 1
                    raise errors.Unavailable(f"upstream {up.name!r} unavailable: {exc}", headers={"Retry-After": "10"}) from None
                if await self.service.link_cached_blob(name, digest, _by(request)):
                    return await self._served(request, handler, up, "hit", await self.store.blob_size(digest))
            # Another request may have started the fetch while we awaited: look again, and
            # from here to registering our flight there is no await (single flight).
            flight = self._flights.get(key)
        if flight is not None:
            up.stats.shared += 1
            await asyncio.shield(flight.done)  # raises the fetch's error, if it failed
            return await self._served(request, handler, up, "hit", flight.size)
        flight = _Flight()
        streams = request.method == "GET" and "Range" not in request.headers
        if streams:
            flight.queue = asyncio.Queue(maxsize=_QUEUE_CHUNKS)
        self._flights[key] = flight
        up.stats.misses += 1
        task = asyncio.create_task(self._fetch_blob(up, name, remote, digest, flight, _by(request)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if not streams:
            await asyncio.shield(flight.done)
            return await handler(request)
        return await self._stream_leader(request, up, name, digest, flight)

    async def _head_miss(self, up: Upstream, remote: str, digest: str) -> web.Response:
        try:
            size = await up.client.head_blob(remote, digest)
        except UpstreamNotFound:
            raise errors.BlobUnknown(detail={"digest": digest}) from None
        except UpstreamError as exc:
            up.stats.upstream_errors += 1
            raise errors.Unavailable(f"upstream {up.name!r} unavailable: {exc}", headers={"Retry-After": "10"}) from None
        return web.Response(status=200, headers=_blob_headers(digest, size, "miss"))

    async def _fetch_blob(self, up: Upstream, name: str, remote: str, digest: str, flight: _Flight, by: Principal) -> None:
        """Upstream GET -> upload session (hashed while streaming) -> commit if the digest matches."""
        key = (name, digest)
        upload_id: str | None = None
        try:
            try:
                resp = await up.client.open_blob(remote, digest)
            except UpstreamNotFound:
                raise errors.BlobUnknown(f"blob not on upstream {up.name!r}", detail={"digest": digest}) from None
            try:
                flight.size = resp.content_length
                flight.started.set()
                record = await self.service.start_upload(name)
                upload_id = record.id
                fetched = 0

                async def tee() -> AsyncIterator[bytes]:
                    nonlocal fetched
                    async for chunk in up.client.iter_blob(resp):
                        fetched += len(chunk)
                        queue = flight.queue
                        if queue is not None:
                            try:
                                await asyncio.wait_for(queue.put(chunk), _LEADER_STALL_SECONDS)
                            except TimeoutError:
                                flight.queue = None  # the streaming client stalls: go on without it
                        yield chunk

                try:
                    await self.service.finish_upload(name, upload_id, digest, tee(), by=by)
                except errors.DigestInvalid:
                    upload_id = None  # discarded by the service
                    log.error("proxy: upstream %s sent wrong bytes for %s@%s; nothing stored", up.name, remote, digest)
                    raise errors.Unavailable(
                        f"upstream {up.name!r} sent a blob whose digest does not match; not stored", headers={"Retry-After": "10"}
                    ) from None
                upload_id = None
                up.stats.bytes_fetched += fetched
                log.info("proxy: cached blob %s@%s (%d bytes) from %s", name[:200], digest, fetched, up.name)
            finally:
                resp.release()
            flight.done.set_result(None)
        except BaseException as exc:
            if isinstance(exc, UpstreamError):
                up.stats.upstream_errors += 1
                exc = errors.Unavailable(f"upstream {up.name!r} unavailable: {exc}", headers={"Retry-After": "10"})
            elif isinstance(exc, errors.BlobUploadInvalid):  # the upstream's body broke off
                up.stats.upstream_errors += 1
                exc = errors.Unavailable(f"fetching from upstream {up.name!r} failed: {exc}", headers={"Retry-After": "5"})
            if upload_id is not None:
                try:
                    await self.service.cancel_upload(name, upload_id)
                except Exception as cancel_exc:  # noqa: BLE001 - the session expires (gc.upload_expiry)
                    log.warning("proxy: dropping the upload of %s@%s failed: %r", remote, digest, cancel_exc)
            if not flight.done.done():
                flight.done.set_exception(exc if isinstance(exc, Exception) else errors.Unavailable("fetch cancelled"))
                flight.done.exception()  # retrieved: nobody may be waiting
            if not isinstance(exc, errors.RegistryError):
                log.exception("proxy: fetching %s@%s from %s failed", remote, digest, up.name)
        finally:
            flight.started.set()
            self._flights.pop(key, None)
            queue = flight.queue
            if queue is not None:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(None)  # end of stream (the leader also watches ``done``)

    async def _stream_leader(
        self, request: web.Request, up: Upstream, name: str, digest: str, flight: _Flight
    ) -> web.StreamResponse:
        """Stream the fetch to the first client, holding back the last chunk until the digest
        was verified and the blob committed."""
        await flight.started.wait()
        if flight.done.done() and (failure := flight.done.exception()) is not None:
            raise failure
        resp = web.StreamResponse(status=200, headers=_blob_headers(digest, flight.size, "miss"))
        if flight.size is not None:
            resp.content_length = flight.size
        queue = flight.queue
        assert queue is not None
        held: bytes | None = None
        try:
            await resp.prepare(request)
            while True:
                get = asyncio.ensure_future(queue.get())
                waiters: set[asyncio.Future[Any]] = {get, flight.done}  # the next chunk, or the fetch's end
                waited, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                if get not in waited:
                    get.cancel()
                    # Fetch over: take what is still queued.
                    chunk = queue.get_nowait() if not queue.empty() else None
                    if chunk is None:
                        break
                else:
                    chunk = get.result()
                    if chunk is None:
                        break
                if held is not None:
                    await resp.write(held)
                held = chunk
            while not queue.empty():
                chunk = queue.get_nowait()
                if chunk is None:
                    continue
                if held is not None:
                    await resp.write(held)
                held = chunk
            try:
                await asyncio.shield(flight.done)
            except Exception:
                # Wrong or broken upstream bytes: cut the response short (the client sees an
                # incomplete body, never a complete wrong blob).
                if request.transport is not None:
                    request.transport.close()
                return resp
            if held is not None:
                await resp.write(held)
            await resp.write_eof()
            from ..api.common import publish

            await publish(request, "pull", "blob", name, digest=digest, size=flight.size)
            return resp
        finally:
            flight.queue = None
            while not queue.empty():  # unblock a producer waiting for room
                queue.get_nowait()


def _by(request: web.Request) -> Principal:
    """The pulling client, acting through the cache."""
    from ..api.common import request_principal

    return request_principal(request, "proxy")


def _blob_headers(digest: str, size: int | None, how: str) -> dict[str, str]:
    headers = {
        "Docker-Distribution-API-Version": "registry/2.0",
        "Docker-Content-Digest": digest,
        "ETag": f'"{digest}"',
        "Content-Type": "application/octet-stream",
        CACHE_HEADER: how,
    }
    if size is not None:
        headers["Content-Length"] = str(size)
    return headers
