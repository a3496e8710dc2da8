"""Resource bounds (docs/integrity.md, "Resource bounds"): for each input a user controls, one
byte / entry past the bound is refused (or passed over) as the table says, and -- where that
means something -- exactly at the bound it is taken.  Rows whose test lives elsewhere name it in
the table (the connection guard's timeouts need a ``moorage serve``; quotas and session caps have
modules of their own).

Everything here runs in this process (the app on the in-memory blob store, the drivers and
parsers called directly, fake upstreams and webhook receivers on loopback): the unit tier.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import socket
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web

from tests.support.http import Client, sha256
from tests.support.inproc import InProcessRegistry
from tests.support.registry_proc import free_port

pytestmark = pytest.mark.unit

KiB, MiB = 1 << 10, 1 << 20
T = 60
ADMIN_PW = "admin-Pw-for-bounds"


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessRegistry]:
    r = InProcessRegistry(tmp_path_factory.mktemp("bounds-open")).start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="module")
def token_reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessRegistry]:
    r = InProcessRegistry(
        tmp_path_factory.mktemp("bounds-token"), auth={"mode": "token", "admin_password": ADMIN_PW, "bcrypt_rounds": 4}
    ).start()
    try:
        yield r
    finally:
        r.stop()


# -- the request head ---------------------------------------------------------------------------
def _first_line(reg: InProcessRegistry, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", reg.port), timeout=T) as s:
        s.sendall(head)
        out = b""
        while b"\r\n" not in out:
            data = s.recv(4096)
            if not data:
                break
            out += data
    return out.split(b"\r\n", 1)[0]


@pytest.mark.parametrize(
    ("what", "make"),
    [
        ("request target", lambda n: b"GET /v2/" + b"a" * (n - 4) + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("header value", lambda n: b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * n + b"\r\n\r\n"),
    ],
)
def test_request_head_line_bounds(reg: InProcessRegistry, what: str, make: Callable[[int], bytes]) -> None:
    """8190 bytes (aiohttp's parser limits, which ``moorage serve`` keeps): 8191 is 400."""
    logging.getLogger("aiohttp.server").disabled = True  # the parser's refusal logs a traceback
    try:
        assert _first_line(reg, make(8190)).split(b" ")[1] in (b"200", b"404"), what
        assert _first_line(reg, make(8191)).split(b" ")[1] == b"400", what
    finally:
        logging.getLogger("aiohttp.server").disabled = False


def test_request_head_header_count(reg: InProcessRegistry) -> None:
    """128 header lines: the 129th is 400."""
    logging.getLogger("aiohttp.server").disabled = True
    try:

        def head(n: int) -> bytes:  # Host plus n - 1 others
            return b"GET /v2/ HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(n - 1)) + b"\r\n"

        assert _first_line(reg, head(128)).split(b" ")[1] == b"200"
        assert _first_line(reg, head(129)).split(b" ")[1] == b"400"
    finally:
        logging.getLogger("aiohttp.server").disabled = False


# -- request bodies of the JSON / form APIs and the manifest -------------------------------------------
@dataclass(frozen=True)
class BodyRow:
    name: str
    method: str
    path: str
    content_type: str
    limit: int
    token_mode: bool = False


BODY_ROWS = [
    BodyRow("admin API", "POST", "/api/v1/users", "application/json", 64 * KiB, token_mode=True),
    BodyRow("token endpoint form", "POST", "/auth/token", "application/x-www-form-urlencoded", 64 * KiB, token_mode=True),
    BodyRow("insight API", "PUT", "/api/v1/insight/policies/bounds", "application/json", 64 * KiB),
    BodyRow("webhooks API", "POST", "/api/v1/webhooks", "application/json", 64 * KiB),
    BodyRow("UI form", "POST", "/ui/repo/bounds/app/-/delete", "application/x-www-form-urlencoded", 256 * KiB),
]


def _sized(row: BodyRow, n: int) -> bytes:
    if row.content_type == "application/json":
        return b'{"name": "' + b"a" * (n - 12) + b'"}'
    return b"grant_type=password&x=" + b"a" * (n - 22)


def _chunks(data: bytes, piece: int = 16 * KiB) -> Iterator[bytes]:
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


@pytest.mark.parametrize("row", BODY_ROWS, ids=[r.name for r in BODY_ROWS])
def test_request_body_bound(row: BodyRow, reg: InProcessRegistry, token_reg: InProcessRegistry) -> None:
    """One byte past the bound is 413, declared (``Content-Length``) or streamed (chunked); at the
    bound the body is read (whatever its content then earns, it is not 413, never 5xx)."""
    target = token_reg if row.token_mode else reg
    url = target.url + row.path
    headers = {"Content-Type": row.content_type}
    at, past = _sized(row, row.limit), _sized(row, row.limit + 1)
    assert (len(at), len(past)) == (row.limit, row.limit + 1)
    auth = ("admin", ADMIN_PW) if row.token_mode and row.path.startswith("/api/") else None
    r = requests.request(row.method, url, data=past, headers=headers, auth=auth, timeout=T)
    assert r.status_code == 413, (row.name, "declared", r.status_code, r.text[:200])
    r = requests.request(row.method, url, data=_chunks(past), headers=headers, auth=auth, timeout=T)
    assert r.status_code == 413, (row.name, "chunked", r.status_code, r.text[:200])
    r = requests.request(row.method, url, data=at, headers=headers, auth=auth, timeout=T)
    assert r.status_code != 413 and r.status_code < 500, (row.name, "at the bound", r.status_code, r.text[:200])


def test_manifest_bound(reg: InProcessRegistry) -> None:
    """``max_manifest_bytes`` (4 MiB): a manifest of exactly that size is stored; one byte more is
    413, declared or chunked, and nothing is stored."""
    client = Client(reg.url)
    config = b"{}"
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": client.push_blob("bounds/m", config),
            "size": 2,
        },
        "layers": [],
    }
    core = json.dumps(doc).encode()
    at = core + b" " * (4 * MiB - len(core))  # JSON allows trailing whitespace; the digest covers it
    past = at + b" "
    h = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    for body in (past, _chunks(past)):
        r = client.req("PUT", "/v2/bounds/m/manifests/past", data=body, headers=h)
        assert r.status_code == 413, (r.status_code, r.text[:200])
    assert client.req("GET", "/v2/bounds/m/manifests/past").status_code == 404
    assert client.req("GET", f"/v2/bounds/m/manifests/{sha256(past)}").status_code == 404
    r = client.req("PUT", "/v2/bounds/m/manifests/at", data=at, headers=h)
    assert r.status_code == 201, r.text[:300]
    got = client.req("GET", "/v2/bounds/m/manifests/at", headers={"Accept": h["Content-Type"]})
    assert got.status_code == 200 and got.content == at


