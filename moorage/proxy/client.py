"""A small client for another registry's ``/v2/`` API (the upstream of the cache, either side of
``moorage mirror``).

Why our own and not a library: the cache needs to stream blob bodies into our storage while
they arrive and to control redirects and auth per request; what it speaks is small:

* Docker token auth: a 401 with ``WWW-Authenticate: Bearer realm=..,service=..,scope=..`` is
  answered by fetching a token from the realm (anonymously, or with the configured
  credentials as HTTP basic), cached per scope until shortly before it expires;
* HTTP basic auth (Distribution's htpasswd mode) when the challenge says ``Basic``;
* redirects (blob GETs to S3/CDN) followed by hand, never sending our ``Authorization`` to
  another host (the presigned URL carries its own authorisation, and leaking a registry token
  to a storage host is a credential leak);
* TLS: verification on/off and an extra CA file.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

log = logging.getLogger("moorage.proxy")

MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')
_MAX_REDIRECTS = 5
#: Tokens are renewed this many seconds before they expire.
_TOKEN_SLACK = 10.0
_MAX_TOKENS = 1000
#: Largest JSON answer read from an upstream or its token endpoint (a token, a tags page, a
#: referrers list): beyond it the answer is an :class:`UpstreamError`, never a buffer of the
#: upstream's choosing (docs/integrity.md, resource bounds).
MAX_JSON_BYTES = 4 << 20
#: Tag-list pages followed (``n=1000`` each): an upstream's endless ``Link`` chain ends here.
MAX_TAG_PAGES = 1000
#: Bytes of an upstream's error answer kept for the message.
_ERROR_TEXT_BYTES = 300


class UpstreamError(Exception):
    """The upstream could not be reached or answered with an error (not a plain 404)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UpstreamNotFound(UpstreamError):
    """The upstream answered 404: it does not have what was asked for."""


@dataclass(frozen=True, slots=True)
class ManifestInfo:
    digest: str | None
    media_type: str
    size: int | None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="..",service=".."`` -> (``bearer``, {realm, service, ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)).replace('\\"', '"')
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


def split_creds(creds: str | None) -> tuple[str | None, str | None]:
    """``user:password`` -> (user, password); None -> (None, None)."""
    if not creds:
        return None, None
    user, sep, password = creds.partition(":")
    if not sep:
        raise ValueError("credentials must be USER:PASSWORD")
    return user, password


