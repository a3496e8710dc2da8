"""The accounts and webhook services through the in-process app (unit tier): issue 20's account
findings, each a test that fails on the code before the services.

* an administrator made in the web UI is in the audit log (face ``ui``), once;
* the token chain: a token that expires in 2 minutes cannot mint one that never expires (or
  outlives it); what it mints is revoked with it;
* a non-administrator's webhook to a loopback address is refused -- by default webhooks are
  for administrators; with ``events.webhooks.namespace_admins`` only to public destinations
  (unless ``allowed_networks`` lists them), checked again at connect time, where a name that
  resolves to loopback (DNS rebinding) is refused too, and redirects are not followed;
* a refused change is audited ``denied``; a change the database refuses leaves no entry;
* on PostgreSQL, a token minted while its parent is being revoked is revoked with it (the
  minting transaction locks the parent's row; without the lock children survived).
"""

from __future__ import annotations

import base64
import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from tests.support.inproc import app_client

ADMIN_PW = "admin-Pw-for-unit"
TOKEN_MODE = {"mode": "token", "admin_password": ADMIN_PW, "bcrypt_rounds": 4}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


ADMIN = basic("admin", ADMIN_PW)


@pytest.fixture()
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    async with app_client(tmp_path, auth=TOKEN_MODE) as c:
        yield c


async def audit(client: TestClient, **params: str) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/audit", params={"limit": "1000", **params}, headers=ADMIN)
    assert r.status == 200, await r.text()
    return list((await r.json())["entries"])


async def add_user(client: TestClient, name: str, password: str, **more: Any) -> None:
    r = await client.post("/api/v1/users", json={"name": name, "password": password, **more}, headers=ADMIN)
    assert r.status == 201, await r.text()


async def ui_sign_in(client: TestClient, user: str, password: str) -> None:
    page = await (await client.get("/ui/login")).text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf
    r = await client.post(
        "/ui/login", data={"username": user, "password": password, "csrf": csrf.group(1)}, allow_redirects=False
    )
    assert r.status == 303, await r.text()


async def ui_form(client: TestClient, page: str, path: str, data: dict[str, str]) -> aiohttp.ClientResponse:
    html = await (await client.get(page)).text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)
    assert csrf, html[:300]
    origin = f"http://{client.host}:{client.port}"
    return await client.post(path, data={**data, "csrf": csrf.group(1)}, headers={"Origin": origin}, allow_redirects=False)


# -- issue 20: "Admin changes made in the web UI are not audited" ----------------------------------
async def test_an_administrator_made_in_the_ui_is_audited(client: TestClient) -> None:
    await ui_sign_in(client, "admin", ADMIN_PW)
    r = await ui_form(client, "/ui/admin/users", "/ui/admin/users", {"name": "eve", "password": "eve-Pw-1234", "admin": "1"})
    assert r.status == 200, await r.text()
    entries = [e for e in await audit(client, action="user.add") if e["target"] == "eve"]
    assert len(entries) == 1, entries
    e = entries[0]
    assert (e["actor"], e["face"], e["outcome"]) == ("admin", "ui", "ok")
    assert e["detail"]["admin"] is True
    # the grant and the visibility change made on the namespaces page too
    r = await ui_form(
        client,
        "/ui/admin/namespaces",
        "/ui/admin/namespaces",
        {"action": "grant", "namespace": "corp", "user": "eve", "admin": "1"},
    )
    assert r.status == 303, await r.text()
    r = await ui_form(
        client, "/ui/admin/namespaces", "/ui/admin/namespaces", {"action": "visibility", "namespace": "corp", "public": "1"}
    )
    assert r.status == 303, await r.text()
    got = {(e["action"], e["target"], e["face"]) for e in await audit(client)}
    assert {("grant.add", "corp/*", "ui"), ("visibility.set", "corp", "ui")} <= got


async def test_a_refused_ui_change_is_audited_denied_and_changes_nothing(client: TestClient) -> None:
    await add_user(client, "mallory", "mallory-Pw-1")
    await ui_sign_in(client, "mallory", "mallory-Pw-1")
    r = await ui_form(client, "/ui/tokens", "/ui/admin/users", {"name": "evil", "password": "x" * 12, "admin": "1"})
    assert r.status == 403
    denied = [e for e in await audit(client, action="user.add") if e["actor"] == "mallory"]
    assert [(e["face"], e["outcome"]) for e in denied] == [("ui", "denied")]
    r = await client.get("/api/v1/users/evil", headers=ADMIN)
    assert r.status == 404


