"""Two replicas on one PostgreSQL database (and one storage directory) deliver each webhook
event exactly once, in order per repository, while both push and both run delivery workers.

The replicas' workers race for the same outbox rows (``FOR UPDATE SKIP LOCKED`` plus a
conditional claim UPDATE); the receiver's log must hold every event id once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import run_moorage
from tests.support.http import Client
from tests.support.postgres import create_database
from tests.support.registry_proc import RegistryProcess
from tests.support.webhook_receiver import Receiver
from tests.test_events import SECRET_D, envelope_event, start, write_config

pytestmark = pytest.mark.services

EVENTS = 40


@pytest.fixture()
def replicas(postgres_url: str, tmp_path: Path) -> Iterator[tuple[list[RegistryProcess], Receiver]]:
    rx = Receiver().start()
    url = create_database(postgres_url, f"events_{uuid.uuid4().hex[:10]}")
    env = {
        "MOORAGE_DATABASE__URL": url,
        "MOORAGE_DATABASE__AUTO_MIGRATE": "false",
        "MOORAGE_STORAGE__FILESYSTEM__ROOT": str(tmp_path / "shared-storage"),
    }
    config = write_config(
        tmp_path / "moorage.yaml",
        [{"name": "ci", "url": rx.url("/hook"), "secret": SECRET_D, "actions": ["push", "delete"], "repositories": ["*"]}],
        delivery_poll_interval=0.05,
    )
    cp = run_moorage("migrate", "--data", tmp_path / "migrate", env=env)
    assert cp.returncode == 0, cp.stderr[-2000:]
    procs: list[RegistryProcess] = []
    try:
        for i in range(2):
            procs.append(start(tmp_path / f"r{i}", config, env=env))
        yield procs, rx
    finally:
        for p in procs:
            p.stop()
        rx.close()


def test_two_replicas_each_event_once_in_order(replicas: tuple[list[RegistryProcess], Receiver]) -> None:
    procs, rx = replicas
    clients = [Client(p.url) for p in procs]
    pushed: dict[str, list[str]] = {}
    for i in range(EVENTS):
        repo = f"team/r{i % 4}"
        # alternate replicas within one repository, so both write its outbox rows
        digest, _ = clients[(i // 4) % 2].push_image(repo, f"t{i}")
        pushed.setdefault(repo, []).append(digest)
    got = rx.wait_for(EVENTS, "/hook", timeout=120)
    time.sleep(3)  # a duplicate would arrive now
    got = rx.received("/hook")
    ids = [r.event_id for r in got]
    assert len(ids) == EVENTS and len(set(ids)) == EVENTS, f"{len(ids)} deliveries, {len(set(ids))} distinct"
    assert all(r.signed_with(SECRET_D) for r in got)
    sources = set()
    by_repo: dict[str, list[str]] = {}
    for r in got:
        ev = envelope_event(r)
        sources.add(ev["source"]["instanceID"])
        by_repo.setdefault(ev["target"]["repository"], []).append(ev["target"]["digest"])
    assert by_repo == pushed
    assert len(sources) == 2  # events were produced by both replicas
    hist = clients[0].req("GET", "/api/v1/webhooks/ci/deliveries", params={"limit": "1000"}).json()["deliveries"]
    assert len(hist) == EVENTS and {h["status"] for h in hist} == {"delivered"}
    assert all(h["attempts"] == 1 for h in hist)
    # the registry gauges work on PostgreSQL too (namespace = first path component, split_part)
    from prometheus_client.parser import text_string_to_metric_families

    deadline = time.monotonic() + 20
    while True:
        fams = {f.name: f for f in text_string_to_metric_families(clients[1].req("GET", "/metrics").text)}
        if "moorage_namespace_storage_bytes" in fams:
            break
        assert time.monotonic() < deadline
        time.sleep(0.5)
    sizes = {s.labels["namespace"]: s.value for s in fams["moorage_namespace_storage_bytes"].samples}
    blobs = {s.labels["namespace"]: s.value for s in fams["moorage_namespace_blobs"].samples}
    assert set(sizes) == {"team"} and sizes["team"] > 0 and blobs["team"] == 2 * EVENTS  # config + layer each
    assert {s.labels["status"] for s in fams["moorage_webhook_outbox"].samples} <= {"pending", "delivering", "dead"}


def test_claims_on_postgresql_are_exclusive_and_ordered(postgres_url: str) -> None:
    """The claim protocol itself on PostgreSQL: three concurrent claimers on two engines."""
    import asyncio

    from moorage.config import Settings
    from moorage.metadata.db import Database
    from moorage.metadata.events_store import EventsStore
    from tests.test_events_units import row

    url = Settings(database={"url": create_database(postgres_url, f"claims_{uuid.uuid4().hex[:10]}")}).database_url

    async def go() -> None:
        a, b = Database(url), Database(url)
        try:
            await a.migrate()
            s1, s2 = EventsStore(a), EventsStore(b)
            await s1.record([row("ci", f"r{i % 3}", i) for i in range(60)], [])
            seen: list[str] = []
            order: dict[str, list[int]] = {}

            async def worker(store: EventsStore, me: str) -> None:
                idle = 0
                while idle < 10:
                    batch = await store.claim(me, now=time.time(), lease=30, limit=4)
                    if not batch:
                        idle += 1
                        await asyncio.sleep(0.01)
                        continue
                    idle = 0
                    for d in batch:
                        seen.append(d.event_id)
                        order.setdefault(d.repository, []).append(int(d.event_id.split("-")[1]))
                        await store.delivered(d.id, me, 204)

            await asyncio.gather(worker(s1, "w1"), worker(s2, "w2"), worker(s2, "w3"))
            assert len(seen) == 60 and len(set(seen)) == 60
            assert all(ids == sorted(ids) for ids in order.values())
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())
