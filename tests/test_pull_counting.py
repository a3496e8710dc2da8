"""Pulls are counted, not published (issue 20, "the hot path pays only for what is configured").

Every manifest GET is a pull.  The UI's activity chart and the pull audit only aggregate them,
so they take a :class:`~moorage.registry.events.Pull` synchronously and keep it in memory until
their background job writes it out; an event is built only for a listener that wants pulls
(a webhook listening to pulls).  What must not change:

* every pull counted exactly once in the UI's activity and audited exactly once (``all``) or
  once per (actor, repository, digest) and window (``aggregate``), under concurrent GETs,
  with each entry carrying its own request's details; HEADs and layer pulls are no manifest pulls;
* what is still in memory at shutdown is written then (the flush jobs are made to never run
  here, so only the shutdown flush can have written what the test finds);
* a webhook that wants pulls gets one delivery per pull, with the request's details;
* with nothing that wants the request's details, a pull does not read them (the first pull of
  an audit window does, for its entry).

In-process (aiohttp test server, filesystem + SQLite) except the webhook test (a real server).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from moorage.api import common
from moorage.composition import build_app
from moorage.config import EventsSettings, Settings
from moorage.events import setup as events_setup
from moorage.ui import activity
from tests.support.http import Client
from tests.support.registry_proc import start_moorage
from tests.support.webhook_receiver import Receiver

MT = "application/vnd.oci.image.manifest.v1+json"
CONCURRENT = 60


def _image() -> tuple[bytes, bytes, str]:
    blob = b"pull-counting layer"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MT,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": len(blob)},
            "layers": [],
        }
    ).encode()
    return blob, manifest, "sha256:" + hashlib.sha256(manifest).hexdigest()


async def _push(client: TestClient, repo: str, tag: str) -> tuple[str, str]:
    blob, manifest, mdigest = _image()
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    assert (await client.post(f"/v2/{repo}/blobs/uploads/?digest={digest}", data=blob)).status == 201
    r = await client.put(f"/v2/{repo}/manifests/{tag}", data=manifest, headers={"Content-Type": MT})
    assert r.status == 201
    return digest, mdigest


def _db_rows(data: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(data / "moorage.db") as db:
        return db.execute(sql).fetchall()


def _pulls_recorded(data: Path) -> tuple[int, list[dict[str, Any]]]:
    ui = _db_rows(data, "SELECT coalesce(sum(pulls), 0) FROM ui_activity WHERE repository = 'team/app'")[0][0]
    audit = [
        {"ua": ua, "ip": ip, "target": target, "dedupe": dedupe, **json.loads(detail)}
        for ua, ip, target, dedupe, detail in _db_rows(
            data, "SELECT user_agent, client_ip, target, dedupe_key, detail FROM audit_log WHERE action = 'pull'"
        )
    ]
    return ui, audit


@pytest.mark.parametrize("mode", ["all", "aggregate"])
async def test_concurrent_pulls_counted_and_audited_once_each_and_flushed_at_shutdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.delenv("MOORAGE_CONFIG", raising=False)
    # The periodic flushes never come within the test: what reaches the database is what the
    # shutdown wrote (drop that flush, and the counts below are 0).
    monkeypatch.setattr(events_setup, "AUDIT_FLUSH", 3600.0)
    monkeypatch.setattr(activity, "FLUSH_INTERVAL", 3600.0)
    settings = Settings(data=tmp_path, addr="127.0.0.1:5999", events=EventsSettings(audit_pulls=mode))
    app = build_app(settings)
    async with TestClient(TestServer(app)) as client:
        blob_digest, mdigest = await _push(client, "team/app", "1.0")

        async def get(i: int) -> None:
            ref = "1.0" if i % 2 else mdigest  # by tag and by digest: the same manifest
            r = await client.get(
                f"/v2/team/app/manifests/{ref}",
                headers={"Accept": MT, "User-Agent": f"puller/{i}", "X-Request-Id": f"req-{i}"},
            )
            assert r.status == 200 and r.headers["Docker-Content-Digest"] == mdigest
            await r.read()

        async def not_a_manifest_pull(i: int) -> None:
            r = await (client.head if i % 2 else client.get)(
                f"/v2/team/app/{'manifests/1.0' if i % 2 else 'blobs/' + blob_digest}"
            )
            assert r.status == 200
            await r.read()

        await asyncio.gather(*(get(i) for i in range(CONCURRENT)), *(not_a_manifest_pull(i) for i in range(10)))
        await asyncio.sleep(0.1)
        assert _pulls_recorded(tmp_path) == (0, [])  # all still in memory
    ui, audit = _pulls_recorded(tmp_path)  # the app has shut down
    assert ui == CONCURRENT
    for entry in audit:
        assert entry["target"] == mdigest and entry["digest"] == mdigest and entry["kind"] == "manifest"
        assert entry["ip"] == "127.0.0.1" and entry["media_type"] == MT
        assert entry["ua"] == f"puller/{entry['request_id'].removeprefix('req-')}"  # its own request's details
        assert entry.get("tag") == ("1.0" if int(entry["request_id"][4:]) % 2 else None)
    if mode == "all":
        assert sorted(e["request_id"] for e in audit) == sorted(f"req-{i}" for i in range(CONCURRENT))
        assert all(e["dedupe"] is None for e in audit)
    else:
        assert len(audit) == 1 and audit[0]["dedupe"].startswith(f"pull||team/app|{mdigest}|")


async def test_a_pull_reads_the_request_details_only_for_who_needs_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Default configuration (UI on, pulls audited per window, no webhook): the first pull
    builds the audit entry (it needs the address, User-Agent, request id); the other 19 read
    nothing of the request and build no event."""
    monkeypatch.delenv("MOORAGE_CONFIG", raising=False)
    built: list[str] = []
    real_actor = common.actor

    def counting_actor(request: Any) -> Any:
        built.append(request.headers.get("X-Request-Id", ""))
        return real_actor(request)

    monkeypatch.setattr(common, "actor", counting_actor)
    app = build_app(Settings(data=tmp_path, addr="127.0.0.1:5999"))
    async with TestClient(TestServer(app)) as client:
        await _push(client, "team/app", "1.0")
        built.clear()
        for i in range(20):
            r = await client.get("/v2/team/app/manifests/1.0", headers={"X-Request-Id": f"r{i}"})
            assert r.status == 200
        assert not app[common.EVENTS].wants("pull")
        assert built == ["r0"]