async def test_one_entry_per_api_change_and_none_for_a_refused_duplicate(client: TestClient) -> None:
    await add_user(client, "bob", "bob-Pw-12345")
    r = await client.post("/api/v1/users", json={"name": "bob", "password": "other-Pw-1"}, headers=ADMIN)
    assert r.status == 400
    entries = [e for e in await audit(client, action="user.add") if e["target"] == "bob"]
    assert [(e["actor"], e["face"], e["outcome"], e["client_ip"]) for e in entries] == [("admin", "api", "ok", "127.0.0.1")]


# -- issue 20: "Tokens mint tokens without bounds" ------------------------------------------------
async def test_a_short_token_cannot_mint_a_longer_one_and_revoking_it_revokes_the_child(client: TestClient) -> None:
    await add_user(client, "carol", "carol-Pw-123")
    r = await client.post("/api/v1/me/tokens", json={"expires_in": 120}, headers=basic("carol", "carol-Pw-123"))
    assert r.status == 201
    parent = await r.json()
    with_parent = basic("carol", parent["token"])
    # never expiring, or expiring after the parent: refused (400), and nothing was made
    for body in ({}, {"expires_in": 3600}):
        r = await client.post("/api/v1/me/tokens", json=body, headers=with_parent)
        assert r.status == 400, (body, await r.text())
    r = await client.get("/api/v1/tokens", params={"user": "carol"}, headers=ADMIN)
    assert [t["id"] for t in (await r.json())["tokens"]] == [parent["id"]]
    # within the parent's life: made, and it records its parent
    r = await client.post("/api/v1/me/tokens", json={"expires_in": 60}, headers=with_parent)
    assert r.status == 201, await r.text()
    child = await r.json()
    assert child["parent_id"] == parent["id"] and child["expires_at"] <= parent["expires_at"]
    grandchild = await (
        await client.post("/api/v1/me/tokens", json={"expires_in": 30}, headers=basic("carol", child["token"]))
    ).json()
    for tok in (child, grandchild):
        assert (await client.get("/api/v1/me", headers=basic("carol", tok["token"]))).status == 200
    # a bearer token got with the child works until the parent is revoked
    r = await client.get("/auth/token", params={"service": "moorage"}, headers=basic("carol", child["token"]))
    assert r.status == 200
    jwt = (await r.json())["token"]
    assert (await client.get("/api/v1/me", headers={"Authorization": f"Bearer {jwt}"})).status == 200
    # revoking the parent revokes what it minted, and what that minted
    r = await client.delete(f"/api/v1/me/tokens/{parent['id']}", headers=basic("carol", "carol-Pw-123"))
    assert r.status == 204
    for tok in (parent, child, grandchild):
        assert (await client.get("/api/v1/me", headers=basic("carol", tok["token"]))).status == 401
    assert (await client.get("/api/v1/me", headers={"Authorization": f"Bearer {jwt}"})).status == 401
    revoked = [e for e in await audit(client, action="token.revoke") if e["target"] == parent["id"]]
    assert len(revoked) == 1 and revoked[0]["detail"]["revoked"] == 3


async def test_the_chain_holds_for_an_administrator_minting_for_another_user(client: TestClient) -> None:
    await add_user(client, "dan", "dan-Pw-12345")
    r = await client.post("/api/v1/me/tokens", json={"expires_in": 120}, headers=ADMIN)
    admin_tok = await r.json()
    r = await client.post("/api/v1/tokens", json={"user": "dan"}, headers=basic("admin", admin_tok["token"]))
    assert r.status == 400
    r = await client.post("/api/v1/tokens", json={"user": "dan", "expires_in": 60}, headers=basic("admin", admin_tok["token"]))
    assert r.status == 201
    dan_tok = await r.json()
    assert (await client.delete(f"/api/v1/tokens/{admin_tok['id']}", headers=ADMIN)).status == 204
    assert (await client.get("/api/v1/me", headers=basic("dan", dan_tok["token"]))).status == 401
    # a password (session) is not bounded: the documented choice
    r = await client.post("/api/v1/me/tokens", json={}, headers=basic("dan", "dan-Pw-12345"))
    assert r.status == 201 and (await r.json())["expires_at"] is None


# -- issue 20: "Webhooks are created by anyone" ---------------------------------------------------
LOOPBACK_HOOK = {"name": "scan", "url": "http://127.0.0.1:22/", "secret": "s" * 20, "repositories": ["frank/*"]}


