"""In-process checks of the events package: the outbox claim protocol on a real SQLite file
(two Database objects = two processes), glob matching, payload formats, signatures, time
parsing, and config validation that never echoes a secret."""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import hmac
import json
import random
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from moorage.config import Settings
from moorage.events.formats import Source, cloudevent, distribution, render, signature
from moorage.events.patterns import glob_matches
from moorage.events.query import parse_time
from moorage.metadata.db import Database
from moorage.metadata.events_store import DEAD, DELIVERED, PENDING, AuditQuery, EventsStore
from moorage.registry.events import Actor, RegistryEvent

EVENT = RegistryEvent(
    "push",
    "manifest",
    "team/app",
    digest="sha256:" + "a" * 64,
    media_type="application/vnd.oci.image.manifest.v1+json",
    size=123,
    tag="v1",
    actor=Actor("bob", "10.0.0.1", "ua/1", "req-1", "reg:5000", "PUT"),
    timestamp=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
)
SOURCE = Source("reg:5000", "inst-1")


def row(endpoint: str, repo: str, n: int) -> dict:
    now = time.time()
    return {
        "endpoint": endpoint,
        "repository": repo,
        "event_id": f"{repo}-{n}",
        "action": "push",
        "content_type": "application/json",
        "body": b"{}",
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


@pytest.fixture()
def stores(tmp_path: Path):  # noqa: ANN201
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"

    async def make() -> tuple[EventsStore, EventsStore, list[Database]]:
        a, b = Database(url), Database(url)
        await a.migrate()
        return EventsStore(a), EventsStore(b), [a, b]

    return make


def test_claims_are_exclusive_and_ordered_per_repository(stores) -> None:  # noqa: ANN001
    async def go() -> None:
        s1, s2, dbs = await stores()
        try:
            await s1.record([row("ci", f"r{i % 3}", i) for i in range(30)], [])
            seen: list[str] = []
            order: dict[str, list[str]] = {}

            async def worker(store: EventsStore, me: str) -> None:
                idle = 0
                while idle < 5:
                    batch = await store.claim(me, now=time.time(), lease=30, limit=4)
                    if not batch:
                        idle += 1
                        await asyncio.sleep(0.01)
                        continue
                    idle = 0
                    assert len({d.repository for d in batch}) == len(batch)  # one per repository
                    for d in batch:
                        seen.append(d.event_id)
                        order.setdefault(d.repository, []).append(d.event_id)
                        await store.delivered(d.id, me, 204)

            await asyncio.gather(worker(s1, "w1"), worker(s2, "w2"), worker(s1, "w3"))
            assert sorted(seen) == sorted(f"r{i % 3}-{i}" for i in range(30)) and len(seen) == 30
            for repo, ids in order.items():
                assert ids == sorted(ids, key=lambda x: int(x.split("-")[1])), repo
        finally:
            for db in dbs:
                await db.close()

    asyncio.run(go())


def test_failed_head_blocks_its_repository_only_and_leases_expire(stores) -> None:  # noqa: ANN001
    async def go() -> None:
        s1, s2, dbs = await stores()
        try:
            await s1.record([row("ci", "a", 1), row("ci", "a", 2), row("ci", "b", 1)], [])
            now = time.time()
            first = await s1.claim("w1", now=now, lease=30, limit=10)
            assert sorted(d.event_id for d in first) == ["a-1", "b-1"]
            # w2 can't take anything: heads are leased, a-2 waits for a-1
            assert await s2.claim("w2", now=now, lease=30, limit=10) == []
            a1 = next(d for d in first if d.event_id == "a-1")
            await s1.failed(a1.id, "w1", error="HTTP 500", status_code=500, retry_at=now + 60)
            assert await s2.claim("w2", now=now + 1, lease=30, limit=10) == []  # a-1 pending: a-2 still waits
            # w1 "dies" holding b-1: after the lease w2 takes it over (at least once)
            again = await s2.claim("w2", now=now + 31, lease=30, limit=10)
            assert [d.event_id for d in again] == ["b-1"] and again[0].attempts == 2
            # the stale worker can't overwrite the new owner's claim
            await s1.failed(again[0].id, "w1", error="late", status_code=None, retry_at=None)
            assert (await s1.get_delivery(again[0].id)).status == "delivering"
            await s2.delivered(again[0].id, "w2", 204)
            # a-1 due again, then dead: a-2 is released
            retry = await s2.claim("w2", now=now + 61, lease=30, limit=10)
            assert [d.event_id for d in retry] == ["a-1"]
            await s2.failed(retry[0].id, "w2", error="HTTP 500", status_code=500, retry_at=None)
            nxt = await s1.claim("w1", now=now + 62, lease=30, limit=10)
            assert [d.event_id for d in nxt] == ["a-2"]
            hist = {d.event_id: d for d in await s1.deliveries("ci")}
            assert hist["b-1"].status == DELIVERED and hist["a-1"].status == DEAD
            assert hist["a-1"].last_error == "HTTP 500" and hist["a-1"].attempts == 2
            assert await s1.retry(hist["a-1"].id, "ci") and not await s1.retry(hist["a-1"].id, "ci")
        finally:
            for db in dbs:
                await db.close()

    asyncio.run(go())


def test_audit_dedupe_and_visibility_filters(stores) -> None:  # noqa: ANN001
    async def go() -> None:
        s1, s2, dbs = await stores()
        try:
            base = {"time": time.time(), "action": "pull", "client_ip": "1.2.3.4"}
            await s1.audit([{**base, "actor": "bob", "repository": "team/app", "dedupe_key": "k1"}])
            await s2.audit([{**base, "actor": "bob", "repository": "team/app", "dedupe_key": "k1"}])  # other replica
            await s1.audit(
                [
                    {**base, "actor": "eve", "repository": "teamster/x"},
                    {**base, "actor": "eve", "repository": "team"},
                    {**base, "actor": "carol", "repository": None, "action": "login"},
                ]
            )
            assert len(await s1.query_audit(AuditQuery(actor="bob"))) == 1
            ns = await s1.query_audit(AuditQuery(namespaces=["team"], own_actor="carol"))
            assert sorted((e["actor"], e["repository"]) for e in ns) == [("bob", "team/app"), ("carol", None), ("eve", "team")]
            assert await s1.query_audit(AuditQuery(namespaces=[], own_actor="nobody")) == []
            assert len(await s1.query_audit(AuditQuery(repository="team*"))) == 3
            assert len(await s1.query_audit(AuditQuery(repository="team/*"))) == 1
            # a LIKE wildcard in a filter is a literal character
            assert await s1.query_audit(AuditQuery(repository="te_m/*")) == []
        finally:
            for db in dbs:
                await db.close()

    asyncio.run(go())


def test_glob_matches_like_fnmatch_and_linear() -> None:
    rng = random.Random(13)
    for _ in range(5000):
        pat = "".join(rng.choice("ab*/") for _ in range(rng.randint(1, 8)))
        text = "".join(rng.choice("ab/") for _ in range(rng.randint(0, 10)))
        assert glob_matches(pat, text) == fnmatch.fnmatchcase(text, pat.replace("[", "[[]")), (pat, text)
    hostile = "a" + "*a" * 120 + "*b"
    assert not glob_matches(hostile, "a" * 5000)  # returns at once (a backtracking regex would not)


def test_formats_and_signature() -> None:
    env = json.loads(distribution(EVENT, "id-1", SOURCE))
    ev = env["events"][0]
    assert ev["id"] == "id-1" and ev["action"] == "push" and ev["timestamp"] == "2026-11-30T12:00:00Z"
    assert ev["target"] == {
        "mediaType": EVENT.media_type,
        "size": 123,
        "length": 123,
        "digest": EVENT.digest,
        "repository": "team/app",
        "tag": "v1",
        "url": f"http://reg:5000/v2/team/app/manifests/{EVENT.digest}",
    }
    assert ev["request"] == {"id": "req-1", "addr": "10.0.0.1", "host": "reg:5000", "method": "PUT", "useragent": "ua/1"}
    assert ev["actor"] == {"name": "bob"} and ev["source"] == {"addr": "reg:5000", "instanceID": "inst-1"}
    tag_delete = RegistryEvent("delete", "tag", "team/app", tag="v1")
    t = json.loads(distribution(tag_delete, "id-2", SOURCE))["events"][0]
    assert "digest" not in t["target"] and t["target"]["tag"] == "v1" and t["actor"] == {}

    from cloudevents.core.bindings.http import HTTPMessage, from_http_event

    ctype, body = render("cloudevents", EVENT, "id-1", SOURCE)
    ce = from_http_event(HTTPMessage({"Content-Type": ctype}, body))
    assert ce.get_type() == "dev.moorage.image.pushed" and ce.get_id() == "id-1"
    assert ce.get_data()["digest"] == EVENT.digest and ce.get_data()["actor"] == "bob"
    assert cloudevent(EVENT, "id-1", SOURCE) == body  # deterministic: retries send the same bytes
    want = "sha256=" + hmac.new("k\u00e9y".encode(), body, hashlib.sha256).hexdigest()
    assert signature("k\u00e9y", body) == want


def test_parse_time() -> None:
    now = 1_800_000_000.0
    assert parse_time("24h", now=now) == now - 86400
    assert parse_time("1.5d", now=now) == now - 1.5 * 86400
    assert parse_time("1732970000") == 1732970000.0
    assert parse_time("2026-11-30T12:00:00Z") == datetime(2026, 11, 30, 12, tzinfo=UTC).timestamp()
    assert parse_time("2026-11-30T12:00:00") == parse_time("2026-11-30T12:00:00+00:00")
    for bad in ("", "yesterday", "h", "-5h", "1e9", "\x00", "9" * 100, "24x"):
        with pytest.raises(ValueError):
            parse_time(bad, now=now)


def test_webhook_config_errors_never_echo_the_secret() -> None:
    secret = "TOP-SECRET-VALUE-42"
    bad = [
        {"name": "ci", "url": "http://x/h", "secret": secret, "repositories": ["Bad*"]},
        {"name": "ci", "url": "gopher://x", "secret": secret},
        {"name": "ci", "url": "http://x/h", "secret": secret, "actions": []},
        {"name": "ci", "url": "http://x/h", "secret": secret, "unknown": 1},
        {"name": "c i", "url": "http://x/h", "secret": secret},
    ]
    for hook in bad:
        with pytest.raises(ValueError) as exc:
            Settings(webhooks=[hook])
        assert secret not in str(exc.value), str(exc.value)
    with pytest.raises(ValueError, match="duplicate webhook"):
        Settings(webhooks=[{"name": "a", "url": "http://x/h", "secret": "s"}] * 2)
    with pytest.raises(ValueError, match="set secret"):
        Settings(webhooks=[{"name": "a", "url": "http://x/h"}])
    with pytest.raises(ValueError, match="unknown"):
        Settings(events={"unknown": 1})
    ok = Settings(webhooks=[{"name": "a", "url": "http://x/h", "secret": secret}])
    assert secret not in repr(ok) and secret not in str(ok.model_dump())


def test_prune_in_batches_keeps_recent_and_open(stores) -> None:  # noqa: ANN001
    async def go() -> None:
        s1, _, dbs = await stores()
        try:
            now = time.time()
            await s1.audit(
                [{"time": now - 100 * 86400, "action": "push", "actor": f"old{i}"} for i in range(7)]
                + [{"time": now, "action": "push", "actor": "new"}]
            )
            await s1.record([row("ci", "a", i) for i in range(3)], [])
            claimed = await s1.claim("w", now=now + 1, lease=30, limit=5)
            await s1.delivered(claimed[0].id, "w", 204)  # a-0 delivered; a-1, a-2 still open
            n_audit, n_del = await s1.prune(audit_before=now - 90 * 86400, deliveries_before=now + 1, batch=2)
            assert (n_audit, n_del) == (7, 1)
            assert [e["actor"] for e in await s1.query_audit(AuditQuery())] == ["new"]
            assert sorted(d.event_id for d in await s1.deliveries("ci")) == ["a-1", "a-2"]
        finally:
            for db in dbs:
                await db.close()

    asyncio.run(go())


def test_audit_detail_keeps_no_credentials() -> None:
    from moorage.events.audit import _safe_detail

    d = _safe_detail(
        {
            "url": "http://u:pw@hooks.example:9/x?token=abc",
            "secret": "s",
            "password": "p",
            "name": "a",
            "nested": {"password": "p"},
            "actions": ["push", 1],
        }
    )
    assert d == {"name": "a", "url": "http://hooks.example:9/x"}
    assert _safe_detail({"url": "not a url"}) == {"url": ""}
    assert _safe_detail(["not", "a", "dict"]) == {}


def test_pull_entries_aggregated_per_window_and_kind() -> None:
    from moorage.config import EventsSettings
    from moorage.events.audit import AuditRecorder
    from moorage.events.stats import EventMetrics

    rec = AuditRecorder(None, EventsSettings(audit_pull_window=3600), EventMetrics(None))  # type: ignore[arg-type]
    pull = RegistryEvent(
        "pull", "manifest", "team/app", digest="sha256:" + "b" * 64, actor=Actor("bob"), timestamp=datetime.now(UTC)
    )
    first = rec.entry_for_event(pull)
    assert first is not None and first["dedupe_key"].startswith("pull|bob|team/app|")
    assert rec.entry_for_event(pull) is None  # same window: nothing
    assert (
        rec.entry_for_event(RegistryEvent("pull", "manifest", "team/app", digest=pull.digest, actor=Actor("eve"))) is not None
    )  # another actor
    assert rec.entry_for_event(RegistryEvent("pull", "blob", "team/app", digest=pull.digest)) is None
    assert rec.entry_for_event(RegistryEvent("push", "blob", "team/app", digest=pull.digest)) is None
    assert rec.entry_for_event(RegistryEvent("delete", "blob", "team/app", digest=pull.digest))["action"] == "delete"
    none = AuditRecorder(None, EventsSettings(audit_pulls="none"), EventMetrics(None))  # type: ignore[arg-type]
    assert none.entry_for_event(pull) is None
    every = AuditRecorder(None, EventsSettings(audit_pulls="all"), EventMetrics(None))  # type: ignore[arg-type]
    assert every.entry_for_event(pull) and every.entry_for_event(pull) and "dedupe_key" not in every.entry_for_event(pull)


def test_hanging_endpoints_of_one_namespace_do_not_delay_another(tmp_path: Path) -> None:
    """Issue 21 item 3: ten endpoints of namespace ``a`` accept and never answer; the one
    endpoint of namespace ``b`` is fast.  ``b``'s delivery must arrive before any of ``a``'s
    timeouts fires (before: the pool of 8 was all ``a``'s, so ``b`` waited for a timeout).
    No endpoint ever has more than its share of posts open at once."""
    from aiohttp import web

    from moorage.events.delivery import DeliveryWorker
    from moorage.events.endpoints import EndpointSet
    from moorage.events.stats import EventMetrics

    hang_timeout = 6.0
    hangers = 10

    async def go() -> None:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
        await db.migrate()
        store = EventsStore(db)
        loop = asyncio.get_running_loop()
        opened: dict[int, int] = {}
        peak: dict[int, int] = {}
        closed_at: list[float] = []
        writers: list[asyncio.StreamWriter] = []

        def hanging(idx: int):  # noqa: ANN202
            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                """Accept, read, never answer; note when the client gives up."""
                writers.append(writer)
                opened[idx] = opened.get(idx, 0) + 1
                peak[idx] = max(peak.get(idx, 0), opened[idx])
                try:
                    while await reader.read(65536):
                        pass
                finally:
                    opened[idx] -= 1
                    closed_at.append(loop.time())
                    writer.close()

            return handle

        servers = [await asyncio.start_server(hanging(i), "127.0.0.1", 0) for i in range(hangers)]
        fast_at: list[float] = []

        async def fast(request: web.Request) -> web.Response:
            await request.read()
            fast_at.append(loop.time())
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", fast)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        fast_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            base = {"secret": "s", "format": "distribution", "actions": ["push"], "targets": ["manifest"], "max_attempts": 3}
            for i, srv in enumerate(servers):
                port = srv.sockets[0].getsockname()[1]
                await store.create_webhook(
                    {**base, "name": f"a{i}", "url": f"http://127.0.0.1:{port}/h", "repositories": ["a/*"],
                     "timeout": hang_timeout, "namespace": "a", "created_by": "alice"}
                )  # fmt: skip
            await store.create_webhook(
                {**base, "name": "b", "url": f"http://127.0.0.1:{fast_port}/hook", "repositories": ["b/*"],
                 "timeout": hang_timeout, "namespace": "b", "created_by": "bob"}
            )  # fmt: skip
            # a's rows first (older ids: claimed first), three repositories per endpoint
            await store.record([row(f"a{i}", f"a/r{j}", 10 * i + j) for i in range(hangers) for j in range(3)], [])
            await store.record([row("b", "b/app", 1)], [])
            # Namespace administrators' endpoints reach loopback only where the operator allows it.
            settings = Settings(events={"webhooks": {"namespace_admins": True, "allowed_networks": ["127.0.0.0/8"]}})
            endpoints = EndpointSet(settings, store)
            await endpoints.reload()
            worker = DeliveryWorker(store, endpoints, settings.events, EventMetrics(None))
            started = loop.time()
            task = asyncio.create_task(worker.run())
            deadline = started + hang_timeout + 10
            while not fast_at and loop.time() < deadline:
                await asyncio.sleep(0.02)
            assert fast_at, "b's delivery never arrived"
            delay = fast_at[0] - started
            first_timeout = min(closed_at, default=float("inf")) - started
            print(f"b delivered after {delay:.3f} s; first timeout of a at {first_timeout:.3f} s")
            assert fast_at[0] < min(closed_at, default=float("inf")), (delay, first_timeout)
            assert sum(opened.values()) >= 1  # a's posts are hanging meanwhile
            assert max(peak.values()) <= 2, peak  # no endpoint holds more than its share
            # end the hanging posts from the server side so the worker stops at once
            for srv in servers:
                srv.close()
            for w in writers:
                w.close()
            await worker.stop()
            async with asyncio.timeout(hang_timeout + 10):
                await task
        finally:
            await runner.cleanup()
            await db.close()

    asyncio.run(go())


def test_webhook_timeout_is_bounded() -> None:
    """A receiver that never answers frees its slot after at most 30 s: a larger timeout is
    refused when made, and a row stored before the bound is used at the bound."""
    from pydantic import ValidationError

    from moorage.config import MAX_WEBHOOK_TIMEOUT, WebhookEndpoint
    from moorage.events.endpoints import from_row

    WebhookEndpoint(name="ok", url="http://x/", secret="s", timeout=MAX_WEBHOOK_TIMEOUT)
    with pytest.raises(ValidationError):
        WebhookEndpoint(name="slow", url="http://x/", secret="s", timeout=MAX_WEBHOOK_TIMEOUT + 1)
    old = {"name": "old", "url": "http://x/", "secret": "s", "format": "distribution", "actions": ["push"],
           "repositories": ["*"], "targets": ["manifest"], "timeout": 300.0, "max_attempts": 3}  # fmt: skip
    assert from_row(old).timeout == MAX_WEBHOOK_TIMEOUT == 30.0


def test_namespace_storage_scan_takes_a_bounded_share_of_time(tmp_path: Path) -> None:
    """The per-namespace storage figures join every repository's blob links (3.5 s at 1M
    repositories on PostgreSQL, in every server process): after a scan of t seconds the next
    waits t / STATS_DUTY, while the cheap counters are read at every interval."""
    from moorage.events.setup import STATS_DUTY, EventsExtension
    from moorage.events.stats import EventMetrics

    async def go() -> None:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
        await db.migrate()
        try:
            store = EventsStore(db)
            scans: list[float] = []
            now = [1000.0]
            real_scan = store.storage_by_namespace

            async def scan() -> list[tuple[str, int, int]]:
                scans.append(now[0])
                found = await real_scan()
                now[0] += 3.5  # what one scan costs at 1M repositories
                return found

            store.storage_by_namespace = scan  # type: ignore[method-assign]
            ext = EventsExtension(Settings(), store, EventMetrics(None))
            ext.clock = lambda: now[0]
            for _ in range(6):  # the job's interval: 60 s
                await ext.refresh_stats()
                assert ext.metrics.snapshot.counters is not None
                now[0] += 60.0
            assert scans[0] == 1000.0
            gaps = [b - a for a, b in zip(scans, scans[1:], strict=False)]
            assert gaps and all(g >= 3.5 / STATS_DUTY for g in gaps), gaps
            assert len(scans) < 6  # the counters were read six times, the scan fewer
        finally:
            await db.close()

    asyncio.run(go())