def test_webhook_wanting_pulls_gets_each_with_its_request(tmp_path: Path) -> None:
    """A real server: a webhook listening to pulls gets one delivery per manifest GET (not per
    HEAD or layer pull), each with its own request's details, while the audit log keeps one
    aggregated entry."""
    with Receiver() as rx:
        config = tmp_path / "moorage.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "webhooks": [
                        {
                            "name": "pulls",
                            "url": rx.url("/pulls"),
                            "secret": "pull-hook-secret",
                            "format": "distribution",
                            "actions": ["pull"],
                            "repositories": ["team/*"],
                        }
                    ],
                    "events": {"delivery_poll_interval": 0.2, "retry_backoff": 0.2},
                }
            )
        )
        reg = start_moorage(tmp_path / "srv", extra_args=["--config", str(config)])
        try:
            c = Client(reg.url)
            blob, manifest, mdigest = _image()
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            assert c.req("POST", f"/v2/team/app/blobs/uploads/?digest={digest}", data=blob).status_code == 201
            r = c.req("PUT", "/v2/team/app/manifests/1.0", data=manifest, headers={"Content-Type": MT})
            assert r.status_code == 201
            for i in range(3):
                r = c.req(
                    "GET", "/v2/team/app/manifests/1.0", headers={"User-Agent": f"hook-puller/{i}", "X-Request-Id": f"h{i}"}
                )
                assert r.status_code == 200
            assert c.req("HEAD", "/v2/team/app/manifests/1.0").status_code == 200
            got = rx.wait_for(3, "/pulls")
            evs = sorted((r.json()["events"][0] for r in got), key=lambda e: e["request"]["id"])
            assert [(e["action"], e["request"]["id"], e["request"]["useragent"]) for e in evs] == [
                ("pull", f"h{i}", f"hook-puller/{i}") for i in range(3)
            ]
            for e in evs:
                assert e["target"]["digest"] == mdigest and e["target"]["tag"] == "1.0"
                assert e["target"]["mediaType"] == MT and e["target"]["size"] == len(manifest)
                assert e["target"]["repository"] == "team/app" and e["request"]["method"] == "GET"
                assert e["request"]["addr"] == "127.0.0.1" and e["timestamp"].endswith("Z")
            assert len({e["id"] for e in evs}) == 3
        finally:
            reg.stop()
        assert len(rx.received("/pulls")) == 3  # nothing for the HEAD, the layer or the push