async def test_a_non_administrators_loopback_webhook_is_refused(client: TestClient) -> None:
    await add_user(client, "frank", "frank-Pw-123")
    r = await client.post("/api/v1/webhooks", json=LOOPBACK_HOOK, headers=basic("frank", "frank-Pw-123"))
    assert r.status == 403, await r.text()
    r = await client.post(
        "/api/v1/webhooks", json={**LOOPBACK_HOOK, "url": "https://hooks.example.com/x"}, headers=basic("frank", "frank-Pw-123")
    )
    assert r.status == 403  # webhooks are for administrators unless namespace_admins
    denied = [e for e in await audit(client, action="webhook.add") if e["actor"] == "frank"]
    assert {e["outcome"] for e in denied} == {"denied"} and len(denied) == 2
    assert (await client.get("/api/v1/webhooks", headers=ADMIN)).status == 200
    assert (await (await client.get("/api/v1/webhooks", headers=ADMIN)).json())["webhooks"] == []
    # administrators are trusted with the registry's network position (docs/events.md)
    r = await client.post("/api/v1/webhooks", json={**LOOPBACK_HOOK, "repositories": ["*"]}, headers=ADMIN)
    assert r.status == 201


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:22/",
        "http://127.1/",
        "http://[::1]:8080/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0:5000/",
        "http://localhost:5000/",
    ],
)
async def test_namespace_admins_may_create_webhooks_only_to_public_destinations(tmp_path: Path, url: str) -> None:
    async with app_client(tmp_path, auth=TOKEN_MODE, events={"webhooks": {"namespace_admins": True}}) as c:
        await add_user(c, "frank", "frank-Pw-123")
        r = await c.post("/api/v1/webhooks", json={**LOOPBACK_HOOK, "url": url}, headers=basic("frank", "frank-Pw-123"))
        assert r.status in (400, 403), await r.text()
        assert (await (await c.get("/api/v1/webhooks", headers=ADMIN)).json())["webhooks"] == []
        r = await c.post(
            "/api/v1/webhooks", json={**LOOPBACK_HOOK, "url": "https://93.184.215.14/x"}, headers=basic("frank", "frank-Pw-123")
        )
        assert r.status == 201, await r.text()
        assert (await r.json())["namespace"] == "frank"


async def test_allowed_networks_let_a_namespace_admin_reach_a_listed_private_range(tmp_path: Path) -> None:
    events = {"webhooks": {"namespace_admins": True, "allowed_networks": ["127.0.0.0/8"]}}
    async with app_client(tmp_path, auth=TOKEN_MODE, events=events) as c:
        await add_user(c, "frank", "frank-Pw-123")
        r = await c.post("/api/v1/webhooks", json=LOOPBACK_HOOK, headers=basic("frank", "frank-Pw-123"))
        assert r.status == 201, await r.text()
        r = await c.post(
            "/api/v1/webhooks",
            json={**LOOPBACK_HOOK, "name": "meta", "url": "http://169.254.169.254/"},
            headers=basic("frank", "frank-Pw-123"),
        )
        assert r.status == 400


# -- the connect-time check (DNS rebinding) and redirects ------------------------------------------
class _Rebinding(aiohttp.abc.AbstractResolver):
    """A name that resolves to loopback at delivery time (whatever it resolved to before)."""

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict[str, Any]]:
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}]

    async def close(self) -> None:
        pass


async def _receiver() -> tuple[TestServer, list[str]]:
    hits: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        hits.append(request.path)
        if request.path == "/redirect":
            raise web.HTTPFound("/internal")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server, hits


async def test_deliveries_connect_only_to_allowed_addresses_whatever_dns_says() -> None:
    from moorage.events.netguard import DestinationRefused, guarded_connector, networks

    server, hits = await _receiver()
    try:
        url = f"http://rebind.example.com:{server.port}/hook"
        async with aiohttp.ClientSession(connector=guarded_connector(networks([]), resolver=_Rebinding())) as s:
            with pytest.raises(aiohttp.ClientConnectorError) as info:
                await s.post(url, data=b"{}")
            assert isinstance(info.value.os_error, DestinationRefused) or "not allowed" in str(info.value)
            with pytest.raises(aiohttp.ClientConnectorError):
                await s.post(f"http://127.0.0.1:{server.port}/hook", data=b"{}")
        assert hits == []
        allowed = networks(["127.0.0.0/8"])
        async with (
            aiohttp.ClientSession(connector=guarded_connector(allowed, resolver=_Rebinding())) as s,
            s.post(url, data=b"{}") as r,
        ):
            assert r.status == 200
        assert hits == ["/hook"]
    finally:
        await server.close()


