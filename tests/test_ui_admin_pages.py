"""The web UI's operator pages over plain HTTP (no browser): the audit log, webhooks (create,
test event, deliveries, retry), the vulnerability database's status, the cache, and running a
garbage collection with a confirmation step.

For each page: an administrator sees it; another user gets 403 or a view filtered to what the
API would show them; every POST needs the form's CSRF token and a same-site ``Origin``; every
change is made by a service and audited with face ``ui`` and the signed-in actor; hostile form
and query input gets 4xx, never 500.  Also the readability of the audit log itself: a push's
tag, whose token, who ran GC, and the ``moorage audit`` table's header row.

Protocol tier: one real ``moorage serve`` (token auth) for the module, and a webhook receiver.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from moorage.events.present import summary
from tests.support.authsrv import ADMIN_PASSWORD, add_user, cli, start_auth_server
from tests.support.registry_proc import RegistryProcess
from tests.support.ui import HTTP_TIMEOUT, push_image
from tests.support.webhook_receiver import Receiver

ADMIN = ("admin", ADMIN_PASSWORD)
BOB = ("bob", "bob-password-123")
FAST = {
    "MOORAGE_EVENTS__RETRY_BACKOFF": "0.2",
    "MOORAGE_EVENTS__RETRY_BACKOFF_MAX": "1",
    "MOORAGE_EVENTS__DELIVERY_POLL_INTERVAL": "0.2",
    "MOORAGE_EVENTS__STATS_INTERVAL": "1",
}


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field in the page"
    return m.group(1)


def ui_login(proc: RegistryProcess, user: str, password: str) -> requests.Session:
    s = requests.Session()
    page = s.get(f"{proc.url}/ui/login", timeout=HTTP_TIMEOUT)
    r = s.post(
        f"{proc.url}/ui/login",
        data={"username": user, "password": password, "csrf": csrf_of(page.text)},
        timeout=HTTP_TIMEOUT,
        allow_redirects=False,
    )
    assert r.status_code == 303, (r.status_code, r.text[:300])
    return s


def post(proc: RegistryProcess, s: requests.Session, path: str, data: dict[str, str], page: str) -> requests.Response:
    """A form POST as a browser sends it: the page's CSRF token, a same-origin Origin."""
    html = s.get(proc.url + page, timeout=HTTP_TIMEOUT).text
    return s.post(
        proc.url + path,
        data={**data, "csrf": csrf_of(html)},
        headers={"Origin": proc.url},
        timeout=HTTP_TIMEOUT,
        allow_redirects=False,
    )