# -- config blob (the UI's manifest page) -------------------------------------------------------------
def test_ui_renders_a_config_up_to_2_mib(reg: InProcessRegistry) -> None:
    """The manifest page reads the config when its descriptor says at most 2 MiB; one byte more
    and the page shows no config section (200, not a read of the blob)."""
    client = Client(reg.url)
    marker = "/bounds-marker-entrypoint"
    for tag, size in (("at", 2 * MiB), ("past", 2 * MiB + 1)):
        core = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Entrypoint": [marker]}, "pad": ""}).encode()
        config = core[:-2] + b"a" * (size - len(core)) + b'"}'
        assert len(config) == size
        r = client.push_image("bounds/cfg", tag, [tag.encode()], config=config)
        page = requests.get(f"{reg.url}/ui/repo/bounds/cfg/-/manifest/{tag}", timeout=T)
        assert page.status_code == 200, (tag, page.status_code, r[0])
        assert (marker in page.text) == (tag == "at"), tag


# -- layer for the scanner ------------------------------------------------------------------------------
def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _walk(layers: list[bytes], limits: Any) -> Any:
    from moorage.insight.layers import ImageWalker

    walker = ImageWalker(limits)
    for i, layer in enumerate(layers):
        walker.add_layer(f"sha256:{i:064x}", io.BytesIO(layer))
    return walker.inventory()