async def test_a_delivery_does_not_follow_a_redirect(tmp_path: Path) -> None:
    """The worker's post of a namespace admin's endpoint: a 302 is a failed attempt; the
    redirect's target is never asked."""
    from moorage.config import Settings
    from moorage.events.delivery import DeliveryWorker
    from moorage.events.endpoints import Endpoint
    from moorage.metadata.events_store import Delivery

    server, hits = await _receiver()
    try:
        settings = Settings(data=tmp_path, events={"webhooks": {"allowed_networks": ["127.0.0.0/8"]}})
        worker = DeliveryWorker(None, None, settings.events, None)  # type: ignore[arg-type]
        ep = Endpoint(
            "ns-hook",
            f"http://127.0.0.1:{server.port}/redirect",
            "secret",
            "distribution",
            frozenset({"push"}),
            ("frank/*",),
            frozenset({"manifest"}),
            5.0,
            3,
            origin="api",
            namespace="frank",
        )
        d = Delivery(**{**_delivery_fields(), "endpoint": "ns-hook"})
        import asyncio

        run = asyncio.create_task(worker.run())  # opens the sessions
        for _ in range(100):
            if worker._guarded is not None:
                break
            await asyncio.sleep(0.01)
        try:
            assert await worker._post(ep, d) == 302
        finally:
            await worker.stop()
            await run
        assert hits == ["/redirect"]
    finally:
        await server.close()


def _delivery_fields() -> dict[str, Any]:
    from dataclasses import fields

    from moorage.metadata.events_store import Delivery

    values: dict[str, Any] = {}
    for f in fields(Delivery):
        values[f.name] = {"id": 1, "attempts": 1, "body": b"{}", "content_type": "application/json", "event_id": "e1"}.get(f.name)
    values["created_at"] = time.time()
    return values


# -- minting while the parent is revoked, on PostgreSQL (READ COMMITTED: the row lock matters) -----
@pytest.mark.services
async def test_no_child_outlives_a_parent_revoked_while_it_is_minted(postgres_url: str, tmp_path: Path) -> None:
    import asyncio
    import uuid

    from tests.support.postgres import create_database

    url = create_database(postgres_url, "acc_" + uuid.uuid4().hex[:12]).replace("postgresql+asyncpg://", "postgresql://")
    auth = {**TOKEN_MODE, "login_rate_limit": 10_000}
    async with app_client(tmp_path, auth=auth, database={"url": url, "auto_migrate": True}) as c:
        minted = 0
        for delay in (0.05, 0.2, 0.5, 1.0, 2.0):
            parent = await (await c.post("/api/v1/me/tokens", json={"expires_in": 600}, headers=ADMIN)).json()
            with_parent = basic("admin", parent["token"])

            async def mint() -> int:
                r = await c.post("/api/v1/me/tokens", json={"expires_in": 300}, headers=with_parent)
                return r.status

            async def revoke() -> int:
                await asyncio.sleep(delay)
                return (await c.delete(f"/api/v1/tokens/{parent['id']}", headers=ADMIN)).status

            results = await asyncio.gather(*[mint() for _ in range(25)], revoke())
            assert results[-1] == 204 and set(results[:-1]) <= {201, 401, 403}, results
            minted += results[:-1].count(201)
            tokens = (await (await c.get("/api/v1/tokens", params={"user": "admin"}, headers=ADMIN)).json())["tokens"]
            children = [t for t in tokens if t["parent_id"] == parent["id"]]
            assert all(t["revoked_at"] is not None for t in children), [t for t in children if t["revoked_at"] is None]
            assert len(children) == results[:-1].count(201)
        print(f"minted {minted} children of parents revoked meanwhile")
        assert minted > 0  # the race was run, not only its losing side


# -- grants to directory groups: the accounts service, not the group store ------------------------
async def _make_namespace_admin(client: TestClient, name: str, namespace: str) -> None:
    await add_user(client, name, f"{name}-Pw-123")
    r = await client.post("/api/v1/grants", json={"user": name, "pattern": f"{namespace}/*", "actions": "admin"}, headers=ADMIN)
    assert r.status == 201, await r.text()


async def _group_grants(client: TestClient) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/group-grants", headers=ADMIN)
    assert r.status == 200, await r.text()
    return list((await r.json())["grants"])