def audit(proc: RegistryProcess, **params: str) -> list[dict[str, Any]]:
    r = requests.get(f"{proc.url}/api/v1/audit", params={"limit": "1000", **params}, auth=ADMIN, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    return list(r.json()["entries"])


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rx = Receiver().start()
    try:
        yield rx
    finally:
        rx.close()


@pytest.fixture(scope="module")
def srv(backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    name, make_env = backend
    tmp = tmp_path_factory.mktemp(f"ui-admin-{name}")
    proc = start_auth_server(tmp / "srv", {**make_env(), **FAST})
    try:
        add_user(proc, *BOB)
        for tag, seed in (("3.20", "a320"), ("3.19", "a319"), ("edge", "aedge")):
            push_image(proc, "library/alpine", tag, tmp, seed=seed, auth=ADMIN)
        push_image(proc, "bob/app", "1", tmp, seed="bob1", auth=BOB)
        deadline = time.monotonic() + 15  # push entries are buffered: written within about a second
        while len(audit(proc, action="push")) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def admin(srv: RegistryProcess) -> requests.Session:
    return ui_login(srv, *ADMIN)


@pytest.fixture(scope="module")
def bob(srv: RegistryProcess) -> requests.Session:
    return ui_login(srv, *BOB)


PAGES = ("/ui/admin/audit", "/ui/admin/webhooks", "/ui/admin/vulndb", "/ui/admin/cache", "/ui/admin/gc")


# -- who sees what --------------------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES)
def test_admin_sees_every_page_and_anonymous_is_sent_to_sign_in(srv: RegistryProcess, admin: requests.Session, page: str) -> None:
    r = admin.get(srv.url + page, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text[:500]
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert f'href="{page}" aria-current="page"' in r.text  # in the navigation
    anon = requests.get(srv.url + page, timeout=HTTP_TIMEOUT, allow_redirects=False)
    assert anon.status_code == 303 and anon.headers["Location"].startswith("/ui/login")


@pytest.mark.parametrize("page", ("/ui/admin/vulndb", "/ui/admin/cache", "/ui/admin/gc"))
def test_a_user_is_refused_the_administrators_pages(srv: RegistryProcess, bob: requests.Session, page: str) -> None:
    assert bob.get(srv.url + page, timeout=HTTP_TIMEOUT).status_code == 403


def test_a_user_reads_only_their_own_and_their_namespaces_audit_entries(
    srv: RegistryProcess, admin: requests.Session, bob: requests.Session
) -> None:
    mine = bob.get(f"{srv.url}/ui/admin/audit", timeout=HTTP_TIMEOUT)
    assert mine.status_code == 200
    assert "bob/app:1" in mine.text  # bob's push into his namespace, with its tag
    assert "library/alpine" not in mine.text  # the administrator's pushes elsewhere
    everything = admin.get(f"{srv.url}/ui/admin/audit", params={"action": "push"}, timeout=HTTP_TIMEOUT).text
    assert "library/alpine:3.20" in everything and "bob/app:1" in everything
    # a filter cannot widen the view
    wider = bob.get(f"{srv.url}/ui/admin/audit", params={"repository": "library/*"}, timeout=HTTP_TIMEOUT)
    assert wider.status_code == 200 and "library/alpine" not in wider.text


def test_a_user_sees_only_the_webhooks_of_their_namespace(srv: RegistryProcess, bob: requests.Session) -> None:
    r = requests.post(
        f"{srv.url}/api/v1/webhooks",
        json={"name": "adminonly", "url": "http://203.0.113.9/x", "repositories": ["library/*"]},
        auth=ADMIN,
        timeout=HTTP_TIMEOUT,
    )
    assert r.status_code == 201, r.text
    page = bob.get(f"{srv.url}/ui/admin/webhooks", timeout=HTTP_TIMEOUT)
    assert page.status_code == 200 and "adminonly" not in page.text
    assert 'href="/ui/admin/webhooks" aria-current="page"' in page.text  # in bob's navigation too
    assert 'href="/ui/admin/gc"' not in page.text  # but not the administrators' pages
    assert 'action="/ui/admin/webhooks"' not in page.text  # events.webhooks.namespace_admins is off
    assert bob.get(f"{srv.url}/ui/admin/webhooks/adminonly", timeout=HTTP_TIMEOUT).status_code == 404
    for path in ("/ui/admin/webhooks/adminonly/test", "/ui/admin/webhooks/adminonly/deliveries/1/retry"):
        assert post(srv, bob, path, {}, "/ui/admin/webhooks").status_code == 404
    made = post(
        srv,
        bob,
        "/ui/admin/webhooks",
        {"name": "bobs", "url": "http://203.0.113.9/y", "repositories": "bob/*"},
        "/ui/admin/webhooks",
    )
    assert made.status_code == 403
    denied = audit(srv, action="webhook.add", actor="bob")
    assert denied and denied[0]["face"] == "ui" and denied[0]["outcome"] == "denied"


# -- CSRF and Origin on every POST ------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    (
        "/ui/admin/gc",
        "/ui/admin/webhooks",
        "/ui/admin/webhooks/adminonly/test",
        "/ui/admin/webhooks/adminonly/deliveries/1/retry",
    ),
)
def test_posts_need_the_form_token_and_a_same_site_origin(srv: RegistryProcess, admin: requests.Session, path: str) -> None:
    data = {"action": "run", "confirm": "yes", "name": "csrf", "url": "http://203.0.113.9/z", "repositories": "x/*"}
    assert admin.post(srv.url + path, data=data, timeout=HTTP_TIMEOUT, allow_redirects=False).status_code == 403
    token = csrf_of(admin.get(f"{srv.url}/ui/admin/gc", timeout=HTTP_TIMEOUT).text)
    cross = admin.post(
        srv.url + path,
        data={**data, "csrf": token},
        headers={"Origin": "http://evil.example"},
        timeout=HTTP_TIMEOUT,
        allow_redirects=False,
    )
    assert cross.status_code == 403
    assert (
        not [e for e in audit(srv, action="gc.run") if e["face"] == "ui" and not e["detail"]["dry_run"]] or path != "/ui/admin/gc"
    )


# -- webhooks: create, test event, deliveries, retry --------------------------------------------
def test_create_a_webhook_and_send_a_test_event(srv: RegistryProcess, admin: requests.Session, receiver: Receiver) -> None:
    hook = f"/ui-{srv.port}"  # the receiver is shared by the module's servers (one per backend)
    r = post(
        srv,
        admin,
        "/ui/admin/webhooks",
        {"name": "ci", "url": receiver.url(hook), "repositories": "library/*", "action_push": "1", "format": "distribution"},
        "/ui/admin/webhooks",
    )
    assert r.status_code == 200, r.text[:500]
    secret = re.search(r'data-copy="([^"]+)" aria-label="Copy secret"', r.text)
    assert secret, "the generated secret is shown once"
    added = [e for e in audit(srv, action="webhook.add") if e["target"] == "ci"]
    assert [(e["actor"], e["face"], e["outcome"]) for e in added] == [("admin", "ui", "ok")]

    sent = post(srv, admin, "/ui/admin/webhooks/ci/test", {}, "/ui/admin/webhooks/ci")
    assert sent.status_code == 303 and sent.headers["Location"] == "/ui/admin/webhooks/ci?sent=1"
    got = receiver.wait_for(1, hook)
    ev = got[0].json()["events"][0]
    assert ev["action"] == "push" and ev["target"]["repository"] == "moorage-test/webhook" and ev["target"]["tag"] == "test"
    assert got[0].signed_with(secret.group(1))
    tested = [e for e in audit(srv, action="webhook.test") if e["target"] == "ci"]
    assert [(e["actor"], e["face"], e["outcome"]) for e in tested] == [("admin", "ui", "ok")]
    assert tested[0]["detail"]["event_id"] == got[0].event_id
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        page = admin.get(f"{srv.url}/ui/admin/webhooks/ci", timeout=HTTP_TIMEOUT).text
        if "status-delivered" in page:
            break
        time.sleep(0.2)
    assert "status-delivered" in page and "moorage-test/webhook" in page


def test_retry_a_dead_delivery(srv: RegistryProcess, admin: requests.Session) -> None:
    r = requests.post(
        f"{srv.url}/api/v1/webhooks",
        json={"name": "down", "url": "http://127.0.0.1:9/never", "repositories": ["library/*"], "max_attempts": 1, "timeout": 2},
        auth=ADMIN,
        timeout=HTTP_TIMEOUT,
    )
    assert r.status_code == 201, r.text
    assert post(srv, admin, "/ui/admin/webhooks/down/test", {}, "/ui/admin/webhooks/down").status_code == 303
    deadline = time.monotonic() + 30
    dead: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not dead:
        dead = requests.get(
            f"{srv.url}/api/v1/webhooks/down/deliveries", params={"status": "dead"}, auth=ADMIN, timeout=HTTP_TIMEOUT
        ).json()["deliveries"]
        time.sleep(0.2)
    assert dead, "the test delivery to a closed port did not die"
    did = dead[0]["id"]
    page = admin.get(f"{srv.url}/ui/admin/webhooks/down", params={"status": "dead"}, timeout=HTTP_TIMEOUT).text
    assert f"/ui/admin/webhooks/down/deliveries/{did}/retry" in page
    r = post(srv, admin, f"/ui/admin/webhooks/down/deliveries/{did}/retry", {}, "/ui/admin/webhooks/down")
    assert r.status_code == 303
    retried = [e for e in audit(srv, action="webhook.retry") if e["target"] == "down"]
    assert [(e["actor"], e["face"], e["outcome"], e["detail"]["delivery"]) for e in retried] == [("admin", "ui", "ok", did)]
    # not dead any more (or dead again, after a new attempt): either way it was queued
    again = post(srv, admin, "/ui/admin/webhooks/down/deliveries/999999999/retry", {}, "/ui/admin/webhooks/down")
    assert again.status_code == 404


# -- garbage collection -----------------------------------------------------------------------
def test_gc_runs_after_a_confirmation_and_names_its_actor(srv: RegistryProcess, admin: requests.Session) -> None:
    ask = post(srv, admin, "/ui/admin/gc", {"action": "run"}, "/ui/admin/gc")
    assert ask.status_code == 200 and "Yes, collect now" in ask.text
    assert not [e for e in audit(srv, action="gc.run") if e["face"] == "ui" and not e["detail"]["dry_run"]]

    dry = post(srv, admin, "/ui/admin/gc", {"action": "dry_run"}, "/ui/admin/gc")
    assert dry.status_code == 200 and "Would remove" in dry.text
    run = post(srv, admin, "/ui/admin/gc", {"action": "run", "confirm": "yes"}, "/ui/admin/gc")
    assert run.status_code == 200 and "Removed" in run.text
    time.sleep(2.5)  # the gc_runs import (events.stats_interval 1 s) has run: the run is still listed once
    runs = audit(srv, action="gc.run")
    real = [e for e in runs if not e["detail"]["dry_run"]]
    assert [(e["actor"], e["face"], e["outcome"]) for e in real] == [("admin", "ui", "ok")], runs
    assert [(e["actor"], e["face"]) for e in runs if e["detail"]["dry_run"]] == [("admin", "ui")]
    assert "GC: removed" in real[0]["summary"]
    page = admin.get(f"{srv.url}/ui/admin/audit", params={"action": "gc.run"}, timeout=HTTP_TIMEOUT).text
    assert '<td data-label="Actor">admin</td>' in page


# -- readability of the audit log -------------------------------------------------------------
def test_pushes_show_their_tag_and_tokens_their_owner(srv: RegistryProcess, admin: requests.Session) -> None:
    pushes = [e["summary"] for e in audit(srv, action="push", repository="library/alpine")]
    assert {s.split(" ")[0] for s in pushes} >= {"library/alpine:3.20", "library/alpine:3.19", "library/alpine:edge"}
    r = requests.post(f"{srv.url}/api/v1/tokens", json={"user": "bob", "name": "ci-token"}, auth=ADMIN, timeout=HTTP_TIMEOUT)
    assert r.status_code == 201, r.text
    made = audit(srv, action="token.create")[0]
    assert made["summary"] == f"token {made['target']} (ci-token) of bob"
    page = admin.get(f"{srv.url}/ui/admin/audit", params={"action": "token.*"}, timeout=HTTP_TIMEOUT).text
    assert "(ci-token) of bob" in page
    assert '<thead><tr><th scope="col">Time (UTC)</th>' in page


def test_the_cli_table_has_a_header_row_and_the_summary(srv: RegistryProcess) -> None:
    out = cli(srv, "audit", "--action", "push", "--repository", "library/alpine").stdout.splitlines()
    assert out[0].split() == ["TIME", "ACTOR", "FACE", "ACTION", "WHAT", "CLIENT"]
    assert any("library/alpine:3.20 (sha256:" in line for line in out[1:])


# -- hostile input ----------------------------------------------------------------------------
HOSTILE = ["x" * 100_000, "a\x00b", "a\r\nSet-Cookie: x=1", "\u202eevil", "\ud7ff\U0010ffff", "ｎａｍｅ", "../../etc", "²"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_webhook_forms_get_4xx(srv: RegistryProcess, admin: requests.Session, value: str) -> None:
    for data in (
        {"name": value, "url": "http://203.0.113.9/h", "repositories": "a/*"},
        {"name": "hostile", "url": value, "repositories": "a/*"},
        {"name": "hostile2", "url": "http://203.0.113.9/h", "repositories": value},
        {"name": "hostile3", "url": "http://203.0.113.9/h", "repositories": "a/*", "secret": value, "format": value},
    ):
        r = post(srv, admin, "/ui/admin/webhooks", data, "/ui/admin/webhooks")
        assert 400 <= r.status_code < 500 or (r.status_code == 200 and "created" in r.text), (data, r.status_code)
    requests.delete(f"{srv.url}/api/v1/webhooks/hostile", auth=ADMIN, timeout=HTTP_TIMEOUT)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_queries_get_4xx(srv: RegistryProcess, admin: requests.Session, value: str) -> None:
    requests.post(  # (exists already after the first value: 400, fine)
        f"{srv.url}/api/v1/webhooks",
        json={"name": "hq", "url": "http://203.0.113.9/q", "repositories": ["q/*"]},
        auth=ADMIN,
        timeout=HTTP_TIMEOUT,
    )
    for path, params in (
        ("/ui/admin/audit", {"actor": value}),
        ("/ui/admin/audit", {"action": value, "repository": value}),
        ("/ui/admin/audit", {"before": value}),
        ("/ui/admin/webhooks/hq", {"status": value}),
        ("/ui/admin/webhooks/hq", {"before": value}),
    ):
        r = admin.get(srv.url + path, params=params, timeout=HTTP_TIMEOUT)
        assert r.status_code in (200, 400), (path, params, r.status_code)
    for path in (f"/ui/admin/webhooks/{value}", f"/ui/admin/webhooks/hq/deliveries/{value}/retry"):
        r = admin.get(srv.url + path.replace("\x00", "%00"), timeout=HTTP_TIMEOUT)
        assert 400 <= r.status_code < 500, (path[:80], r.status_code)
    r = post(srv, admin, "/ui/admin/gc", {"action": value, "delete_untagged": value}, "/ui/admin/gc")
    assert r.status_code == 400
    if "/" not in value and "\x00" not in value and "\n" not in value:
        r = post(srv, admin, f"/ui/admin/webhooks/hq/deliveries/{value[:200]}/retry", {}, "/ui/admin/gc")
        assert r.status_code == 404, r.status_code


# -- the summary itself (no server) -------------------------------------------------------------
def test_summary_of_entries() -> None:
    push = {
        "action": "push",
        "repository": "alpine",
        "target": "sha256:" + "a" * 64,
        "detail": {"tag": "3.20", "digest": "sha256:" + "a" * 64},
    }
    assert summary(push) == "alpine:3.20 (sha256:aaaaaaaaaaaa)"
    assert summary({**push, "detail": {"digest": "sha256:" + "b" * 64}}) == "alpine@sha256:bbbbbbbbbbbb"
    assert summary({"action": "token.revoke", "target": "t1", "detail": {"user": "alice", "revoked": 3}}) == (
        "token t1 of alice, with 2 token(s) made with it"
    )
    gc = {"action": "gc.run", "detail": {"dry_run": True, "blobs_removed": 2, "bytes_removed": 3 << 20}}
    assert summary(gc) == "GC dry run: would remove 0 tag(s), 0 manifest(s), 2 blob(s), 3.0 MiB"
    denied = {"action": "webhook.add", "target": "h", "outcome": "denied", "detail": {"reason": "no"}}
    assert summary(denied) == "webhook h [denied: no]"
    assert len(summary({"action": "x", "target": "y" * 10_000})) == 300


# -- without auth: everyone administers; the cache page with upstreams and mirror rules ---------
def test_open_registry_pages_and_the_cache_page(tmp_path: Path) -> None:
    import yaml

    from tests.support.registry_proc import start_moorage

    config = tmp_path / "moorage.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "proxy": {
                    "upstreams": [
                        {
                            "name": "hub",
                            "url": "http://127.0.0.1:9",
                            "namespace": "hub",
                            "username": "u",
                            "password": "hunter2-secret",
                        }
                    ],
                    "mirror_rules": [{"name": "nightly", "src": "127.0.0.1:9/a", "dst": "127.0.0.1:9/b", "interval": 86400}],
                }
            }
        )
    )
    proc = start_moorage(tmp_path / "srv", env=FAST, extra_args=["--config", str(config)])
    try:
        s = requests.Session()
        for page in PAGES:
            assert s.get(proc.url + page, timeout=HTTP_TIMEOUT).status_code == 200, page
        cache = s.get(f"{proc.url}/ui/admin/cache", timeout=HTTP_TIMEOUT).text
        assert "http://127.0.0.1:9" in cache and "hub/…" in cache and "nightly" in cache and "127.0.0.1:9/a" in cache
        assert "hunter2-secret" not in cache
        vulndb = s.get(f"{proc.url}/ui/admin/vulndb", timeout=HTTP_TIMEOUT).text
        assert "No vulnerability database is loaded" in vulndb or "Image insight is off" in vulndb
        r = post(proc, s, "/ui/admin/gc", {"action": "dry_run"}, "/ui/admin/gc")
        assert r.status_code == 200 and "Would remove" in r.text
        entries = requests.get(f"{proc.url}/api/v1/audit", params={"action": "gc.run"}, timeout=HTTP_TIMEOUT).json()["entries"]
        assert [(e["face"], e["detail"]["dry_run"]) for e in entries] == [("ui", True)]
    finally:
        proc.stop()


