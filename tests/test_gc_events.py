"""The deletes of jobs are registry changes (issue 20): audited and sent like any other delete.

Retention's tag deletes and the collector's manifest deletes go through the registry service
(``tag.expire``, ``manifest.collect``): each batch's transaction holds its deletes, their audit
entries and their webhook outbox rows, so an entry and an event exist exactly for what was
deleted -- also when the collector is killed (SIGKILL) between two batches or inside one.
Blob deletes are storage housekeeping and send nothing (as Distribution).  Real server, real
``moorage`` CLI processes, a webhook receiver; any backend of ``MOORAGE_TEST_BACKENDS``.

(On the old code the collector and retention deleted through their stores: no audit entry and
no event for any of these.)
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.gc_push import make_image, push_image
from tests.support.cli import run_moorage, start_moorage_cli, stop_group, wait_for_line
from tests.support.registry_proc import RegistryProcess, start_moorage
from tests.support.webhook_receiver import Receiver

TIMEOUT = 30
IMAGE_DELETED = "dev.moorage.image.deleted"
TAG_DELETED = "dev.moorage.tag.deleted"
BLOB_DELETED = "dev.moorage.blob.deleted"


@dataclass
class World:
    reg: RegistryProcess
    rx: Receiver
    config: Path
    env: dict[str, str]

    def cli(self, *words: str, args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> Any:
        """``moorage WORDS --data DIR --config CFG ARGS`` (the server's webhooks: the CLI
        records its changes' events the same way; the server delivers them)."""
        cp = run_moorage(
            *words, "--data", str(self.reg.data_dir), "--config", str(self.config), *args, env={**self.env, **(env or {})}
        )
        assert cp.returncode == 0, cp.stderr
        return cp

    def start_cli(self, *words: str, args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> Any:
        return start_moorage_cli(
            *words, "--data", str(self.reg.data_dir), "--config", str(self.config), *args, env={**self.env, **(env or {})}
        )


def _config(path: Path, rx: Receiver, extra: dict[str, Any] | None = None) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "webhooks": [
                    {
                        "name": "all",
                        "url": rx.url("/all"),
                        "secret": "gc-events-secret",
                        "format": "cloudevents",
                        "actions": ["delete"],
                        "targets": ["manifest", "tag", "blob"],
                        "repositories": ["*"],
                    }
                ],
                "events": {"delivery_poll_interval": 0.2, "retry_backoff": 0.2, "retry_backoff_max": 1.0},
                **(extra or {}),
            }
        )
    )
    return path


def _world(backend: Any, tmp_path: Path, extra: dict[str, Any] | None = None) -> Iterator[World]:
    _, make_env = backend
    env = make_env()
    rx = Receiver().start()
    config = _config(tmp_path / "config.yml", rx, extra)
    reg = start_moorage(tmp_path / "srv", env=env, extra_args=["--config", str(config)])
    reg.backend_env = env  # type: ignore[attr-defined]
    try:
        yield World(reg, rx, config, dict(env or {}))
    finally:
        reg.stop()
        rx.close()


@pytest.fixture()
def world(backend: Any, tmp_path: Path) -> Iterator[World]:
    yield from _world(backend, tmp_path)


def _events(w: World, kind: str) -> list[dict[str, Any]]:
    return [r.json() for r in w.rx.received("/all") if r.json()["type"] == kind]


def _wait_events(w: World, kind: str, n: int, timeout: float = 30) -> list[dict[str, Any]]:
    """At least ``n`` distinct events of ``kind`` (then a moment for duplicates to show)."""
    deadline = time.monotonic() + timeout
    while len({e["id"] for e in _events(w, kind)}) < n:
        assert time.monotonic() < deadline, (kind, n, [r.json() for r in w.rx.received()])
        time.sleep(0.1)
    time.sleep(1.0)
    return _events(w, kind)