async def test_a_namespace_admin_cannot_grant_a_group_rights_outside_their_namespace(client: TestClient) -> None:
    """The rule is the user grants': administrators only.  A namespace administrator (``admin``
    on ``team/*``) is refused -- outside their namespace, and inside it too (a group's members
    are the directory's, outside what a namespace admin may see) -- by the service itself, with
    a ``denied`` entry, whichever face called it; nothing is written."""
    from moorage import errors
    from moorage.api.common import ACCOUNTS
    from moorage.registry.principal import Principal

    await _make_namespace_admin(client, "nina", "team")
    service = client.app[ACCOUNTS]
    for face in ("api", "ui", "cli"):
        nina = Principal("nina", face)  # type: ignore[arg-type]
        for pattern in ("other/*", "*", "team/*"):
            with pytest.raises(errors.Denied):
                await service.add_group_grant(nina, "developers", pattern, "pull,push,admin")
    # through the faces a user has: the admin API (the route rule refuses first) and the UI form
    r = await client.post(
        "/api/v1/group-grants",
        json={"group": "developers", "pattern": "other/*", "actions": "admin"},
        headers=basic("nina", "nina-Pw-123"),
    )
    assert r.status == 403, await r.text()
    await ui_sign_in(client, "nina", "nina-Pw-123")
    r = await ui_form(
        client,
        "/ui/tokens",
        "/ui/admin/group-grants",
        {"action": "grant", "group": "developers", "namespace": "other", "admin": "1"},
    )
    assert r.status == 403, await r.text()
    assert await _group_grants(client) == []
    denied = [e for e in await audit(client, action="group_grant.add") if e["actor"] == "nina"]
    assert {e["outcome"] for e in denied} == {"denied"}
    assert {(e["face"], e["target"]) for e in denied} >= {("api", "other/*"), ("cli", "team/*"), ("ui", "other/*")}
    # an administrator may, and the namespace admin cannot take it away either
    admin = Principal("admin", "api", admin=True)
    await service.add_group_grant(admin, "developers", "other/*", "pull")
    with pytest.raises(errors.Denied):
        await service.revoke_group_grant(Principal("nina", "api"), "developers", "other/*")
    assert await _group_grants(client) == [{"group": "developers", "pattern": "other/*", "actions": ["pull"]}]


class _AfterTheEntry(Exception):
    """A failure injected after the change and its audit entry, before the commit."""


async def test_a_group_grant_and_its_entry_commit_together_or_not_at_all(client: TestClient) -> None:
    """The entry is written on the change's connection: a failure after both rolls both back."""
    from moorage.api.common import ACCOUNTS
    from moorage.registry.principal import Principal

    service = client.app[ACCOUNTS]
    admin = Principal("admin", "api", admin=True)
    real_record = service.audit.record

    async def record_then_fail(conn: Any, entry: Any) -> None:
        await real_record(conn, entry)
        raise _AfterTheEntry

    service.audit.record = record_then_fail  # type: ignore[method-assign]
    try:
        with pytest.raises(_AfterTheEntry):
            await service.add_group_grant(admin, "developers", "team/*", "pull,push")
    finally:
        del service.audit.record
    assert await _group_grants(client) == []
    assert await audit(client, action="group_grant.add") == []
    # made for real: one entry, naming the group and the actions
    await service.add_group_grant(admin, "developers", "team/*", "pull,push")
    [entry] = await audit(client, action="group_grant.add")
    assert (entry["actor"], entry["face"], entry["target"], entry["outcome"]) == ("admin", "api", "team/*", "ok")
    assert entry["detail"] == {"group": "developers", "actions": ["pull", "push"]}
    # the revoke the same way: a failure after its entry leaves the grant and writes no entry
    service.audit.record = record_then_fail  # type: ignore[method-assign]
    try:
        with pytest.raises(_AfterTheEntry):
            await service.revoke_group_grant(admin, "developers", "team/*")
    finally:
        del service.audit.record
    assert await _group_grants(client) == [{"group": "developers", "pattern": "team/*", "actions": ["pull", "push"]}]
    assert await audit(client, action="group_grant.revoke") == []
    await service.revoke_group_grant(admin, "developers", "team/*")
    assert await _group_grants(client) == []
    [entry] = await audit(client, action="group_grant.revoke")
    assert (entry["target"], entry["detail"]) == ("team/*", {"group": "developers"})