def test_scanner_file_and_member_bounds() -> None:
    """A package-metadata file of ``max_file_bytes`` is read, one byte more is passed over with a
    reason; a layer of ``max_members`` entries is read, one more rejects the layer."""
    from moorage.insight.layers import Limits

    def pkg(size: int) -> bytes:
        core = json.dumps({"name": "is-number", "version": "6.0.0", "pad": ""}).encode()
        return core[:-2] + b"a" * (size - len(core)) + b'"}'

    path = "srv/node_modules/is-number/package.json"
    limit = 4 * KiB
    inv = _walk([_tar({path: pkg(limit)})], Limits(max_file_bytes=limit))
    assert [p.name for p in inv.packages] == ["is-number"] and not inv.skipped
    inv = _walk([_tar({path: pkg(limit + 1)})], Limits(max_file_bytes=limit))
    assert not inv.packages and "over the limit" in " ".join(s["reason"] for s in inv.skipped), inv.skipped
    members = {f"f{i}": b"" for i in range(9)}
    inv = _walk([_tar({**members, path: pkg(100)})], Limits(max_members=10))
    assert [p.name for p in inv.packages] == ["is-number"], inv.skipped
    inv = _walk([_tar({**members, "f9": b"", path: pkg(100)})], Limits(max_members=10))
    assert not inv.packages and "more than 10 entries" in " ".join(s["reason"] for s in inv.skipped), inv.skipped


# -- vulnerability database file --------------------------------------------------------------------------
def test_advisory_file_bound(tmp_path: Path) -> None:
    """An advisory file (alone, or a zip member) of 8 MiB is read; one byte more is passed over."""
    from moorage.insight.osv import MAX_ADVISORY_BYTES, read_advisories

    def doc(id_: str, size: int) -> bytes:
        core = json.dumps({"id": id_, "modified": "2024-01-01T00:00:00Z", "summary": ""}).encode()
        return core[:-2] + b"a" * (size - len(core)) + b'"}'

    for id_, size in (("AT", MAX_ADVISORY_BYTES), ("PAST", MAX_ADVISORY_BYTES + 1)):
        (tmp_path / f"{id_}.json").write_bytes(doc(id_, size))
    with zipfile.ZipFile(tmp_path / "all.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ZAT.json", doc("ZAT", MAX_ADVISORY_BYTES))
        zf.writestr("ZPAST.json", doc("ZPAST", MAX_ADVISORY_BYTES + 1))
    ids = sorted(d["id"] for _, d in read_advisories(tmp_path))
    assert ids == ["AT", "ZAT"], ids


# -- import tree (Distribution storage) ----------------------------------------------------------------------
def test_import_tree_file_bounds(tmp_path: Path) -> None:
    """The importer reads a link file up to 1 KiB and a manifest up to 4 MiB; one byte more is an
    import error naming the file (never read whole)."""
    from moorage.compat.distribution_import import _MANIFEST_LIMIT, DistributionImportError, FilesystemSource  # type: ignore[attr-defined]

    root = tmp_path / "registry"
    (root / "docker/registry/v2").mkdir(parents=True)
    source = FilesystemSource(root)
    base = root / "docker/registry/v2"
    for name, size, limit in (("link", 1024, 1024), ("manifest", _MANIFEST_LIMIT, _MANIFEST_LIMIT)):
        (base / f"{name}-at").write_bytes(b"a" * size)
        (base / f"{name}-past").write_bytes(b"a" * (size + 1))
        assert asyncio.run(source.read_small(f"{name}-at", limit)) == b"a" * size
        with pytest.raises(DistributionImportError, match="larger than"):
            asyncio.run(source.read_small(f"{name}-past", limit))