def _audit(w: World) -> list[dict[str, Any]]:
    r = requests.get(f"{w.reg.url}/api/v1/audit", params={"action": "delete", "limit": 1000}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return list(r.json()["entries"])


def _one_record(w: World, events: list[dict[str, Any]], entries: list[dict[str, Any]], target: str) -> dict[str, Any]:
    """The single audit entry and the single event (by id: redeliveries keep it) of ``target``."""
    mine = [e for e in entries if e["target"] == target]
    assert len(mine) == 1, (target, entries)
    sent = [e for e in events if (e["data"].get("digest") or e["data"].get("tag")) == target]
    assert len({e["id"] for e in sent}) == 1, (target, sent)
    assert sent[0]["id"] == mine[0]["detail"]["event_id"]
    assert sent[0]["data"]["actor"] == mine[0]["actor"]
    assert sent[0]["data"]["face"] == mine[0]["detail"]["face"]
    return mine[0]


def test_retention_run_deletes_tag_with_one_audit_entry_and_event(world: World) -> None:
    url = world.reg.url
    push_image(url, "ret/app", "v1", make_image("ret-v1"))
    time.sleep(0.05)
    push_image(url, "ret/app", "v2", make_image("ret-v2"))
    world.cli("retention", "set", args=("ret/*", "--keep-last", "1"))

    world.cli("retention", "apply")
    events = _wait_events(world, TAG_DELETED, 1)
    entry = _one_record(world, events, _audit(world), "v1")
    assert entry["actor"] == "retention" and entry["repository"] == "ret/app"
    assert entry["detail"]["kind"] == "tag" and entry["detail"]["face"] == "cli"
    assert requests.get(f"{url}/v2/ret/app/manifests/v1", timeout=TIMEOUT).status_code == 404

    # A run with nothing to remove records nothing; `moorage gc` applies the policy the same way.
    world.cli("retention", "apply")
    time.sleep(0.5)
    assert len([e for e in _audit(world) if e["target"] == "v1"]) == 1
    time.sleep(0.05)
    push_image(url, "ret/app", "v3", make_image("ret-v3"))
    world.cli("gc", args=("--json",))
    events = _wait_events(world, TAG_DELETED, 2)
    entry = _one_record(world, events, _audit(world), "v2")
    assert entry["actor"] == "retention" and entry["detail"]["face"] == "cli"
    assert len({e["id"] for e in events}) == 2


def test_gc_delete_untagged_sends_manifest_delete_and_no_blob_event(world: World) -> None:
    url = world.reg.url
    loose = make_image("loose")
    kept = make_image("kept")
    push_image(url, "gc/app", loose.digest, loose)  # pushed by digest: untagged
    push_image(url, "gc/app", "v1", kept)

    summary = world.cli("gc", args=("--json", "--grace", "0", "--delete-untagged"))
    assert '"manifests_removed": 1' in summary.stdout, summary.stdout
    events = _wait_events(world, IMAGE_DELETED, 1)
    entry = _one_record(world, events, _audit(world), loose.digest)
    assert entry["actor"] == "gc" and entry["repository"] == "gc/app" and entry["detail"]["face"] == "cli"
    assert [e for e in events if e["data"]["digest"] == kept.digest] == []
    assert _events(world, BLOB_DELETED) == []  # its config and layer went too: no registry event
    assert requests.get(f"{url}/v2/gc/app/manifests/{loose.digest}", timeout=TIMEOUT).status_code == 404


@pytest.mark.parametrize(
    ("hook", "marker"),
    [
        ("MOORAGE_GC_TEST_PAUSE_AFTER_MANIFEST_BATCH", "pausing"),  # between two committed batches
        ("MOORAGE_TEST_PAUSE_BEFORE_COMMIT", "test pause before commit"),  # inside a batch's transaction
    ],
)
def test_kill_9_mid_collection_one_event_per_deleted_manifest(world: World, hook: str, marker: str) -> None:
    url = world.reg.url
    images = [make_image(f"kill-{i}") for i in range(6)]
    for img in images:
        push_image(url, "gc/kill", img.digest, img)
    gc = world.start_cli("gc", args=("--grace", "0", "--delete-untagged", "--batch-size", "2"), env={hook: "120"})
    try:
        wait_for_line(gc, marker)
    finally:
        stop_group(gc)  # SIGKILL

    def present(digest: str) -> bool:
        code = requests.head(f"{url}/v2/gc/kill/manifests/{digest}", timeout=TIMEOUT).status_code
        assert code in (200, 404), code
        return code == 200

    deleted = [img.digest for img in images if not present(img.digest)]
    assert len(deleted) == (2 if hook.endswith("MANIFEST_BATCH") else 0), deleted
    if deleted:
        events = _wait_events(world, IMAGE_DELETED, len(deleted))
    else:
        time.sleep(1.5)
        events = _events(world, IMAGE_DELETED)
    entries = _audit(world)
    for digest in deleted:
        assert _one_record(world, events, entries, digest)["actor"] == "gc"
    for img in images:
        if img.digest not in deleted:  # not deleted: nothing recorded, nothing sent
            assert [e for e in entries if e["target"] == img.digest] == []
            assert [e for e in events if e["data"]["digest"] == img.digest] == []

    # The next run deletes the rest: every manifest ends with exactly one entry and one event.
    world.cli("gc", args=("--grace", "0", "--delete-untagged"))
    events = _wait_events(world, IMAGE_DELETED, len(images))
    entries = _audit(world)
    for img in images:
        assert not present(img.digest)
        _one_record(world, events, entries, img.digest)


@pytest.fixture()
def scheduled(backend: Any, tmp_path: Path) -> Iterator[World]:
    yield from _world(backend, tmp_path, {"gc": {"interval": 1, "grace": 0, "delete_untagged": True}})


def test_scheduled_collection_records_its_deletes_as_job(scheduled: World) -> None:
    """The scheduler's collector (its own thread and loop) records through the server's bus."""
    w = scheduled
    url = w.reg.url
    push_image(url, "job/app", "old", make_image("job-old"))
    time.sleep(0.05)
    push_image(url, "job/app", "new", make_image("job-new"))
    loose = make_image("job-loose")
    push_image(url, "job/app", loose.digest, loose)
    w.cli("retention", "set", args=("job/*", "--keep-last", "1"))

    tags = _wait_events(w, TAG_DELETED, 1, timeout=60)
    manifests = _wait_events(w, IMAGE_DELETED, 2, timeout=60)  # the loose one, then the one "old" held
    entries = _audit(w)
    entry = _one_record(w, tags, entries, "old")
    assert (entry["actor"], entry["detail"]["face"]) == ("retention", "job")
    entry = _one_record(w, manifests, entries, loose.digest)
    assert (entry["actor"], entry["detail"]["face"]) == ("gc", "job")
    assert _events(w, BLOB_DELETED) == []


@pytest.fixture()
def graceless(backend: Any, tmp_path: Path) -> Iterator[World]:
    yield from _world(backend, tmp_path, {"gc": {"grace": 0}})


def test_gc_started_in_the_web_ui_records_its_deletes_with_face_ui(graceless: World) -> None:
    """The GC page's collection (its own thread, loop and engine) records through the server's
    bus: actor ``gc``, face ``ui``; the person is in the run's ``gc.run`` entry."""
    w = graceless
    loose = make_image("ui-loose")
    push_image(w.reg.url, "ui/app", loose.digest, loose)
    s = requests.Session()
    page = s.get(f"{w.reg.url}/ui/admin/gc", timeout=TIMEOUT)
    assert page.status_code == 200, page.text[:300]
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m, page.text[:500]
    form = {"csrf": m.group(1), "action": "run", "confirm": "yes", "delete_untagged": "1"}
    r = s.post(f"{w.reg.url}/ui/admin/gc", data=form, headers={"Origin": w.reg.url}, timeout=120)
    assert r.status_code == 200, r.text[:500]
    events = _wait_events(w, IMAGE_DELETED, 1)
    entry = _one_record(w, events, _audit(w), loose.digest)
    assert (entry["actor"], entry["detail"]["face"]) == ("gc", "ui")