HOSTILE_GROUPS = [
    "",
    " developers",
    "developers ",
    "g" * 256,
    "g" * 100_000,
    "dev\x00",
    "dev\x07ops",
    "dev\nops",
    "dev\x1b[31m",
    "dev\u202eops",  # right-to-left override: looks like another name
    "dev\u200bops",  # zero-width space
    "dev\ufeff",
    "\ud800",  # a lone surrogate (JSON "\ud800")
]


@pytest.mark.parametrize("group", HOSTILE_GROUPS, ids=range(len(HOSTILE_GROUPS)))
async def test_hostile_group_names_get_a_400_from_the_api_never_a_500(client: TestClient, group: str) -> None:
    import json

    body = json.dumps({"group": group, "pattern": "team/*", "actions": "pull"}).encode()  # (\ud800 as JSON escapes it)
    r = await client.post("/api/v1/group-grants", data=body, headers={**ADMIN, "Content-Type": "application/json"})
    assert r.status in (400, 413), (r.status, await r.text())
    if group == "\ud800":  # (yarl cannot encode it: the bytes of a UTF-8-encoded surrogate, and a bare 0xff)
        for query in ("group=%ED%A0%80&pattern=team/*", "group=%FF&pattern=team/*", "group=dev&pattern=team/%ED%A0%80"):
            r = await client.delete(URL("/api/v1/group-grants?" + query, encoded=True), headers=ADMIN)
            assert r.status in (400, 404), (query, r.status, await r.text())
    else:
        r = await client.delete("/api/v1/group-grants", params={"group": group, "pattern": "team/*"}, headers=ADMIN)
        assert r.status in (400, 404), (r.status, await r.text())
        r = await client.get("/api/v1/group-grants", params={"group": group}, headers=ADMIN)
        assert r.status == 400, (r.status, await r.text())
    assert await _group_grants(client) == []


@pytest.mark.services
async def test_hostile_group_names_on_postgresql_are_a_400_not_a_500(postgres_url: str, tmp_path: Path) -> None:
    """PostgreSQL refuses NUL in text: a group name that reached the query was a 500."""
    import uuid

    from tests.support.postgres import create_database

    url = create_database(postgres_url, "gg_" + uuid.uuid4().hex[:12]).replace("postgresql+asyncpg://", "postgresql://")
    async with app_client(tmp_path, auth=TOKEN_MODE, database={"url": url, "auto_migrate": True}) as c:
        for group in ("dev\x00", "\x00", "g" * 300):
            r = await c.post("/api/v1/group-grants", json={"group": group, "pattern": "team/*", "actions": "pull"}, headers=ADMIN)
            assert r.status == 400, (group[:10], r.status, await r.text())
            r = await c.delete("/api/v1/group-grants", params={"group": group, "pattern": "team/*"}, headers=ADMIN)
            assert r.status in (400, 404), (group[:10], r.status, await r.text())
            r = await c.get("/api/v1/group-grants", params={"group": group}, headers=ADMIN)
            assert r.status == 400, (group[:10], r.status, await r.text())
        r = await c.delete("/api/v1/group-grants", params={"group": "dev", "pattern": "team/\x00"}, headers=ADMIN)
        assert r.status in (400, 404), (r.status, await r.text())
        assert (await c.get("/api/v1/group-grants", headers=ADMIN)).status == 200


async def test_directory_group_names_as_directories_spell_them_are_kept_exactly(client: TestClient) -> None:
    for group in ("Registry Admins", "Équipe Développeurs", "開発チーム", "dev-ops_2 (EU)", "g" * 255):
        r = await client.post(
            "/api/v1/group-grants", json={"group": group, "pattern": "team/*", "actions": "pull"}, headers=ADMIN
        )
        assert r.status == 201, (group, await r.text())
        r = await client.get("/api/v1/group-grants", params={"group": group}, headers=ADMIN)
        assert [g["group"] for g in (await r.json())["grants"]] == [group]
        r = await client.delete("/api/v1/group-grants", params={"group": group, "pattern": "team/*"}, headers=ADMIN)
        assert r.status == 204, (group, await r.text())


async def test_a_pattern_with_a_trailing_newline_is_refused(client: TestClient) -> None:
    """``re.match`` with ``$`` took ``team/*\\n`` as a valid pattern: stored, matching nothing."""
    r = await client.post(
        "/api/v1/group-grants", json={"group": "developers", "pattern": "team/*\n", "actions": "pull"}, headers=ADMIN
    )
    assert r.status == 400, await r.text()
    await add_user(client, "gina", "gina-Pw-1234")
    r = await client.post("/api/v1/grants", json={"user": "gina", "pattern": "team/*\n", "actions": "pull"}, headers=ADMIN)
    assert r.status == 400, await r.text()
    assert await _group_grants(client) == []