class RegistryClient:
    """One upstream registry, reached at ``base_url`` (``http[s]://host[:port]``)."""

    def __init__(
        self,
        base_url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        tls_verify: bool = True,
        ca_file: Path | str | None = None,
        timeout: float = 30.0,
        read_timeout: float = 60.0,
        user_agent: str = "moorage-proxy",
    ) -> None:
        parts = urlsplit(base_url if "://" in base_url else f"https://{base_url}")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"upstream URL must be http(s)://HOST[:PORT], got {base_url!r}")
        self.base_url = f"{parts.scheme}://{parts.netloc}"
        self.host = parts.netloc
        self.username, self.password = username, password
        self.tls_verify, self.ca_file, self.timeout = tls_verify, ca_file, timeout
        #: Longest silence of the upstream within one answer (an idle read), seconds.
        self.read_timeout = read_timeout
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._tokens: dict[str, tuple[str, float]] = {}
        self._token_locks: dict[str, asyncio.Lock] = {}
        #: How the upstream authenticates: None (unknown yet / none), "basic" or "bearer" + params.
        self._scheme: str | None = None
        self._bearer_params: dict[str, str] = {}

    # ------------------------------------------------------------------------ plumbing
    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.base_url.startswith("https"):
            return False
        if not self.tls_verify:
            return False
        ctx = ssl.create_default_context()
        if self.ca_file:
            ctx.load_verify_locations(cafile=str(self.ca_file))
        return ctx

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl(), limit=64)
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=self.read_timeout)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=timeout, auto_decompress=False, headers={"User-Agent": self.user_agent}
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _basic(self) -> str | None:
        if self.username is None:
            return None
        raw = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    async def _token(self, scope: str, params: Mapping[str, str]) -> str:
        cached = self._tokens.get(scope)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        lock = self._token_locks.setdefault(scope, asyncio.Lock())
        async with lock:  # one token request per scope at a time
            cached = self._tokens.get(scope)
            if cached and cached[1] > time.monotonic():
                return cached[0]
            realm = params.get("realm")
            if not realm or urlsplit(realm).scheme not in ("http", "https"):
                raise UpstreamError(f"upstream {self.host} sent a Bearer challenge without a usable realm")
            query: list[tuple[str, str]] = []
            if params.get("service"):
                query.append(("service", params["service"]))
            for s in scope.split(" "):
                if s:
                    query.append(("scope", s))
            headers = {}
            basic = self._basic()
            if basic:
                headers["Authorization"] = basic
            try:
                async with self.session.get(realm, params=query, headers=headers) as resp:
                    if resp.status in (401, 403):
                        raise UpstreamError(f"upstream {self.host} refused our credentials ({resp.status})", resp.status)
                    if resp.status != 200:
                        raise UpstreamError(f"token endpoint of {self.host} answered {resp.status}", resp.status)
                    body = await _json_body(resp, f"token answer of {self.host}")
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise UpstreamError(f"token endpoint of {self.host}: {exc}") from None
            token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise UpstreamError(f"token endpoint of {self.host} returned no token")
            expires = body.get("expires_in") if isinstance(body.get("expires_in"), (int, float)) else 60
            now = time.monotonic()
            if len(self._tokens) >= _MAX_TOKENS:  # one per repository pulled: drop the expired ones
                for key in [k for k, (_, until) in self._tokens.items() if until <= now]:
                    self._tokens.pop(key, None)
                    self._token_locks.pop(key, None)
            self._tokens[scope] = (token, now + max(float(expires) - _TOKEN_SLACK, 1.0))
            return token

    async def _auth_header(self, scope: str) -> str | None:
        if self._scheme == "basic":
            return self._basic()
        if self._scheme == "bearer":
            return "Bearer " + await self._token(scope, self._bearer_params)
        return None

    async def request(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        ok: tuple[int, ...] = (200,),
        params: Any = None,
    ) -> aiohttp.ClientResponse:
        """Send a request to ``path`` (``/v2/...``) authorised for ``scope``; the caller releases
        the response.  Answers 404 with :class:`UpstreamNotFound`, other non-``ok`` statuses and
        network errors with :class:`UpstreamError`."""
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        for attempt in range(2):
            hdrs = dict(headers or {})
            auth = await self._auth_header(scope)
            if auth:
                hdrs["Authorization"] = auth
            try:
                resp = await self._send(method, url, hdrs, data, params)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise UpstreamError(f"{self.host} unreachable: {exc.__class__.__name__}: {exc}") from None
            if resp.status == 401 and attempt == 0 and not hasattr(data, "__aiter__"):
                challenge = resp.headers.get("WWW-Authenticate", "")
                resp.release()
                scheme, params_ = parse_challenge(challenge)
                if scheme == "bearer":
                    self._scheme, self._bearer_params = "bearer", params_
                    self._tokens.pop(scope, None)
                    continue
                if scheme == "basic" and self.username is not None and self._scheme != "basic":
                    self._scheme = "basic"
                    continue
                raise UpstreamError(f"{self.host} requires authentication ({challenge[:100] or 'no challenge'})", 401)
            if resp.status in ok:
                return resp
            status = resp.status
            try:
                text = (await resp.content.read(_ERROR_TEXT_BYTES)).decode(errors="replace")
            except (TimeoutError, aiohttp.ClientError):
                text = ""
            resp.release()
            if status == 404:
                raise UpstreamNotFound(f"{self.host}{path}: not found", 404)
            raise UpstreamError(f"{self.host} answered {status} to {method} {path}: {text}", status)
        raise UpstreamError(f"{self.host} keeps asking for authentication", 401)

    async def _send(self, method: str, url: str, headers: dict[str, str], data: Any, params: Any) -> aiohttp.ClientResponse:
        """One request, following redirects; ``Authorization`` only goes to the registry's host."""
        origin = urlsplit(url).netloc
        for _ in range(_MAX_REDIRECTS + 1):
            resp = await self.session.request(method, url, headers=headers, data=data, params=params, allow_redirects=False)
            if resp.status not in (301, 302, 303, 307, 308) or "Location" not in resp.headers:
                return resp
            location = urljoin(url, resp.headers["Location"])
            resp.release()
            if urlsplit(location).netloc != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            url, params = location, None
            if resp.status == 303:
                method, data = "GET", None
        raise UpstreamError(f"{self.host}: too many redirects")

    # --------------------------------------------------------------------- operations
    @staticmethod
    def pull_scope(repo: str) -> str:
        return f"repository:{repo}:pull"

    async def ping(self) -> None:
        resp = await self.request("GET", "/v2/", scope="", ok=(200,))
        resp.release()

    async def head_manifest(self, repo: str, reference: str) -> ManifestInfo:
        resp = await self.request(
            "HEAD", f"/v2/{repo}/manifests/{reference}", scope=self.pull_scope(repo), headers={"Accept": MANIFEST_ACCEPT}
        )
        resp.release()
        return ManifestInfo(resp.headers.get("Docker-Content-Digest"), resp.headers.get("Content-Type", ""), resp.content_length)

    async def get_manifest(self, repo: str, reference: str, *, limit: int = 4 << 20) -> tuple[bytes, str]:
        """(bytes exactly as the upstream stores them, media type)."""
        resp = await self.request(
            "GET", f"/v2/{repo}/manifests/{reference}", scope=self.pull_scope(repo), headers={"Accept": MANIFEST_ACCEPT}
        )
        try:
            if resp.content_length is not None and resp.content_length > limit:
                raise UpstreamError(f"manifest from {self.host} larger than {limit} bytes")
            body = bytearray()
            async for chunk in resp.content.iter_any():
                body += chunk
                if len(body) > limit:
                    raise UpstreamError(f"manifest from {self.host} larger than {limit} bytes")
            return bytes(body), resp.headers.get("Content-Type", "").split(";")[0].strip()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamError(f"{self.host}: manifest body interrupted: {exc}") from None
        finally:
            resp.release()

    async def head_blob(self, repo: str, digest: str, *, scope: str | None = None) -> int:
        resp = await self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=scope or self.pull_scope(repo))
        resp.release()
        if resp.content_length is None:
            raise UpstreamError(f"{self.host}: blob HEAD without Content-Length")
        return resp.content_length

    async def blob_exists(self, repo: str, digest: str, *, scope: str | None = None) -> bool:
        try:
            await self.head_blob(repo, digest, scope=scope)
            return True
        except UpstreamNotFound:
            return False

    async def open_blob(self, repo: str, digest: str) -> aiohttp.ClientResponse:
        """The blob's GET response (after redirects); the caller reads and releases it."""
        return await self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=self.pull_scope(repo))

    async def iter_blob(self, resp: aiohttp.ClientResponse, chunk: int = 1 << 20) -> AsyncIterator[bytes]:
        """The body of :meth:`open_blob` in chunks of about ``chunk`` bytes; network errors as
        :class:`UpstreamError`."""
        pieces: list[bytes] = []
        have = 0
        try:
            async for data in resp.content.iter_any():
                pieces.append(data)
                have += len(data)
                if have >= chunk:
                    yield b"".join(pieces)
                    pieces, have = [], 0
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamError(f"{self.host}: blob body interrupted: {exc}") from None
        if pieces:
            yield b"".join(pieces)

    async def list_tags(self, repo: str) -> list[str]:
        found: list[str] = []
        path: str | None = f"/v2/{repo}/tags/list?n=1000"
        pages = 0
        while path:
            pages += 1
            if pages > MAX_TAG_PAGES:
                raise UpstreamError(f"{self.host}: more than {MAX_TAG_PAGES} pages of tags for {repo}")
            resp = await self.request("GET", path, scope=self.pull_scope(repo))
            try:
                body = await _json_body(resp, f"tag list from {self.host}")
                link = resp.headers.get("Link")
            finally:
                resp.release()
            tags = body.get("tags") if isinstance(body, dict) else None
            found.extend(t for t in (tags if isinstance(tags, list) else []) if isinstance(t, str))
            m = re.match(r"\s*<([^>]+)>\s*;\s*rel=\"?next\"?", link or "")
            path = m.group(1) if m else None
            if path and path.startswith("http"):
                path = urlsplit(path)._replace(scheme="", netloc="").geturl()
        return found

    async def referrers(self, repo: str, digest: str) -> list[dict[str, Any]] | None:
        """The referrers API's descriptors, or None if the registry does not implement it."""
        try:
            resp = await self.request("GET", f"/v2/{repo}/referrers/{digest}", scope=self.pull_scope(repo))
        except UpstreamNotFound:
            return None
        try:
            if "json" not in resp.headers.get("Content-Type", ""):
                return None
            body = await _json_body(resp, f"referrers list from {self.host}")
        finally:
            resp.release()
        manifests = body.get("manifests") if isinstance(body, dict) else None
        return manifests if isinstance(manifests, list) else None


async def _json_body(resp: aiohttp.ClientResponse, what: str) -> Any:
    """An upstream's JSON answer, read to at most :data:`MAX_JSON_BYTES` (a declared or streamed
    larger body, a body that is not JSON, or one nested too deeply is an :class:`UpstreamError`)."""
    from ..registry.safejson import UntrustedJSONError, loads_untrusted

    too_big = f"{what} larger than {MAX_JSON_BYTES} bytes"
    if resp.content_length is not None and resp.content_length > MAX_JSON_BYTES:
        raise UpstreamError(too_big)
    body = bytearray()
    try:
        async for chunk in resp.content.iter_any():
            body += chunk
            if len(body) > MAX_JSON_BYTES:
                raise UpstreamError(too_big)
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise UpstreamError(f"{what} interrupted: {exc}") from None
    try:
        return loads_untrusted(bytes(body))
    except UntrustedJSONError as exc:
        raise UpstreamError(f"{what} is not JSON: {str(exc)[:100]}") from None