def test_namespace_admin_webhooks_when_the_configuration_allows(tmp_path: Path) -> None:
    """``events.webhooks.namespace_admins: true``: a user creates webhooks for their own
    namespace in the form, only to public destinations (the service's rule), sees only theirs."""
    proc = start_auth_server(tmp_path / "srv", {**FAST, "MOORAGE_EVENTS__WEBHOOKS__NAMESPACE_ADMINS": "true"})
    try:
        add_user(proc, *BOB)
        s = ui_login(proc, *BOB)
        page = s.get(f"{proc.url}/ui/admin/webhooks", timeout=HTTP_TIMEOUT).text
        assert 'action="/ui/admin/webhooks"' in page
        form = {"name": "bobs", "repositories": "bob/*", "action_push": "1"}
        loop = post(proc, s, "/ui/admin/webhooks", {**form, "url": "http://127.0.0.1:1/x"}, "/ui/admin/webhooks")
        assert loop.status_code == 400 and "destination refused" in loop.text
        other = post(
            proc,
            s,
            "/ui/admin/webhooks",
            {**form, "url": "http://93.184.215.14/x", "repositories": "alice/*"},
            "/ui/admin/webhooks",
        )
        assert other.status_code == 403
        ok = post(proc, s, "/ui/admin/webhooks", {**form, "url": "http://93.184.215.14/x"}, "/ui/admin/webhooks")
        assert ok.status_code == 200 and "Webhook bobs created" in ok.text
        assert s.get(f"{proc.url}/ui/admin/webhooks/bobs", timeout=HTTP_TIMEOUT).status_code == 200
        added = [e for e in audit(proc, action="webhook.add") if e["actor"] == "bob"]
        assert sorted((e["face"], e["outcome"]) for e in added) == [("ui", "denied"), ("ui", "ok")]
    finally:
        proc.stop()