@pytest.mark.parametrize("group", ["dev\x07ops", "dev\nops", "g" * 300, " developers", "dev\u202eops"], ids=range(5))
async def test_the_ui_refuses_a_hostile_group_name_instead_of_trimming_it_into_another(client: TestClient, group: str) -> None:
    """The page once cleaned the field (control characters dropped, cut at 255): ``dev\\x07ops``
    became a grant to ``devops``, a 300-character name one to its first 255 -- other groups."""
    await ui_sign_in(client, "admin", ADMIN_PW)
    form = {"action": "grant", "group": group, "namespace": "team", "pull": "1"}
    r = await ui_form(client, "/ui/admin/group-grants", "/ui/admin/group-grants", form)
    assert r.status == 400, await r.text()
    assert "invalid group name" in await r.text()
    assert await _group_grants(client) == []
    assert await audit(client, action="group_grant.add") == []


#: User names PostgreSQL text refuses (NUL) or that are no UTF-8 at all (a lone surrogate from a
#: JSON ``\ud800``, an invalid escape in a URL), plus over-long and merely malformed ones.
HOSTILE_USERS = ("a\x00", "\x00", "bob\x00x", "a\ud800", "\udcff", "u" * 300, "Ab C")
#: Query parameters the GET routes of /api/v1 read (any route ignores the ones it does not know).
API_QUERY_PARAMS = (
    "user",
    "group",
    "pattern",
    "n",
    "last",
    "status",
    "limit",
    "before",
    "actor",
    "repository",
    "action",
    "since",
    "until",
    "package",
    "advisory",
    "version",
    "force",
    "name",
    "namespace",
)


@pytest.mark.services
async def test_hostile_user_names_on_postgresql_are_a_4xx_not_a_500(postgres_url: str, tmp_path: Path) -> None:
    """PostgreSQL refuses NUL in text: a user name that reached a query was a 500 on the grant,
    user and token routes; and every GET of /api/v1 with a NUL (or an invalid UTF-8 escape) in
    any query parameter answers 4xx (or 200), never 500."""
    import uuid

    from tests.support.postgres import create_database

    url = create_database(postgres_url, "hu_" + uuid.uuid4().hex[:12]).replace("postgresql+asyncpg://", "postgresql://")
    async with app_client(tmp_path, auth=TOKEN_MODE, database={"url": url, "auto_migrate": True}) as c:
        await add_user(c, "alice", "alice-Pw-1")
        for user in HOSTILE_USERS:
            r = await c.post("/api/v1/grants", json={"user": user, "pattern": "team/*", "actions": "pull"}, headers=ADMIN)
            assert r.status == 400, (user[:10], r.status, await r.text())
            r = await c.post("/api/v1/tokens", json={"user": user, "name": "t"}, headers=ADMIN)
            assert r.status == 400, (user[:10], r.status, await r.text())
            if any("\ud800" <= ch <= "\udfff" for ch in user):
                continue  # a URL cannot carry a lone surrogate as text: the raw escapes below do
            r = await c.delete("/api/v1/grants", params={"user": user, "pattern": "team/*"}, headers=ADMIN)
            assert r.status == 400, (user[:10], r.status, await r.text())
            r = await c.get("/api/v1/grants", params={"user": user}, headers=ADMIN)
            assert r.status == 400, (user[:10], r.status, await r.text())
            r = await c.get("/api/v1/tokens", params={"user": user}, headers=ADMIN)
            assert r.status == 400, (user[:10], r.status, await r.text())
        for raw in ("a%00", "%00", "a%ED%A0%80", "%FF", "%C0%80"):
            for method, path in (("DELETE", "/api/v1/users/"), ("GET", "/api/v1/users/")):
                r = await c.request(method, URL(path + raw, encoded=True), headers=ADMIN)
                assert r.status in (400, 404), (method, raw, r.status, await r.text())
            r = await c.put(URL("/api/v1/users/" + raw + "/password", encoded=True), json={"password": "x-Pw-123"}, headers=ADMIN)
            assert r.status in (400, 404), (raw, r.status, await r.text())
            for query in (f"user={raw}", f"user=alice&pattern={raw}"):
                for method in ("GET", "DELETE"):
                    r = await c.request(method, URL(f"/api/v1/grants?{query}", encoded=True), headers=ADMIN)
                    assert r.status in (200, 400, 404), (method, query, r.status, await r.text())
                r = await c.get(URL(f"/api/v1/tokens?{query}", encoded=True), headers=ADMIN)
                assert r.status in (200, 400), (query, r.status, await r.text())
        # the sweep: every GET route of /api/v1, a hostile value in each query parameter in turn
        gets = sorted(
            {
                route.resource.canonical
                for route in c.app.router.routes()
                if route.method == "GET" and route.resource is not None and route.resource.canonical.startswith("/api/v1")
            }
        )
        assert "/api/v1/grants" in gets and "/api/v1/audit" in gets
        failed: list[tuple[str, str, str, int]] = []
        for canonical in gets:
            path = re.sub(r"\{[^}]+\}", "alice", canonical)
            for param in API_QUERY_PARAMS:
                for raw in ("%00", "x%00y", "%ED%A0%80", "%FF"):
                    r = await c.get(URL(f"{path}?{param}={raw}", encoded=True), headers=ADMIN)
                    if r.status >= 500:
                        failed.append((path, param, raw, r.status))
            path = re.sub(r"\{[^}]+\}", "a%00", canonical)  # and in the path
            r = await c.get(URL(path, encoded=True), headers=ADMIN)
            if r.status >= 500:
                failed.append((path, "", "", r.status))
        assert failed == [], failed
        assert (await c.get("/api/v1/grants", headers=ADMIN)).status == 200


