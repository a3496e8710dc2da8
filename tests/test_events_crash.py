"""Kill -9 between a change and the delivery of its event (issue 20).

The registry service writes a change's audit entry and webhook outbox row in the change's own
transaction.  Test hooks pause a manifest push at each step, the process is killed there with
SIGKILL and restarted:

* ``MOORAGE_TEST_PAUSE_BEFORE_COMMIT``: inside the transaction, after the change and its
  audit/outbox rows were written, before the commit -- after the restart nothing of it exists
  (no manifest, no audit entry, no delivery); the client's retry is then recorded exactly once;
* ``MOORAGE_TEST_PAUSE_AFTER_COMMIT``: committed, before the event is handed on for delivery
  (and with the delivery worker's poll slowed so it does not pick it up meanwhile) -- after the
  restart the manifest is there with exactly one audit entry, and its event is delivered at
  least once with the event id of the audit entry.

(On the old code the outbox row was written after the commit, by a listener: a kill after the
commit lost the event; and the audit entry of a push was only buffered in memory.)
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.support.http import Client, sha256
from tests.support.registry_proc import RegistryProcess, read_log, start_moorage
from tests.support.webhook_receiver import Receiver

PAUSE_BEFORE = "MOORAGE_TEST_PAUSE_BEFORE_COMMIT"
PAUSE_AFTER = "MOORAGE_TEST_PAUSE_AFTER_COMMIT"


def _config(path: Path, rx: Receiver, poll: float) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "webhooks": [
                    {
                        "name": "ci",
                        "url": rx.url("/hook"),
                        "secret": "s3cret-crash",
                        "actions": ["push", "delete"],
                        "repositories": ["*"],
                        "timeout": 2,
                    }
                ],
                "events": {"retry_backoff": 0.2, "retry_backoff_max": 1.0, "delivery_poll_interval": poll},
            }
        )
    )
    return path


def _wait_log(reg: RegistryProcess, needle: str, timeout: float = 30) -> None:
    assert reg.log_path is not None
    deadline = time.monotonic() + timeout
    while needle not in read_log(reg.log_path):
        assert time.monotonic() < deadline, reg.log(40)
        time.sleep(0.05)


def _kill(reg: RegistryProcess) -> None:
    assert reg.proc is not None
    os.killpg(reg.proc.pid, signal.SIGKILL)
    reg.proc.wait(10)
    reg.stop()


def _audit(url: str, digest: str) -> list[dict[str, Any]]:
    entries = requests.get(f"{url}/api/v1/audit", params={"action": "push", "limit": 500}, timeout=30).json()["entries"]
    return [e for e in entries if e["target"] == digest]


def _push_in_background(c: Client, repo: str, tag: str, body: bytes) -> threading.Thread:
    def put() -> None:
        try:
            c.push_manifest(repo, tag, body)
        except requests.RequestException:
            pass  # the server is killed under it

    t = threading.Thread(target=put, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("hook", [PAUSE_BEFORE, PAUSE_AFTER])
def test_kill_9_between_change_and_delivery(tmp_path: Path, hook: str) -> None:
    rx = Receiver().start()
    srv = tmp_path / "srv"
    # While paused the delivery worker must not find the row by polling: slow its poll.
    reg = start_moorage(srv, env={hook: "120"}, extra_args=["--config", str(_config(tmp_path / "slow.yaml", rx, 60.0))])
    try:
        c = Client(reg.url)
        layer = os.urandom(2048)
        config = b'{"architecture":"amd64","os":"linux"}'
        body = (
            b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
            b'"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},'
            b'"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}'
            % (c.push_blob("team/app", config).encode(), len(config), c.push_blob("team/app", layer).encode(), len(layer))
        )
        digest = sha256(body)
        _push_in_background(c, "team/app", "v1", body)
        _wait_log(reg, "test pause")
        _kill(reg)
        assert rx.received() == []

        reg = start_moorage(srv, extra_args=["--config", str(_config(tmp_path / "fast.yaml", rx, 0.2))])
        c = Client(reg.url)
        head = c.req("HEAD", "/v2/team/app/manifests/v1")
        if hook == PAUSE_BEFORE:
            # Not committed: nothing of the change, its audit entry or its event survives ...
            assert head.status_code == 404
            assert _audit(reg.url, digest) == []
            time.sleep(1.5)
            assert rx.received() == []
            # ... and the client's retry is recorded once.
            assert c.push_manifest("team/app", "v1", body).status_code == 201
        else:
            assert head.status_code == 200 and head.headers["Docker-Content-Digest"] == digest
        entries = _audit(reg.url, digest)
        assert len(entries) == 1, entries
        entry = entries[0]
        assert entry["repository"] == "team/app" and entry["detail"]["tag"] == "v1" and entry["detail"]["face"] == "v2"
        got = rx.wait_for(1, "/hook", timeout=60)
        time.sleep(1.5)  # a duplicate would come now (allowed: at least once, same id)
        ids = {r.event_id for r in rx.received("/hook")}
        assert ids == {entry["detail"]["event_id"]}, (ids, entry)
        assert got[0].json()["events"][0]["id"] == entry["detail"]["event_id"]
        assert got[0].json()["events"][0]["target"]["digest"] == digest
    finally:
        reg.stop()
        rx.close()
