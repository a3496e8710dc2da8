"""Parity of the faces over the registry service's state-changing operations (issue 20).

The operations are introspected from the service (:meth:`RegistryService.operations`); each is
driven through every face that offers it -- ``/v2``, the admin API, the web UI, the CLI, the
pull-through cache, ``moorage import-distribution`` -- and every time the same record must
appear: the audit entry (actor, face, action, target) for audited operations, and the webhook
event (type, repository, digest/tag, face) whose id is the audit entry's ``event_id``.  An
operation without a row in :data:`FACES` fails :func:`test_every_operation_has_faces`.

Servers: the registry under test (auth off, one webhook endpoint for everything, a cached
namespace ``hub/``), an upstream Moorage for the cache, and Distribution's ``docker-registry``
as the import's source.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from moorage.registry.service import RegistryService
from tests.support.cli import run_moorage
from tests.support.fixtures import require_binary
from tests.support.http import Client, sha256
from tests.support.registry_proc import DISTRIBUTION_BIN, RegistryProcess, start_distribution, start_moorage
from tests.support.webhook_receiver import Receiver

SECRET = "parity-secret"
TIMEOUT = 60


@dataclass
class World:
    reg: RegistryProcess
    up: RegistryProcess
    rx: Receiver
    tmp: Path

    @property
    def c(self) -> Client:
        return Client(self.reg.url)


@dataclass(frozen=True)
class Expect:
    """What one driven operation must leave: kind/action of the event, where, and whether audited."""

    kind: str
    action: str
    repository: str
    digest: str | None = None
    tag: str | None = None
    audited: bool = True
    #: The actor the audit entry and event must name (None: the face's usual caller).
    actor: str | None = None


# ------------------------------------------------------------------------------- helpers
def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


def _ui_post(w: World, confirm_path: str, post_path: str, form: dict[str, str]) -> None:
    s = requests.Session()
    page = s.get(w.reg.url + confirm_path, timeout=TIMEOUT)
    assert page.status_code == 200, page.text[:500]
    r = s.post(w.reg.url + post_path, data={**form, "csrf": _csrf(page.text)}, allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code in (302, 303), r.text[:500]


def _cli(w: World, *args: str) -> None:
    env = {k: str(v) for k, v in (w.reg.env or {}).items() if v is not None}
    # the server's configuration (its webhooks): the CLI records its changes' events the same way
    cp = run_moorage(*args, "--data", w.reg.data_dir, "--config", str(w.tmp / "config.yml"), env=env, timeout=300)
    assert cp.returncode == 0, cp.stderr


def _push_blob_two_step(url: str, repo: str, data: bytes) -> str:
    """POST + PUT (Distribution ignores a monolithic ``POST ?digest=``)."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = requests.post(f"{url}/v2/{repo}/blobs/uploads/", timeout=TIMEOUT)
    assert r.status_code == 202, r.text
    loc = r.headers["Location"]
    loc = loc if loc.startswith("http") else url + loc
    r = requests.put(f"{loc}{'&' if '?' in loc else '?'}digest={digest}", data=data, timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    return digest


def _image(url: str, repo: str, tag: str) -> tuple[str, str, str]:
    """An image pushed with plain HTTP: (manifest digest, config digest, layer digest)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rnd": os.urandom(4).hex()}).encode()
    layer = os.urandom(3000)
    cd, ld = _push_blob_two_step(url, repo, config), _push_blob_two_step(url, repo, layer)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": len(layer)}],
        }
    ).encode()
    r = requests.put(
        f"{url}/v2/{repo}/manifests/{tag}",
        data=body,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 201, r.text
    return sha256(body), cd, ld


# ------------------------------------------------------------------------------- drivers
# Each returns what it must have caused; repositories are unique per driver.
def manifest_push_v2(w: World) -> list[Expect]:
    digest, _, _ = _image(w.reg.url, "par/push-v2", "t1")
    return [Expect("manifest", "push", "par/push-v2", digest, "t1")]


def manifest_push_proxy(w: World) -> list[Expect]:
    digest, _, _ = _image(w.up.url, "lib/pushproxy", "t1")
    r = requests.get(
        f"{w.reg.url}/v2/hub/lib/pushproxy/manifests/t1",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest
    return [Expect("manifest", "push", "hub/lib/pushproxy", digest, "t1")]


def manifest_push_import(w: World) -> list[Expect]:
    require_binary(DISTRIBUTION_BIN, "docker-registry")
    dist = start_distribution(w.tmp / "dist")
    try:
        digest, _, _ = _image(dist.url, "imp/app", "t1")
    finally:
        dist.stop()
    _cli(w, "import-distribution", str(dist.data_dir))
    return [Expect("manifest", "push", "imp/app", digest, "t1")]


def manifest_delete_v2(w: World) -> list[Expect]:
    digest, _, _ = _image(w.reg.url, "par/del-v2", "t1")
    _image(w.reg.url, "par/del-v2", "t2")
    assert w.c.req("DELETE", "/v2/par/del-v2/manifests/t2").status_code == 202
    assert w.c.req("DELETE", f"/v2/par/del-v2/manifests/{digest}").status_code == 202
    return [
        Expect("manifest", "push", "par/del-v2", digest, "t1"),
        Expect("tag", "delete", "par/del-v2", tag="t2"),
        Expect("manifest", "delete", "par/del-v2", digest),
    ]


def manifest_delete_ui(w: World) -> list[Expect]:
    digest, _, _ = _image(w.reg.url, "par/del-ui", "t1")
    _image(w.reg.url, "par/del-ui", "t2")
    base = "/ui/repo/par/del-ui/-/delete"
    _ui_post(w, f"{base}?tag=t2", base, {"tag": "t2"})
    _ui_post(w, f"{base}?digest={digest}", base, {"digest": digest})
    return [Expect("tag", "delete", "par/del-ui", tag="t2"), Expect("manifest", "delete", "par/del-ui", digest)]


def blob_push_v2(w: World) -> list[Expect]:
    digest = _push_blob_two_step(w.reg.url, "par/blob-v2", os.urandom(500))
    return [Expect("blob", "push", "par/blob-v2", digest, audited=False)]


def blob_push_proxy(w: World) -> list[Expect]:
    _, _, layer = _image(w.up.url, "lib/blobproxy", "t1")
    r = requests.get(f"{w.reg.url}/v2/hub/lib/blobproxy/blobs/{layer}", timeout=TIMEOUT)
    assert r.status_code == 200
    return [Expect("blob", "push", "hub/lib/blobproxy", layer, audited=False)]


def blob_mount_v2(w: World) -> list[Expect]:
    digest = _push_blob_two_step(w.reg.url, "par/mount-src", os.urandom(600))
    r = w.c.req("POST", "/v2/par/mount-dst/blobs/uploads/", params={"mount": digest, "from": "par/mount-src"})
    assert r.status_code == 201, r.text
    return [Expect("blob", "mount", "par/mount-dst", digest, audited=False)]


def blob_delete_v2(w: World) -> list[Expect]:
    digest = _push_blob_two_step(w.reg.url, "par/blobdel", os.urandom(700))
    assert w.c.req("DELETE", f"/v2/par/blobdel/blobs/{digest}").status_code == 202
    return [Expect("blob", "delete", "par/blobdel", digest)]


def repository_delete_api(w: World) -> list[Expect]:
    _image(w.reg.url, "par/repo-api", "t1")
    assert w.c.req("DELETE", "/api/v1/repositories/par/repo-api").status_code == 202
    return [Expect("repository", "delete", "par/repo-api")]


def repository_delete_ui(w: World) -> list[Expect]:
    _image(w.reg.url, "par/repo-ui", "t1")
    path = "/ui/repo/par/repo-ui/-/delete-repository"
    _ui_post(w, path, path, {"confirm": "par/repo-ui"})
    return [Expect("repository", "delete", "par/repo-ui")]


def repository_delete_cli(w: World) -> list[Expect]:
    _image(w.reg.url, "par/repo-cli", "t1")
    _cli(w, "repo", "delete", "par/repo-cli", "--yes")
    return [Expect("repository", "delete", "par/repo-cli")]


def tag_expire_cli(w: World) -> list[Expect]:
    """A retention run (``moorage retention apply``) deletes a tag: actor ``retention``."""
    _image(w.reg.url, "par/ret-cli", "old")
    time.sleep(0.05)  # (ranked by push time)
    _image(w.reg.url, "par/ret-cli", "new")
    _cli(w, "retention", "set", "par/ret-cli", "--keep-last", "1")
    _cli(w, "retention", "apply", "--repository", "par/ret-cli")
    return [Expect("tag", "delete", "par/ret-cli", tag="old", actor="retention")]


def manifest_collect_cli(w: World) -> list[Expect]:
    """``moorage gc --delete-untagged`` deletes an untagged manifest: actor ``gc``."""
    digest, _, _ = _image(w.reg.url, "par/gc-cli", "t1")
    assert w.c.req("DELETE", "/v2/par/gc-cli/manifests/t1").status_code == 202
    before = {r.event_id for r in w.rx.received("/all")}
    _cli(w, "gc", "--grace", "0", "--delete-untagged", "--no-retention", "--repository", "par/gc-cli")
    # The collector's blob deletes are storage housekeeping, not registry events.
    blob_events = [
        r.json() for r in w.rx.received("/all") if r.event_id not in before and r.json()["type"] == "dev.moorage.blob.deleted"
    ]
    assert blob_events == [], blob_events
    return [Expect("manifest", "delete", "par/gc-cli", digest, actor="gc")]


Driver = Callable[[World], list[Expect]]
#: operation -> face -> driver.  Every operation of the service needs a row.
FACES: dict[str, dict[str, Driver]] = {
    "manifest.push": {"v2": manifest_push_v2, "proxy": manifest_push_proxy, "import": manifest_push_import},
    "manifest.delete": {"v2": manifest_delete_v2, "ui": manifest_delete_ui},
    "blob.push": {"v2": blob_push_v2, "proxy": blob_push_proxy},
    "blob.mount": {"v2": blob_mount_v2},
    "blob.delete": {"v2": blob_delete_v2},
    "repository.delete": {"api": repository_delete_api, "ui": repository_delete_ui, "cli": repository_delete_cli},
    # the deletes of jobs (retention, the collector), started from the CLI here; started by the
    # scheduler (face ``job``): tests/test_gc_events.py
    "tag.expire": {"cli": tag_expire_cli},
    "manifest.collect": {"cli": manifest_collect_cli},
}
CASES = [(op, face) for op, faces in FACES.items() for face in faces]


def test_every_operation_has_faces() -> None:
    """A state-changing operation added to the service without a face row here fails."""
    assert set(RegistryService.operations()) == set(FACES)


# ------------------------------------------------------------------------------- servers
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("parity")
    rx = Receiver().start()
    up = start_moorage(tmp / "up")
    config = tmp / "config.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "webhooks": [
                    {
                        "name": "all",
                        "url": rx.url("/all"),
                        "secret": SECRET,
                        "format": "cloudevents",
                        "actions": ["push", "delete", "mount"],
                        "targets": ["manifest", "tag", "blob", "repository"],
                        "repositories": ["*"],
                    }
                ],
                "events": {"delivery_poll_interval": 0.2, "retry_backoff": 0.2, "retry_backoff_max": 1.0},
                "proxy": {"upstreams": [{"name": "up", "url": up.url, "namespace": "hub", "tag_ttl": 300}]},
            }
        )
    )
    reg = start_moorage(tmp / "srv", extra_args=["--config", str(config)])
    try:
        yield World(reg, up, rx, tmp)
    finally:
        reg.stop()
        up.stop()
        rx.close()


def _audit(w: World) -> list[dict[str, Any]]:
    r = requests.get(f"{w.reg.url}/api/v1/audit", params={"limit": 1000}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()["entries"]


_NOUN = {"manifest": "image", "tag": "tag", "blob": "blob", "repository": "repository"}
_PAST = {"push": "pushed", "delete": "deleted", "mount": "mounted"}


def _event_for(w: World, want: Expect, face: str, timeout: float = 30) -> list[dict[str, Any]]:
    """The delivered CloudEvents of ``want`` through ``face`` (waiting for at least one)."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for r in w.rx.received("/all"):
            doc = r.json()
            data = doc["data"]
            if (
                doc["type"] == f"dev.moorage.{_NOUN[want.kind]}.{_PAST[want.action]}"
                and data["repository"] == want.repository
                and data.get("digest") == want.digest
                and data.get("tag") == want.tag
                and data.get("face") == face
            ):
                assert r.event_id == doc["id"]
                found.append(doc)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


@pytest.mark.parametrize(("op", "face"), CASES, ids=[f"{op}-{face}" for op, face in CASES])
def test_operation_through_face_audited_and_sent(world: World, op: str, face: str) -> None:
    before = {e["id"] for e in _audit(world)}
    expected = FACES[op][face](world)
    new = [e for e in _audit(world) if e["id"] not in before]
    for want in expected:
        events = _event_for(world, want, face)
        assert events, f"no {want.kind} {want.action} event through {face} for {want}"
        assert len({e["id"] for e in events}) == 1, events  # one event (retries keep its id)
        action = "repository.delete" if want.kind == "repository" else want.action
        entries = [
            e
            for e in new
            if e["action"] == action
            and e["repository"] == want.repository
            and (e["detail"] or {}).get("kind") == want.kind
            and e["target"] == (want.digest or want.tag)
            and (e["detail"] or {}).get("tag") == want.tag  # (the import stores by digest, then tags)
        ]
        if not want.audited:
            assert entries == [], entries
            continue
        assert len(entries) == 1, (want, new)
        entry = entries[0]
        assert entry["detail"]["face"] == face
        assert entry["detail"]["event_id"] == events[0]["id"]
        assert entry["actor"] == events[0]["data"]["actor"]
        if want.actor is not None:
            assert entry["actor"] == want.actor, entry
        elif face == "cli":
            assert (entry["actor"] or "").startswith("cli:")
        if face == "import":
            assert entry["actor"] == "operator"