async def _store_refuses_hostile_text(url: str, *, nul: bool) -> None:
    """Straight to the store, past every validation: the metadata layer's translation turns text
    the database cannot store into TextUnstorable (400), and the database stays usable."""
    from moorage import errors
    from moorage.metadata.auth_store import AuthStore
    from moorage.metadata.db import Database

    db = Database(url)
    try:
        await db.migrate()
        store = AuthStore(db)
        hostile = ["a\ud800", "\udcff"] + (["a\x00", "\x00"] if nul else [])
        for name in hostile:
            with pytest.raises(errors.TextUnstorable) as info:
                await store.list_grants(name)
            assert info.value.status == 400 and info.value.code == "UNSUPPORTED"
            with pytest.raises(errors.TextUnstorable):
                await store.create_user(name, None)
        assert await store.list_grants("alice") == []
    finally:
        await db.close()


@pytest.mark.services
async def test_the_metadata_layer_turns_unstorable_text_into_a_400_on_postgresql(postgres_url: str) -> None:
    import uuid

    from moorage.config import Settings
    from tests.support.postgres import create_database

    url = Settings(database={"url": create_database(postgres_url, "ht_" + uuid.uuid4().hex[:12])}).database_url
    await _store_refuses_hostile_text(url, nul=True)


async def test_the_metadata_layer_turns_unstorable_text_into_a_400_on_sqlite(tmp_path: Path) -> None:
    await _store_refuses_hostile_text(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}", nul=False)


@pytest.mark.parametrize("pattern", ["Team/*", "team//app", "team app", "team/*\n"])
async def test_a_grant_the_revoke_would_refuse_is_refused_for_users_and_groups_alike(client: TestClient, pattern: str) -> None:
    """User and group grants share one validation in the service (issue 20).  The user grant's
    copy once checked only that the pattern was storable: ``Team/*`` was stored through the
    service (so through the CLI, the UI ...), and its revoke, which checks the grammar, refused
    it -- a grant nobody could take back.  Now both holders get the same 400, nothing stored,
    nothing audited."""
    from moorage import errors
    from moorage.api.common import ACCOUNTS
    from moorage.registry.principal import Principal

    await add_user(client, "gina", "gina-Pw-1234")
    service = client.app[ACCOUNTS]
    admin = Principal.operator("cli", "cli:root")
    for add in (service.add_grant, service.add_group_grant):
        holder = "gina" if add == service.add_grant else "developers"
        with pytest.raises(errors.RegistryError) as refused:
            await add(admin, holder, pattern, "pull")
        assert refused.value.status == 400 and "invalid repository pattern" in refused.value.message
    r = await client.get("/api/v1/grants", params={"user": "gina"}, headers=ADMIN)
    assert (await r.json())["grants"] == []
    assert await _group_grants(client) == []
    assert await audit(client, action="grant.add") == [] and await audit(client, action="group_grant.add") == []
