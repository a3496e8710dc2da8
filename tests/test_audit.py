"""The audit log and the operational metrics, on a registry with token auth.

A scripted session (admin API changes, a CLI change, pushes/pulls/deletes by a user, failed
logins, a GC run) shows up in ``moorage audit --json`` with the right actor, action,
repository and client address; ``/api/v1/audit`` shows administrators everything, namespace
administrators their namespace (plus their own actions), anybody else only their own entries;
``/metrics`` parses with prometheus-client's parser and carries the registry gauges.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.authsrv import ADMIN_PASSWORD, bearer, cli, get_token, start_auth_server
from tests.support.http import Client
from tests.support.registry_proc import RegistryProcess

ADMIN = ("admin", ADMIN_PASSWORD)
PW = {"bob": "bob-Pw-123456", "carol": "carol-Pw-123456", "dave": "dave-Pw-123456"}


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    proc = start_auth_server(
        tmp_path_factory.mktemp("audit") / "srv",
        None,
        MOORAGE_EVENTS__STATS_INTERVAL="1",
        MOORAGE_EVENTS__AUDIT_PULLS="aggregate",
        # namespace administrators make webhooks here (off by default), to a receiver on loopback
        MOORAGE_EVENTS__WEBHOOKS__NAMESPACE_ADMINS="true",
        MOORAGE_EVENTS__WEBHOOKS__ALLOWED_NETWORKS='["127.0.0.0/8"]',
    )
    try:
        yield proc
    finally:
        proc.stop()


def api(reg: RegistryProcess, method: str, path: str, auth: tuple[str, str] | None = ADMIN, **kw: Any) -> requests.Response:
    return requests.request(method, reg.url + path, auth=auth, timeout=30, **kw)


def as_user(reg: RegistryProcess, user: str, repo: str, actions: str = "pull,push,delete") -> Client:
    c = Client(reg.url)
    c.s.headers.update(bearer(get_token(reg, [f"repository:{repo}:{actions}"], auth=(user, PW[user]))))
    return c


def audit_lines(reg: RegistryProcess, *args: str) -> list[dict[str, Any]]:
    out = cli(reg, "audit", "--json", "--limit", "10000", *args).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def wait_audit(reg: RegistryProcess, pred: Any, *args: str, timeout: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = audit_lines(reg, *args)
        if pred(rows):
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(0.5)


@pytest.fixture(scope="module")
def session(reg: RegistryProcess) -> dict[str, Any]:
    """The scripted session; returns what it did."""
    for name in ("bob", "dave"):
        assert api(reg, "POST", "/api/v1/users", json={"name": name, "password": PW[name]}).status_code == 201
    assert (
        api(reg, "POST", "/api/v1/grants", json={"user": "bob", "pattern": "team/*", "actions": "pull,push,delete"}).status_code
        == 201
    )
    assert api(reg, "POST", "/api/v1/grants", json={"user": "dave", "pattern": "team/*", "actions": "admin"}).status_code == 201
    cli(reg, "user", "add", "carol", "--password-stdin", input=PW["carol"] + "\n")
    bob = as_user(reg, "bob", "team/app")
    digest, _ = bob.push_image("team/app", "v1")
    for _ in range(3):  # aggregated: one pull entry
        assert bob.req("GET", "/v2/team/app/manifests/v1").status_code == 200
    assert bob.req("DELETE", "/v2/team/app/manifests/v1").status_code == 202
    admin = Client(reg.url)
    admin.s.headers.update(bearer(get_token(reg, ["repository:other/x:pull,push"], auth=ADMIN)))
    admin.push_image("other/x", "1")
    assert (
        requests.get(reg.url + "/auth/token", params={"service": "moorage"}, auth=("mallory", "guess"), timeout=30).status_code
        == 401
    )
    assert (
        requests.get(reg.url + "/auth/token", params={"service": "moorage"}, auth=("bob", "wrong"), timeout=30).status_code == 401
    )
    return {"digest": digest}


def test_scripted_session_in_moorage_audit_json(reg: RegistryProcess, session: dict[str, Any]) -> None:
    rows = wait_audit(
        reg, lambda rs: any(r["action"] == "pull" for r in rs) and sum(r["action"] == "login.failed" for r in rs) >= 2
    )
    for r in rows:
        assert {"time", "actor", "action", "repository", "client_ip"} <= set(r)

    def find(**kw: Any) -> list[dict[str, Any]]:
        return [r for r in rows if all(r.get(k) == v for k, v in kw.items())]

    assert find(action="user.add", actor="admin", target="bob", client_ip="127.0.0.1")
    assert find(action="grant.add", actor="admin", target="team/*")
    assert [r for r in find(action="user.add", target="carol") if r["actor"].startswith("cli:")]
    push = find(action="push", actor="bob", repository="team/app")
    assert len(push) == 1 and push[0]["target"] == session["digest"] and push[0]["client_ip"] == "127.0.0.1"
    assert push[0]["detail"]["tag"] == "v1"
    assert len(find(action="pull", actor="bob", repository="team/app")) == 1  # 3 pulls, one per window
    assert find(action="delete", actor="bob", repository="team/app", target="v1")
    assert find(action="push", actor="admin", repository="other/x")
    assert find(action="login.failed", actor="mallory", client_ip="127.0.0.1")
    assert find(action="login.failed", actor="bob")
    assert find(action="login", actor="bob")
    for r in rows:  # no secret ever lands in the log
        text = json.dumps(r)
        assert all(pw not in text for pw in [*PW.values(), ADMIN_PASSWORD, "guess", "wrong"])
    # filters
    only = audit_lines(reg, "--actor", "bob", "--action", "push")
    assert [(r["actor"], r["action"]) for r in only] == [("bob", "push")]
    team = audit_lines(reg, "--repository", "team/*")
    assert team and all(r["repository"].startswith("team/") for r in team)
    assert audit_lines(reg, "--action", "grant.*", "--since", "1h") and not audit_lines(reg, "--since", "2099-01-01")
    times = [r["timestamp"] for r in rows]
    assert times == sorted(times)  # oldest first
    bad = cli(reg, "audit", "--since", "yesterday-ish", check=False)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


def test_audit_api_who_sees_what(reg: RegistryProcess, session: dict[str, Any]) -> None:
    wait_audit(reg, lambda rs: any(r["action"] == "pull" for r in rs))
    everything = api(reg, "GET", "/api/v1/audit", params={"limit": "1000"}).json()["entries"]
    assert {e["actor"] for e in everything} >= {"admin", "bob", "mallory"}
    # a user without admin rights: their own entries only
    carol = api(reg, "GET", "/api/v1/audit", auth=("carol", PW["carol"])).json()["entries"]
    assert all(e["actor"] == "carol" for e in carol)
    bob = api(reg, "GET", "/api/v1/audit", auth=("bob", PW["bob"]), params={"limit": "1000"}).json()["entries"]
    assert bob and all(e["actor"] == "bob" for e in bob)
    snoop = api(reg, "GET", "/api/v1/audit", auth=("bob", PW["bob"]), params={"actor": "admin"}).json()["entries"]
    assert snoop == []
    # a namespace admin (admin on team/*): team's entries and their own, nothing else
    dave = api(reg, "GET", "/api/v1/audit", auth=("dave", PW["dave"]), params={"limit": "1000"}).json()["entries"]
    assert any(e["actor"] == "bob" and e["repository"] == "team/app" for e in dave)
    assert all((e["repository"] or "").startswith("team/") or e["actor"] == "dave" for e in dave)
    assert not any(e["repository"] == "other/x" or e["actor"] == "mallory" for e in dave)
    # nobody: 401; a bad password: 401
    assert api(reg, "GET", "/api/v1/audit", auth=None).status_code == 401
    assert api(reg, "GET", "/api/v1/audit", auth=("carol", "nope")).status_code == 401
    # a scoped access token administers nothing, even the admin's
    tok = api(reg, "POST", "/api/v1/me/tokens", json={"scope": ["other/*:pull"]}).json()["token"]
    scoped = api(reg, "GET", "/api/v1/audit", auth=("admin", tok)).json()["entries"]
    assert all(e["actor"] == "admin" for e in scoped)


def test_webhooks_api_namespace_admins(reg: RegistryProcess, session: dict[str, Any]) -> None:
    hook = {"name": "team-ci", "url": "http://127.0.0.1:9/hook", "secret": "s" * 20, "repositories": ["team/*"]}
    # carol administers only her own namespace (carol/*): she sees no other webhook, makes none for team
    assert api(reg, "GET", "/api/v1/webhooks", auth=("carol", PW["carol"])).json()["webhooks"] == []
    assert api(reg, "POST", "/api/v1/webhooks", auth=("carol", PW["carol"]), json=hook).status_code == 403
    assert (
        api(
            reg,
            "POST",
            "/api/v1/webhooks",
            auth=("dave", PW["dave"]),
            json={**hook, "name": "steal", "repositories": ["team/*", "other/*"]},
        ).status_code
        == 403
    )
    r = api(reg, "POST", "/api/v1/webhooks", auth=("dave", PW["dave"]), json=hook)
    assert r.status_code == 201, r.text
    assert r.json()["namespace"] == "team" and "secret" not in r.json()
    admin_hook = {**hook, "name": "global", "repositories": ["*"], "max_attempts": 1, "timeout": 1}
    assert api(reg, "POST", "/api/v1/webhooks", json=admin_hook).status_code == 201
    # an event for "global" (its receiver is down: dead after one attempt)
    admin = Client(reg.url)
    admin.s.headers.update(bearer(get_token(reg, ["repository:other/y:pull,push"], auth=ADMIN)))
    admin.push_image("other/y", "1")
    deadline = time.monotonic() + 30
    while True:
        dead = api(reg, "GET", "/api/v1/webhooks/global/deliveries", params={"status": "dead"}).json()["deliveries"]
        if dead:
            break
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert dead[0]["last_error"] and dead[0]["attempts"] == 1
    # dave can't see or re-queue it, not even through his own webhook's path
    assert (
        api(reg, "POST", f"/api/v1/webhooks/team-ci/deliveries/{dead[0]['id']}/retry", auth=("dave", PW["dave"])).status_code
        == 404
    )
    assert (
        api(reg, "POST", f"/api/v1/webhooks/global/deliveries/{dead[0]['id']}/retry", auth=("dave", PW["dave"])).status_code
        == 404
    )
    assert api(reg, "GET", "/api/v1/webhooks/team-ci/deliveries", auth=("dave", PW["dave"])).json()["deliveries"] == []
    dave_sees = {w["name"] for w in api(reg, "GET", "/api/v1/webhooks", auth=("dave", PW["dave"])).json()["webhooks"]}
    assert dave_sees == {"team-ci"}
    assert api(reg, "GET", "/api/v1/webhooks", auth=("carol", PW["carol"])).json()["webhooks"] == []
    assert api(reg, "GET", "/api/v1/webhooks/team-ci", auth=("carol", PW["carol"])).status_code == 404
    assert api(reg, "GET", "/api/v1/webhooks/team-ci/deliveries", auth=("carol", PW["carol"])).status_code == 404
    assert api(reg, "GET", "/api/v1/webhooks/global", auth=("dave", PW["dave"])).status_code == 404
    assert api(reg, "DELETE", "/api/v1/webhooks/global", auth=("dave", PW["dave"])).status_code == 404
    assert {w["name"] for w in api(reg, "GET", "/api/v1/webhooks").json()["webhooks"]} >= {"team-ci", "global"}
    assert api(reg, "GET", "/api/v1/webhooks/team-ci/deliveries", auth=("dave", PW["dave"])).status_code == 200
    assert api(reg, "DELETE", "/api/v1/webhooks/team-ci", auth=("dave", PW["dave"])).status_code == 204
    assert api(reg, "DELETE", "/api/v1/webhooks/global").status_code == 204
    rows = wait_audit(reg, lambda rs: sum(r["action"] == "webhook.delete" for r in rs) >= 2, "--action", "webhook.*")
    assert {(r["actor"], r["action"]) for r in rows} >= {
        ("dave", "webhook.add"),
        ("admin", "webhook.add"),
        ("dave", "webhook.delete"),
    }


def test_metrics_parse_with_prometheus_client(reg: RegistryProcess, session: dict[str, Any], tmp_path: Path) -> None:
    admin = Client(reg.url)
    admin.s.headers.update(bearer(get_token(reg, ["repository:team/pending:pull,push"], auth=ADMIN)))
    solo = Client(reg.url)
    solo.s.headers.update(bearer(get_token(reg, ["repository:solo/app:pull,push", "repository:solo/two:pull,push"], auth=ADMIN)))
    layers = [b"a" * 1000, b"b" * 2000]
    config = b'{"architecture":"amd64","os":"linux"}'
    solo.push_image("solo/app", "1", layers=layers, config=config)
    solo.push_image("solo/two", "1", layers=layers[:1], config=config)  # shared blobs count once
    r = admin.req("POST", "/v2/team/pending/blobs/uploads/")  # an upload left open
    assert r.status_code == 202
    cli(reg, "gc", "--grace", "3600", "--json", "-q")

    def scrape() -> dict[str, list[Any]]:
        resp = admin.req("GET", "/metrics")
        assert resp.status_code == 200
        fams: dict[str, list[Any]] = {}
        for fam in text_string_to_metric_families(resp.text):
            fams.setdefault(fam.name, []).extend(fam.samples)
        return fams

    deadline = time.monotonic() + 20
    while True:
        fams = scrape()
        runs = [s.value for s in fams.get("moorage_gc_runs", [])]
        uploads = [s.value for s in fams.get("moorage_uploads_in_progress", [])]
        if runs and runs[0] >= 1 and uploads and uploads[0] >= 1:
            break
        assert time.monotonic() < deadline, sorted(fams)
        time.sleep(0.5)
    storage = {s.labels["namespace"]: s.value for s in fams["moorage_namespace_storage_bytes"]}
    blobs = {s.labels["namespace"]: s.value for s in fams["moorage_namespace_blobs"]}
    assert storage["team"] > 0 and storage["other"] > 0
    assert blobs["solo"] == 3 and storage["solo"] == 3000 + len(config)
    assert {s.labels["reason"] for s in fams["moorage_login_failures"]} >= {"invalid_credentials"}
    assert sum(s.value for s in fams["moorage_login_failures"] if s.name.endswith("_total")) >= 2
    assert "moorage_gc_freed_bytes" in fams and "moorage_webhook_oldest_pending_age_seconds" in fams
    assert "moorage_http_requests" in fams
    # every metric the Grafana dashboard plots exists
    import re

    dashboard = (Path(__file__).resolve().parents[1] / "deploy" / "grafana-dashboard.json").read_text()
    plotted = {re.sub(r"_(total|bucket|count|sum)$", "", m) for m in re.findall(r"moorage_[a-z_]+", dashboard)}
    assert plotted and plotted <= set(fams), plotted - set(fams)
    # the GC run is in the audit log too
    wait_audit(reg, lambda rs: any(r["action"] == "gc.run" for r in rs), "--action", "gc.run")


def test_htpasswd_mode_webhooks_api_authenticated_and_audited(tmp_path: Path) -> None:
    from tests.support.registry_proc import write_htpasswd

    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"alice": "alice-Pw-1"})
    proc = start_auth_server(tmp_path / "srv", None, mode="htpasswd", MOORAGE_AUTH__HTPASSWD__PATH=str(htpasswd))
    try:
        hook = {"name": "h", "url": "http://127.0.0.1:9/x", "secret": "s" * 16, "repositories": ["*"]}
        assert api(proc, "GET", "/api/v1/webhooks", auth=None).status_code == 401
        assert api(proc, "POST", "/api/v1/webhooks", auth=("alice", "wrong"), json=hook).status_code == 401
        assert api(proc, "GET", "/api/v1/audit", auth=None).status_code == 401
        assert api(proc, "POST", "/api/v1/webhooks", auth=("alice", "alice-Pw-1"), json=hook).status_code == 201
        rows = wait_audit(
            proc, lambda rs: any(r["action"] == "webhook.add" for r in rs) and any(r["action"] == "login.failed" for r in rs)
        )
        assert any(r["action"] == "webhook.add" and r["actor"] == "alice" for r in rows)
        assert any(r["action"] == "login.failed" and r["actor"] == "alice" for r in rows)
        entries = api(proc, "GET", "/api/v1/audit", auth=("alice", "alice-Pw-1")).json()["entries"]
        assert any(e["action"] == "webhook.add" for e in entries)
    finally:
        proc.stop()
