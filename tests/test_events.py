"""Webhooks end to end: a receiver started by the test gets the registry's events.

* skopeo and docker-CLI pushes and HTTP deletes arrive in order, signed, in both formats (the
  CloudEvents ones parsed by the ``cloudevents`` SDK);
* a receiver that is down while events happen, across a registry restart: each event
  arrives once when it comes back;
* a receiver that always fails: dead-lettered after ``max_attempts``, visible (status,
  attempts, last error) in the admin API, and re-queued by it;
* a receiver that hangs: pushes are not slowed (push latency measured against a registry
  without webhooks, interleaved; figures printed, ratio bounded generously);
* hostile admin-API input gets 4xx.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.support.http import Client
from tests.support.ocilayout import build_image
from tests.support.registry_proc import RegistryProcess, start_moorage
from tests.support.webhook_receiver import Receiver

SECRET_D = "distribution-secret-\u00e9"  # non-ASCII: the HMAC key is the UTF-8 bytes
SECRET_C = "cloudevents-secret"
FAST_RETRIES = {"retry_backoff": 0.2, "retry_backoff_max": 1.0, "delivery_poll_interval": 0.2, "stats_interval": 1}


def write_config(path: Path, hooks: list[dict[str, Any]], **events: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"webhooks": hooks, "events": {**FAST_RETRIES, **events}}, allow_unicode=True))
    return path


def start(tmp: Path, config: Path, env: dict[str, str] | None = None) -> RegistryProcess:
    return start_moorage(tmp, env=env, extra_args=["--config", str(config)])


def two_hooks(rx: Receiver, **more: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": "ci",
            "url": rx.url("/distribution"),
            "secret": SECRET_D,
            "format": "distribution",
            "actions": ["push", "delete"],
            "repositories": ["team/*"],
            **more,
        },
        {
            "name": "ce",
            "url": rx.url("/cloudevents"),
            "secret": SECRET_C,
            "format": "cloudevents",
            "actions": ["push", "delete"],
            "repositories": ["team/*"],
            **more,
        },
    ]


def envelope_event(r: Any) -> dict[str, Any]:
    assert r.headers["Content-Type"] == "application/vnd.docker.distribution.events.v1+json"
    doc = r.json()
    assert set(doc) == {"events"} and len(doc["events"]) == 1
    ev = doc["events"][0]
    assert {"id", "timestamp", "action", "target", "request", "actor", "source"} <= set(ev)
    assert {"addr", "instanceID"} <= set(ev["source"])
    assert {"id", "addr", "host", "method", "useragent"} <= set(ev["request"])
    assert ev["id"] == r.event_id
    return ev


def cloud_event(r: Any) -> Any:
    from cloudevents.core.bindings.http import HTTPMessage, from_http_event

    ev = from_http_event(HTTPMessage(dict(r.headers), r.body))
    assert ev.get_specversion() == "1.0"
    assert ev.get_id() == r.event_id
    return ev


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    rx = Receiver().start()
    try:
        yield rx
    finally:
        rx.close()


# ---------------------------------------------------------------------------------------------
@pytest.mark.clients
def test_skopeo_push_and_deletes_arrive_in_order_signed_both_formats(receiver: Receiver, tmp_path: Path, skopeo) -> None:  # noqa: ANN001
    reg = start(tmp_path / "srv", write_config(tmp_path / "moorage.yaml", two_hooks(receiver)))
    try:
        images = [build_image(tmp_path / f"img{i}", f"v{i}", layers=[20_000 + i, 3000], seed=f"events-{i}") for i in (1, 2)]
        for i, img in enumerate(images, 1):
            skopeo.copy(img.oci_ref, f"docker://{reg.host}/team/app:v{i}")
        skopeo.copy(images[0].oci_ref, f"docker://{reg.host}/elsewhere/app:v1")  # matches no endpoint
        c = Client(reg.url)
        assert c.req("DELETE", "/v2/team/app/manifests/v1").status_code == 202  # tag delete
        assert c.req("DELETE", f"/v2/team/app/manifests/{images[1].digest}").status_code == 202  # manifest delete

        dist = receiver.wait_for(4, "/distribution")
        ce = receiver.wait_for(4, "/cloudevents")
        time.sleep(1.5)  # nothing more may come (blob pushes, the other repository)
        assert len(receiver.received("/distribution")) == 4 and len(receiver.received("/cloudevents")) == 4
        assert all(r.signed_with(SECRET_D) for r in dist)
        assert all(r.signed_with(SECRET_C) for r in ce)
        assert not any(r.signed_with(SECRET_C) for r in dist)

        evs = [envelope_event(r) for r in dist]
        assert [(e["action"], e["target"].get("tag"), e["target"].get("digest")) for e in evs] == [
            ("push", "v1", images[0].digest),
            ("push", "v2", images[1].digest),
            ("delete", "v1", None),
            ("delete", None, images[1].digest),
        ]
        for e in evs:
            assert e["target"]["repository"] == "team/app"
        push = evs[0]
        assert push["target"]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        assert push["target"]["size"] == push["target"]["length"] > 0
        assert push["target"]["url"].endswith(f"/v2/team/app/manifests/{images[0].digest}")
        assert push["request"]["method"] == "PUT" and push["request"]["useragent"]
        assert push["request"]["addr"].startswith("127.0.0.1")

        ces = [cloud_event(r) for r in ce]
        assert [e.get_type() for e in ces] == [
            "dev.moorage.image.pushed",
            "dev.moorage.image.pushed",
            "dev.moorage.tag.deleted",
            "dev.moorage.image.deleted",
        ]
        assert ces[0].get_data()["digest"] == images[0].digest and ces[0].get_data()["tag"] == "v1"
        assert ces[0].get_subject() == f"team/app:v1@{images[0].digest}"
        # the same event has the same id in both formats
        assert [r.event_id for r in dist] == [r.event_id for r in ce]
        assert len({r.event_id for r in dist}) == 4
    finally:
        reg.stop()


@pytest.mark.clients
def test_docker_cli_push_events(receiver: Receiver, tmp_path: Path, podman_socket, busybox_rootfs) -> None:  # noqa: ANN001
    reg = start(tmp_path / "srv", write_config(tmp_path / "moorage.yaml", two_hooks(receiver)))
    try:
        d = podman_socket.docker
        ref = f"{reg.localhost}/team/busybox:1.0"
        d("image", "import", str(busybox_rootfs), ref)
        out = d("image", "push", ref).stdout
        pushed = out.split("digest: ", 1)[1].split()[0]
        d("image", "tag", ref, f"{reg.localhost}/team/busybox:1.1")
        d("image", "push", f"{reg.localhost}/team/busybox:1.1")
        dist = receiver.wait_for(2, "/distribution")
        evs = [envelope_event(r) for r in dist]
        assert [(e["action"], e["target"]["tag"]) for e in evs] == [("push", "1.0"), ("push", "1.1")]
        assert all(e["target"]["digest"] == pushed for e in evs)
        assert all(r.signed_with(SECRET_D) for r in dist)
        ces = [cloud_event(r) for r in receiver.wait_for(2, "/cloudevents")]
        assert [e.get_data()["tag"] for e in ces] == ["1.0", "1.1"]
        d("image", "rm", ref, f"{reg.localhost}/team/busybox:1.1")
    finally:
        reg.stop()


# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_receiver_down_then_up_every_event_once_across_restart(tmp_path: Path, stop: str) -> None:
    rx = Receiver()  # not started: connection refused
    config = write_config(
        tmp_path / "moorage.yaml",
        [
            {
                "name": "ci",
                "url": rx.url("/distribution"),
                "secret": SECRET_D,
                "format": "distribution",
                "actions": ["push", "delete"],
                "repositories": ["*"],
                "max_attempts": 1000,
                "timeout": 2,
            }
        ],
    )
    reg = start(tmp_path / "srv", config)
    pushed: list[tuple[str, str]] = []
    try:
        c = Client(reg.url)
        for i in range(6):
            repo = f"team/r{i % 2}"
            digest, _ = c.push_image(repo, f"t{i}")
            pushed.append((repo, digest))
        # attempts are being made and failing
        deadline = time.monotonic() + 30
        while True:
            hist = c.req("GET", "/api/v1/webhooks/ci/deliveries").json()["deliveries"]
            if any(h["attempts"] >= 2 and h["last_error"] for h in hist):
                break
            assert time.monotonic() < deadline, hist
            time.sleep(0.2)
        assert not any(h["status"] == "delivered" for h in hist)
        if stop == "sigkill":  # a crash: rows claimed at that moment wait for their lease (2 + 30 s)
            os.killpg(reg.proc.pid, signal.SIGKILL)
            reg.proc.wait(10)
        reg.stop()
        rx.start()  # back up while the registry is down
        reg = start(tmp_path / "srv", config)
        c = Client(reg.url)
        digest, _ = c.push_image("team/r0", "after-restart")
        pushed.append(("team/r0", digest))
        got = rx.wait_for(7, "/distribution", timeout=90)
        time.sleep(2)  # any duplicate would come now
        got = rx.received("/distribution")
        ids = [r.event_id for r in got]
        assert len(ids) == len(set(ids)) == 7, ids
        by_repo: dict[str, list[str]] = {}
        for r in got:
            ev = envelope_event(r)
            by_repo.setdefault(ev["target"]["repository"], []).append(ev["target"]["digest"])
        for repo in ("team/r0", "team/r1"):
            assert by_repo[repo] == [d for rp, d in pushed if rp == repo], "out of order for " + repo
        hist = c.req("GET", "/api/v1/webhooks/ci/deliveries").json()["deliveries"]
        assert {h["status"] for h in hist} == {"delivered"} and len(hist) == 7
    finally:
        reg.stop()
        rx.close()


def test_two_sqlite_workers_deliver_each_event_once(receiver: Receiver, tmp_path: Path) -> None:
    """``--workers 2`` on one SQLite file: both processes run a delivery worker; the atomic
    claim UPDATE gives each event to one of them."""
    config = write_config(
        tmp_path / "moorage.yaml",
        [{"name": "ci", "url": receiver.url(), "secret": SECRET_D, "actions": ["push"], "repositories": ["*"]}],
        delivery_poll_interval=0.05,
    )
    reg = start_moorage(tmp_path / "srv", extra_args=["--config", str(config), "--workers", "2"])
    try:
        pushed: dict[str, list[str]] = {}
        for i in range(24):
            repo = f"w/r{i % 3}"
            c = Client(reg.url)  # a new connection each time: SO_REUSEPORT spreads them over both workers
            pushed.setdefault(repo, []).append(c.push_image(repo, f"t{i}")[0])
            c.s.close()
        receiver.wait_for(24, timeout=90)
        time.sleep(2)
        got = receiver.received()
        assert len(got) == 24 and len({r.event_id for r in got}) == 24
        by_repo: dict[str, list[str]] = {}
        instances = set()
        for r in got:
            ev = envelope_event(r)
            instances.add(ev["source"]["instanceID"])
            by_repo.setdefault(ev["target"]["repository"], []).append(ev["target"]["digest"])
        assert by_repo == pushed
        assert len(instances) == 2  # both worker processes took pushes (SO_REUSEPORT spreads connections)
    finally:
        reg.stop()


def test_failing_receiver_dead_letter_history_and_retry(receiver: Receiver, tmp_path: Path) -> None:
    receiver.mode = "fail"
    config = write_config(
        tmp_path / "moorage.yaml",
        [
            {
                "name": "ci",
                "url": receiver.url(),
                "secret": SECRET_D,
                "actions": ["push"],
                "repositories": ["*"],
                "max_attempts": 3,
                "timeout": 2,
            }
        ],
    )
    reg = start(tmp_path / "srv", config)
    try:
        c = Client(reg.url)
        c.push_image("a/b", "x")
        c.push_image("a/b", "y")
        deadline = time.monotonic() + 40
        while True:
            hist = c.req("GET", "/api/v1/webhooks/ci/deliveries").json()["deliveries"]
            if len(hist) == 2 and all(h["status"] == "dead" for h in hist):
                break
            assert time.monotonic() < deadline, hist
            time.sleep(0.3)
        assert all(h["attempts"] == 3 and h["last_error"] == "HTTP 500" and h["last_status"] == 500 for h in hist)
        assert len(receiver.received()) == 6  # 3 attempts each, the second only after the first died
        first = sorted(receiver.received(), key=lambda r: r.at)[:3]
        assert len({r.event_id for r in first}) == 1  # in order: event 1's attempts before event 2's
        dead = c.req("GET", "/api/v1/webhooks/ci/deliveries", params={"status": "dead"}).json()["deliveries"]
        assert len(dead) == 2
        # operator re-queues one after fixing the receiver
        receiver.mode = "ok"
        r = c.req("POST", f"/api/v1/webhooks/ci/deliveries/{dead[0]['id']}/retry")
        assert r.status_code == 202, r.text
        receiver.wait_for(7)
        assert c.req("POST", f"/api/v1/webhooks/ci/deliveries/{dead[0]['id']}/retry").status_code == 404
        metrics = c.req("GET", "/metrics").text
        assert 'moorage_webhook_deliveries_total{endpoint="ci",outcome="dead"} 2.0' in metrics
        assert 'moorage_webhook_deliveries_total{endpoint="ci",outcome="delivered"} 1.0' in metrics
        # the same from the shell: list, history, retry (while the server runs)
        listed = [json.loads(line) for line in moorage_cli(reg, config, "webhooks", "list", "--json").splitlines()]
        assert [(w["name"], w["dead"], w["origin"]) for w in listed] == [("ci", 1, "config")]
        shown = [
            json.loads(line)
            for line in moorage_cli(reg, config, "webhooks", "deliveries", "ci", "--status", "dead", "--json").splitlines()
        ]
        assert [d["id"] for d in shown] == [dead[1]["id"]] and shown[0]["last_error"] == "HTTP 500"
        moorage_cli(reg, config, "webhooks", "retry", "ci", str(dead[1]["id"]))
        receiver.wait_for(8)
        assert [
            d["action"]
            for d in json.loads(
                "[" + ",".join(moorage_cli(reg, config, "audit", "--json", "--action", "webhook.*").splitlines()) + "]"
            )
        ] == ["webhook.retry", "webhook.retry"]
    finally:
        reg.stop()


def moorage_cli(reg: RegistryProcess, config: Path, *args: str) -> str:
    from tests.support.cli import run_moorage

    cp = run_moorage(*args, "--config", config, "--data", reg.data_dir, timeout=60)
    assert cp.returncode == 0, cp.stderr[-2000:]
    return cp.stdout


def test_hanging_receiver_does_not_slow_pushes(receiver: Receiver, tmp_path: Path) -> None:
    receiver.mode = "hang"
    hooked = start(
        tmp_path / "hooked",
        write_config(
            tmp_path / "hooked.yaml",
            [
                {
                    "name": "slow",
                    "url": receiver.url(),
                    "secret": SECRET_D,
                    "actions": ["push"],
                    "repositories": ["*"],
                    "timeout": 30,
                }
            ],
        ),
    )
    plain = start(tmp_path / "plain", write_config(tmp_path / "plain.yaml", []))
    try:
        clients = {"hooked": Client(hooked.url), "plain": Client(plain.url)}
        times: dict[str, list[float]] = {"hooked": [], "plain": []}
        layer = b"x" * 4096
        for c in clients.values():  # warm up
            c.push_image("warm/up", "w", layers=[layer])
        for i in range(20):
            for name, c in clients.items():  # interleaved: both see the same machine load
                blob_digest = c.push_blob("bench/app", layer + str(i).encode())
                doc = {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {
                        "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": blob_digest,
                        "size": len(layer) + len(str(i)),
                    },
                    "layers": [],
                }
                t0 = time.perf_counter()
                r = c.push_manifest("bench/app", f"t{i}", json.dumps(doc).encode())
                times[name].append(time.perf_counter() - t0)
                assert r.status_code == 201
        assert receiver.hanging >= 1  # the receiver really was holding a delivery meanwhile
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"\nmanifest PUT median: plain {med['plain'] * 1000:.1f} ms, with hanging webhook "
            f"{med['hooked'] * 1000:.1f} ms (ratio {med['hooked'] / med['plain']:.2f}); "
            f"p90 plain {sorted(times['plain'])[17] * 1000:.1f} ms, hooked {sorted(times['hooked'])[17] * 1000:.1f} ms"
        )
        # Generous: the outbox insert is one small write; a blocked delivery would add the 30 s timeout.
        assert med["hooked"] < 3 * med["plain"] + 0.05
    finally:
        receiver.close()
        hooked.stop()
        plain.stop()


# ---------------------------------------------------------------------------------------------
def test_admin_api_rejects_hostile_webhook_input(tmp_path: Path) -> None:
    reg = start(
        tmp_path / "srv",
        write_config(
            tmp_path / "moorage.yaml", [{"name": "ci", "url": "http://127.0.0.1:9/x", "secret": "s", "repositories": ["*"]}]
        ),
    )
    try:
        c = Client(reg.url)
        ok = {"name": "mine", "url": "http://127.0.0.1:9/hook", "repositories": ["team/*"]}
        bad_bodies = [
            b"not json",
            b"[1,2]",
            json.dumps({**ok, "url": "ftp://x"}).encode(),
            json.dumps({**ok, "url": "http://a b"}).encode(),
            json.dumps({**ok, "repositories": ["Team/*"]}).encode(),
            json.dumps({**ok, "repositories": []}).encode(),
            json.dumps({**ok, "format": "xml"}).encode(),
            json.dumps({**ok, "actions": ["explode"]}).encode(),
            json.dumps({**ok, "headers": {"a": "b"}}).encode(),
            json.dumps({**ok, "name": "../../etc"}).encode(),
            json.dumps({**ok, "name": "x" * 100}).encode(),
            json.dumps({**ok, "timeout": -1}).encode(),
            json.dumps({**ok, "max_attempts": 10**12}).encode(),
            json.dumps({**ok, "name": "ci"}).encode(),  # defined in the config file
            json.dumps({**ok, "repositories": ["a" + "*a" * 200]}).encode(),
            json.dumps({**ok, "name": "\u0130\u212a"}).encode(),
        ]
        for body in bad_bodies:
            r = c.req("POST", "/api/v1/webhooks", data=body, headers={"Content-Type": "application/json"})
            assert 400 <= r.status_code < 500, (body[:80], r.status_code, r.text)
        r = c.req("POST", "/api/v1/webhooks", data=b"{" + b" " * (70 * 1024) + b"}")
        assert r.status_code == 413
        r = c.req("POST", "/api/v1/webhooks", json=ok)
        assert r.status_code == 201, r.text
        assert len(r.json()["secret"]) >= 32  # generated, shown once
        listed = c.req("GET", "/api/v1/webhooks").json()["webhooks"]
        assert {w["name"] for w in listed} == {"ci", "mine"}
        assert all("secret" not in w for w in listed)
        assert c.req("POST", "/api/v1/webhooks", json=ok).status_code == 400  # exists
        assert c.req("DELETE", "/api/v1/webhooks/ci").status_code == 400  # config endpoint
        for path in (
            "/api/v1/webhooks/nope",
            "/api/v1/webhooks/mine/deliveries/abc/retry",
            "/api/v1/webhooks/mine/deliveries/99999999999999999999999/retry",
        ):
            method = "POST" if path.endswith("retry") else "GET"
            assert c.req(method, path).status_code == 404
        for q in ({"limit": "0"}, {"limit": "-1"}, {"limit": "x"}, {"status": "weird"}, {"before": "1e9"}):
            assert c.req("GET", "/api/v1/webhooks/mine/deliveries", params=q).status_code == 400, q
        for q in ({"since": "yesterday"}, {"limit": "100000"}, {"until": "\u0000"}, {"actor": "a" * 300}):
            assert c.req("GET", "/api/v1/audit", params=q).status_code == 400, q
        # the same name created concurrently: exactly one wins
        from concurrent.futures import ThreadPoolExecutor

        race = {**ok, "name": "raced"}
        with ThreadPoolExecutor(8) as pool:
            codes = list(
                pool.map(lambda _: requests.post(reg.url + "/api/v1/webhooks", json=race, timeout=30).status_code, range(8))
            )
        assert sorted(codes) == [201] + [400] * 7, codes
        assert c.req("DELETE", "/api/v1/webhooks/mine").status_code == 204
        assert c.req("DELETE", "/api/v1/webhooks/mine").status_code == 404
        # the server is still healthy
        assert requests.get(reg.url + "/v2/", timeout=10).status_code == 200
    finally:
        reg.stop()