# -- webhook response -----------------------------------------------------------------------------------------
class _Endless:
    """A receiver that answers 200 with a body that never ends, or not at all (``hang``)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.port = free_port()
        self.requests = 0
        self.sent = 0
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.requests += 1
        if self.mode == "hang":
            await asyncio.sleep(30)
        resp = web.StreamResponse(status=200)
        await resp.prepare(request)
        try:
            while self.sent < 64 * MiB:
                await resp.write(b"x" * (64 * KiB))
                self.sent += 64 * KiB
        except (ConnectionError, RuntimeError):
            pass
        return resp

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        runner = web.AppRunner(app, handle_signals=False)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._loop.run_until_complete(self._stop.wait())
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> _Endless:
        self._thread.start()
        time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.mark.parametrize("mode", ["endless", "hang"])
def test_webhook_response_bounds(mode: str, tmp_path: Path) -> None:
    """A receiver's answer is read to 64 KiB at most (an endless 200 still counts as delivered,
    and the connection is dropped long before the receiver's 64 MiB); a receiver that does not
    answer within the endpoint's ``timeout`` (1 s here) is a failed attempt, retried later."""
    with _Endless(mode) as rx:
        r = InProcessRegistry(
            tmp_path,
            webhooks=[{"name": "b", "url": f"http://127.0.0.1:{rx.port}/h", "secret": "s", "timeout": 1, "repositories": ["*"]}],
            events={"delivery_poll_interval": 0.1, "retry_backoff": 30},
        ).start()
        try:
            Client(r.url).push_image("bounds/hook", "v1", [b"hook"])
            deadline = time.monotonic() + 30
            want = "delivered" if mode == "endless" else "failed"
            rows: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                body = requests.get(f"{r.url}/api/v1/webhooks/b/deliveries", timeout=T).json()
                rows = body.get("deliveries", [])
                if (
                    rows
                    and all(d["status"] in ("delivered", "pending", "dead") for d in rows)
                    and any(
                        (d["status"] == "delivered")
                        if want == "delivered"
                        else (d.get("attempts", 0) >= 1 and d["status"] != "delivered")
                        for d in rows
                    )
                ):
                    break
                time.sleep(0.2)
            assert rows, "no delivery recorded"
            if mode == "endless":
                assert any(d["status"] == "delivered" for d in rows), rows
                assert rx.sent < 16 * MiB, f"the registry read {rx.sent} bytes of an endless answer"
            else:
                failed = [d for d in rows if d.get("attempts", 0) >= 1 and d["status"] != "delivered"]
                assert failed, rows
                assert re.search(r"time", json.dumps(failed), re.I), failed  # timeout, timed out, TimeoutError
        finally:
            r.stop()


# -- upstream responses (pull-through cache, mirror) --------------------------------------------------------
class _Upstream:
    """A fake upstream registry on loopback whose answers the test chooses per path."""

    def __init__(self) -> None:
        self.port = free_port()
        self.routes: dict[str, Callable[[web.Request], Any]] = {}
        self.hits: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        for pattern, fn in self.routes.items():
            if re.fullmatch(pattern, request.path):
                self.hits[pattern] = self.hits.get(pattern, 0) + 1
                res = fn(request)
                return await res if asyncio.iscoroutine(res) else res
        return web.json_response({"errors": [{"code": "NAME_UNKNOWN"}]}, status=404)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, handle_signals=False)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._loop.run_until_complete(self._stop.wait())
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> _Upstream:
        self._thread.start()
        time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


async def _endless_body(request: web.Request, status: int = 200, ctype: str = "application/json") -> web.StreamResponse:
    resp = web.StreamResponse(status=status, headers={"Content-Type": ctype})
    await resp.prepare(request)
    try:
        for _ in range(4096):  # 256 MiB: far more than any bound
            await resp.write(b" " * (64 * KiB))
    except (ConnectionError, RuntimeError):
        pass
    return resp


MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def test_upstream_manifest_bound_in_the_cache(tmp_path: Path) -> None:
    """An upstream manifest one byte over ``max_manifest_bytes`` (declared, or streamed without a
    length) is not taken: 503 with the reason, nothing stored."""
    size = 4 * MiB + 1
    core = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": {}, "layers": []}).encode()
    big = core + b" " * (size - len(core))

    def head(request: web.Request) -> web.Response:
        return web.Response(
            headers={"Content-Type": MANIFEST_TYPE, "Docker-Content-Digest": sha256(big), "Content-Length": str(size)}
        )

    async def get(request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":
            return head(request)
        if "chunked" in request.path:
            resp = web.StreamResponse(headers={"Content-Type": MANIFEST_TYPE})
            await resp.prepare(request)
            for i in range(0, len(big), 256 * KiB):
                await resp.write(big[i : i + 256 * KiB])
            return resp
        return web.Response(body=big, headers={"Content-Type": MANIFEST_TYPE})

    with _Upstream() as up:
        up.routes[r"/v2/"] = lambda r: web.json_response({})
        up.routes[r"/v2/lib/(declared|chunked)/manifests/.*"] = get
        r = InProcessRegistry(
            tmp_path, proxy={"upstreams": [{"name": "up", "url": up.url, "namespace": "up", "timeout": 5}]}
        ).start()
        try:
            c = Client(r.url)
            for repo in ("declared", "chunked"):
                got = c.req("GET", f"/v2/up/lib/{repo}/manifests/v1", headers={"Accept": MANIFEST_TYPE})
                assert got.status_code == 503 and "larger than" in got.text, (repo, got.status_code, got.text[:300])
            assert c.req("GET", f"/v2/up/lib/declared/manifests/{sha256(big)}").status_code in (404, 503)
        finally:
            r.stop()


def test_an_idle_upstream_is_dropped_after_its_read_timeout(tmp_path: Path) -> None:
    """An upstream that goes silent in the middle of an answer (a manifest, a layer) is dropped
    after ``read_timeout`` seconds of silence: the manifest is a 503 naming the upstream, the layer's
    download is cut, and nothing of either is stored.  (Before ``read_timeout`` the silence allowed
    was a fixed 60 s floor, too long for a test: this row of docs/integrity.md was untested.)"""
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": {}, "layers": []}).encode()
    layer = b"L" * (256 * KiB)
    stalls = threading.Event()  # set at exit: the stalled handlers end

    async def stalled(request: web.Request, body: bytes, ctype: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": ctype, "Content-Length": str(len(body))})
        if request.method == "HEAD":
            resp.headers["Docker-Content-Digest"] = sha256(body)
            return resp
        await resp.prepare(request)
        await resp.write(body[: len(body) // 2])
        for _ in range(300):  # silent, with half the body sent, until the test ends (bounded)
            if stalls.is_set():
                break
            await asyncio.sleep(0.1)
        return resp

    up = _Upstream()
    up.routes[r"/v2/"] = lambda r: web.json_response({})
    up.routes[r"/v2/lib/app/manifests/.*"] = lambda r: stalled(r, manifest, MANIFEST_TYPE)
    up.routes[r"/v2/lib/app/blobs/.*"] = lambda r: stalled(r, layer, "application/octet-stream")
    r = InProcessRegistry(
        tmp_path,
        proxy={"upstreams": [{"name": "up", "url": up.url, "namespace": "up", "timeout": 5, "read_timeout": 1}]},
    ).start()
    try:
        c = Client(r.url)
        with up:
            got = c.req("GET", "/v2/up/lib/app/manifests/v1", headers={"Accept": MANIFEST_TYPE}, timeout=30)
            assert got.status_code == 503, (got.status_code, got.text[:300])
            assert "UNAVAILABLE" in got.text
            try:
                blob = requests.get(f"{r.url}/v2/up/lib/app/blobs/{sha256(layer)}", timeout=30)
                cut = blob.status_code != 200 or blob.content != layer
            except requests.RequestException:
                cut = True  # the download was cut after its headers had gone out
            assert cut
            stalls.set()
        # the upstream is gone: only what was stored could answer now, and nothing was
        for path in (f"manifests/{sha256(manifest)}", "manifests/v1", f"blobs/{sha256(layer)}"):
            assert c.req("HEAD", f"/v2/up/lib/app/{path}").status_code != 200, path
    finally:
        stalls.set()
        r.stop()


def test_upstream_json_answers_are_bounded() -> None:
    """The upstream client reads a token answer, a tags page or a referrers list to 4 MiB, an
    error answer's text to 300 bytes, follows 5 redirects and 1000 tag pages: one past each is
    an ``UpstreamError`` (the cache answers 503), never a buffer or a loop of the upstream's choosing."""
    from moorage.proxy.client import MAX_JSON_BYTES, MAX_TAG_PAGES, RegistryClient, UpstreamError

    with _Upstream() as up:
        realm = f"{up.url}/token"
        up.routes[r"/v2/"] = lambda r: web.json_response({})
        up.routes[r"/v2/tok/[a-z]+/tags/list"] = lambda r: (
            web.json_response({"tags": ["a"]})
            if r.headers.get("Authorization")
            else web.json_response({}, status=401, headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="s"'})
        )
        up.routes[r"/token"] = lambda r: _endless_body(r)
        up.routes[r"/v2/err/x/manifests/.*"] = lambda r: _endless_body(r, status=500, ctype="text/plain")
        up.routes[r"/v2/big/x/tags/list"] = lambda r: _endless_body(r)
        up.routes[r"/v2/loop/x/tags/list"] = lambda r: web.json_response(
            {"tags": ["t"]}, headers={"Link": '</v2/loop/x/tags/list?n=1000&last=t>; rel="next"'}
        )
        up.routes[r"/v2/atpages/x/tags/list"] = lambda r: web.json_response(
            {"tags": [r.query.get("last", "0") + "x"]},
            headers={"Link": f'</v2/atpages/x/tags/list?n=1000&last={int(r.query.get("last", "0")) + 1}>; rel="next"'}
            if int(r.query.get("last", "0")) + 1 < MAX_TAG_PAGES
            else {},
        )
        up.routes[r"/v2/redir/x/manifests/(\d+)"] = lambda r: web.Response(
            status=307, headers={"Location": f"/v2/redir/x/manifests/{int(r.match_info['tail'].rsplit('/', 1)[1]) + 1}"}
        )

        async def scenario() -> None:
            async def refused(call: Callable[[RegistryClient], Any], match: str) -> None:
                client = RegistryClient(up.url, timeout=10)  # one per case: a client remembers the auth scheme
                try:
                    with pytest.raises(UpstreamError, match=match):
                        await call(client)
                finally:
                    await client.close()

            await refused(lambda c: c.list_tags("tok/x"), "token answer .* larger than")
            await refused(lambda c: c.get_manifest("err/x", "v1"), "answered 500")
            await refused(lambda c: c.list_tags("big/x"), "tag list .* larger than")
            await refused(lambda c: c.list_tags("loop/x"), f"more than {MAX_TAG_PAGES} pages")
            await refused(lambda c: c.get_manifest("redir/x", "0"), "too many redirects")
            client = RegistryClient(up.url, timeout=10)
            try:
                assert len(await client.list_tags("atpages/x")) == MAX_TAG_PAGES
            finally:
                await client.close()

        asyncio.run(asyncio.wait_for(scenario(), 120))
        assert 4 * MiB == MAX_JSON_BYTES
