"""Small helpers shared by the route modules: app keys, request bodies, pagination."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from .. import errors
from ..components import Components
from ..config import Settings
from ..metadata.db import Database
from ..metadata.store import MetadataStore
from ..registry.events import Action, Actor, EventBus, Kind, Pull, RegistryEvent
from ..registry.principal import Face, Principal
from ..registry.safejson import UntrustedJSONError, loads_untrusted
from ..registry.service import RegistryService
from ..scheduler import Scheduler
from ..storage import BlobStore

if TYPE_CHECKING:  # the auth package (and its JWT/crypto libraries) loads only when auth is on
    from ..accounts.service import AccountsService
    from ..auth.authenticator import Authenticator

COMPONENTS = web.AppKey("components", Components)
DATABASE = web.AppKey("database", Database)
STORE = web.AppKey("store", MetadataStore)
SERVICE = web.AppKey("service", RegistryService)
BLOBS = web.AppKey("blobs", BlobStore)
SETTINGS = web.AppKey("settings", Settings)
#: Credentials -> identity, registry tokens, login rate limits (only with ``auth.mode`` htpasswd or token).
AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("authenticator")
#: The accounts service (users, tokens, grants, visibility, namespaces; ``auth.mode: token`` only).
ACCOUNTS: web.AppKey[AccountsService] = web.AppKey("accounts")
#: Registry events (push/pull/delete/mount); extensions subscribe, api/ handlers publish.
EVENTS = web.AppKey("events", EventBus)
#: Background jobs: extensions ``app[SCHEDULER].register(Job(...))`` while the app is built.
SCHEDULER = web.AppKey("scheduler", Scheduler)
#: What an operator should know while the registry serves (e.g. "importing 12 of 40 ... from a
#: registry:2 tree"): functions giving one line or None, added by extensions; ``/readyz`` shows
#: them as its ``detail`` (still ready), the UI as a banner.
NOTICES: web.AppKey[list[Callable[[], str | None]]] = web.AppKey("notices")
#: Request key: ``async fn(names) -> names`` keeping the repositories the caller may list
#: (set by the auth middleware for ``/v2/_catalog``; absent = everything is visible).
CATALOG_FILTER = "moorage.catalog_filter"
#: Request key: the upload session (``UploadRecord``) a middleware already read for this
#: ``PATCH``/``PUT`` (the quota check), so the handler does not read it again.
UPLOAD_RECORD = "moorage.upload_record"
#: Response key: body bytes a handler wrote behind aiohttp's back (sendfile), for the access
#: log and metrics (aiohttp's own counters never see them).  On the response, not the request:
#: middlewares may hand handlers a clone of the request.
BODY_BYTES = "moorage.body_bytes"

API_HEADERS = {"Docker-Distribution-API-Version": "registry/2.0"}
#: Request key: ``may(action, repository)`` of the credentials the auth middleware verified for
#: this request (token mode: the bearer token's ``access`` claims); absent: no limit to check.
CREDENTIALS_ALLOW = "moorage.credentials_allow"
BODY_CHUNK = 1 << 20
#: A partly gathered body chunk is passed on after the client has sent nothing for this long.
BODY_FLUSH_SECONDS = 0.05
_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)$")


def service(request: web.Request) -> RegistryService:
    return request.app[SERVICE]


#: The reader of a ``/v2`` request whose credentials carry no limit (authentication off, an
#: htpasswd user): one object, nothing allocated per read.
_UNLIMITED_READER = Principal(None, "v2")


def reader(request: web.Request) -> Principal:
    """The caller of a ``/v2`` read as the registry service authorizes it
    (``Principal.require("pull", ...)`` in ``serve_manifest``, ``blob_size``, ``list_tags``,
    ``referrers``): the account and what its credentials allow (:data:`CREDENTIALS_ALLOW`, a
    bearer token's verified ``access`` claims).  No request details: a read changes nothing and
    is not audited per request (pulls are counted by their own record)."""
    may = request.get(CREDENTIALS_ALLOW)
    if may is None:
        return _UNLIMITED_READER
    return Principal(request.get("user"), "v2", may=may)


def actor(request: web.Request) -> Actor:
    """Who made this request, for an event: what :func:`request_principal` reads of it."""
    return Actor.of(request_principal(request))


def request_principal(
    request: web.Request,
    face: Face = "v2",
    *,
    name: str | None = None,
    admin: bool = False,
    token_id: str | None = None,
    token_expires: float | None = None,
    scope: tuple[str, ...] | None = None,
    may: Callable[[str, str], bool] | None = None,
) -> Principal:
    """The caller of this request as the services take it: the one place a network face (the
    ``/v2`` handlers, ``/api/v1``, the web UI) builds a :class:`Principal`, so every audit
    entry and event carries the same request details (address, User-Agent, request id, host,
    method; bounded).  ``name`` defaults to ``request["user"]`` (set by the auth middleware;
    anonymous without); the faces that know more of the caller (the admin API's token, the web
    UI's viewer) pass the account's admin flag and token.

    ``may``: what the caller's credentials allow (:attr:`Principal.may`); by default what the
    auth middleware verified for this request (a bearer token's ``access`` claims,
    :data:`CREDENTIALS_ALLOW`), checked again by the service operation itself."""
    return Principal(
        name if name is not None else request.get("user"),
        face,
        admin=admin,
        token_id=token_id,
        token_expires=token_expires,
        scope=scope,
        address=request.remote or None,
        user_agent=request.headers.get("User-Agent", "")[:300],
        request_id=request.headers.get("X-Request-Id", "")[:200],
        host=request.host,
        method=request.method,
        may=may if may is not None else request.get(CREDENTIALS_ALLOW),
    )


async def publish(
    request: web.Request,
    action: Action,
    kind: Kind,
    repository: str,
    *,
    digest: str | None = None,
    media_type: str | None = None,
    size: int | None = None,
    tag: str | None = None,
) -> None:
    """Publish a pull for this request (nothing is built when nobody counts or listens).
    Changes are announced by the registry service itself, in their transaction.

    A pull (every manifest GET) is a :class:`Pull` -- a few slots -- handed to the bus's
    counters (the UI's activity, the pull audit); it becomes an event only for listeners that
    want pulls (webhooks listening to pulls), and the request's details (:func:`actor`) are
    read only when someone asks for them."""
    bus = request.app.get(EVENTS)
    if bus is None or (action == "pull" and request.method == "HEAD"):  # a HEAD is no pull
        return
    if action == "pull":
        if bus.wants_pulls:
            await bus.pulled(
                Pull(
                    kind,
                    repository,
                    digest=digest,
                    media_type=media_type,
                    size=size,
                    tag=tag,
                    user=request.get("user"),
                    actor_of=actor,
                    source=request,
                )
            )
        return
    if not bus.wants(action):
        return
    await bus.publish(
        RegistryEvent(action, kind, repository, digest=digest, media_type=media_type, size=size, tag=tag, actor=actor(request))
    )


def json_body(
    obj: Any, *, status: int = 200, headers: dict[str, str] | None = None, content_type: str = "application/json"
) -> web.Response:
    """A JSON response whose ``Content-Type`` is exactly ``content_type``.

    ``web.json_response`` sends text and so appends ``; charset=utf-8``; OCI media types
    (e.g. the referrers index) must be served as exactly that type, and JSON is UTF-8 anyway.
    """
    body = json.dumps(obj, separators=(",", ":")).encode()
    return web.Response(body=body, status=status, headers=headers, content_type=content_type)


def has_body(request: web.Request) -> bool:
    if request.content_length is not None:
        return request.content_length > 0
    return request.can_read_body


async def body_chunks(request: web.Request, size: int = BODY_CHUNK) -> AsyncIterator[bytes]:
    """The request body in chunks of about ``size`` bytes (one copy per chunk, no full read).

    Bytes are gathered into a chunk only while more keep arriving: what was received is passed
    on once the connection has been quiet for :data:`BODY_FLUSH_SECONDS`, however small.  The
    consumer's checks (the quota on a chunked body, the size bounds) then see every byte that
    arrived, also from a client that sends a little and holds its body open; a chunk that waited
    for ``size`` bytes would hold them back for as long as the client likes."""
    stream = request.content
    pieces: list[bytes] = []
    have = 0
    while True:
        if not pieces:
            data = await stream.readany()
        else:
            data = stream.read_nowait()  # what is buffered already: no wait, no timer
            if not data and not stream.at_eof():
                try:
                    async with asyncio.timeout(BODY_FLUSH_SECONDS):
                        data = await stream.readany()
                except TimeoutError:
                    yield b"".join(pieces)
                    pieces, have = [], 0
                    continue
        if not data:
            break
        pieces.append(data)
        have += len(data)
        if have >= size:
            yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
            pieces, have = [], 0
    if pieces:
        yield b"".join(pieces)


async def read_bounded(request: web.Request, limit: int) -> bytes:
    """Read the whole (small) body, refusing more than ``limit`` bytes without buffering them."""
    if request.content_length is not None and request.content_length > limit:
        raise errors.ManifestInvalid(f"body larger than {limit} bytes", status=413)
    pieces: list[bytes] = []
    have = 0
    while True:
        data = await request.content.readany()
        if not data:
            break
        have += len(data)
        if have > limit:
            raise errors.ManifestInvalid(f"body larger than {limit} bytes", status=413)
        pieces.append(data)
    return b"".join(pieces)


#: Largest JSON body of the admin API's requests (users, grants, tokens, webhooks, insight policies).
MAX_JSON_BODY = 64 * 1024


async def json_object(request: web.Request, limit: int = MAX_JSON_BODY) -> dict[str, Any]:
    """The request's body as a JSON object (an empty body is ``{}``): 413 past ``limit`` --
    declared or, for a chunked body, as read -- and 400 for anything but one JSON object
    (parsed with the untrusted-input bounds of :mod:`moorage.registry.safejson`).  The bytes
    are kept by aiohttp, so the admin audit middleware reads the same ones."""
    if request.content_length is not None and request.content_length > limit:
        raise errors.SizeInvalid("request body too large", status=413)
    raw = await request.read()  # bounded by the app's client_max_size; a chunked body's size shows here
    if len(raw) > limit:
        raise errors.SizeInvalid("request body too large", status=413)
    try:
        data = loads_untrusted(raw or b"{}")
    except UntrustedJSONError:
        raise errors.Unsupported("request body is not JSON", status=400) from None
    if not isinstance(data, dict):
        raise errors.Unsupported("request body must be a JSON object", status=400)
    return data


def content_range(request: web.Request) -> tuple[int, int] | None:
    """Parse an upload chunk's ``Content-Range`` (``start-end``, inclusive); 416 if malformed."""
    value = request.headers.get("Content-Range")
    if value is None:
        return None
    m = _CONTENT_RANGE.match(value.strip())
    if not m:
        raise errors.RangeInvalid(f"malformed Content-Range {value[:100]!r}")
    start, end = int(m.group(1)), int(m.group(2))
    if end < start:
        raise errors.RangeInvalid(f"Content-Range end before start: {value[:100]!r}")
    length = request.content_length
    if length is not None and length != end - start + 1:
        raise errors.RangeInvalid(f"Content-Range covers {end - start + 1} bytes, Content-Length is {length}")
    return start, end


#: The largest page a listing answers, whatever ``n`` asks for.  The spec lets a registry
#: return fewer results than ``n`` (with a ``Link`` to the rest), so a larger ``n`` is clamped
#: rather than refused; it also keeps ``LIMIT n + 1`` inside a 64-bit integer.
MAX_PAGE = 10_000
_ASCII_DIGITS = re.compile(r"[0-9]+")


def pagination(request: web.Request, *, default: int | None) -> tuple[int | None, str | None]:
    """``(n, last)`` from the query; ``n`` is ASCII digits only (``str.isdigit`` would accept
    ``²`` or Arabic-Indic digits) and at most :data:`MAX_PAGE`."""
    raw = request.query.get("n")
    n: int | None = default
    if raw is not None and raw != "":
        if not _ASCII_DIGITS.fullmatch(raw):
            raise errors.PaginationNumberInvalid(detail={"n": raw[:50]})
        # Compare digit strings before int(): a 5,000-digit n would hit Python's int-parsing limit.
        digits = raw.lstrip("0") or "0"
        n = MAX_PAGE if len(digits) > len(str(MAX_PAGE)) else min(int(digits), MAX_PAGE)
    last = request.query.get("last") or None
    return n, last


def link_next(path: str, n: int, last: str) -> str:
    return f'<{path}?{urlencode({"n": n, "last": last})}>; rel="next"'


def upload_location(name: str, upload_id: str) -> str:
    return f"/v2/{name}/blobs/uploads/{upload_id}"
