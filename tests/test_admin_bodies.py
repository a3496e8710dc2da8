"""Admin API request bodies (``moorage/api/admin_models.py``) as an attacker sends them: wrong
types, truthy strings where booleans belong, NaN and huge numbers, odd Unicode, other shapes.
Each is a 4xx with the OCI error body naming the field -- never a 500, never a change -- and the
OpenAPI document publishes the very models the handlers validate with."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from moorage.api import admin_models
from moorage.api.openapi import document_for, model_schema
from tests.support.authsrv import ADMIN_PASSWORD, HTTP_TIMEOUT, start_auth_server
from tests.support.registry_proc import RegistryProcess

ADMIN = ("admin", ADMIN_PASSWORD)

#: (method, path, body, expected code) -- bodies that must be refused.
BAD: list[tuple[str, str, Any, str]] = [
    ("POST", "/api/v1/users", {"name": "eve", "admin": "false"}, "UNSUPPORTED"),  # was: truthy -> admin!
    ("POST", "/api/v1/users", {"name": "eve", "admin": 1}, "UNSUPPORTED"),
    ("POST", "/api/v1/users", {"name": "eve", "robot": "yes"}, "UNSUPPORTED"),
    ("POST", "/api/v1/users", {"name": 5}, "UNSUPPORTED"),
    ("POST", "/api/v1/users", {"name": "Ünïcode"}, "NAME_INVALID"),
    ("POST", "/api/v1/users", {"name": "eve\u200b"}, "NAME_INVALID"),
    ("POST", "/api/v1/users", {"name": "e" * 65}, "NAME_INVALID"),
    ("POST", "/api/v1/users", {"name": "eve", "password": ""}, "UNSUPPORTED"),
    ("POST", "/api/v1/users", {"name": "eve", "password": ["x"]}, "UNSUPPORTED"),
    ("POST", "/api/v1/users", {}, "UNSUPPORTED"),
    ("POST", "/api/v1/users", [{"name": "eve"}], "UNSUPPORTED"),
    ("POST", "/api/v1/users", "eve", "UNSUPPORTED"),
    ("POST", "/api/v1/users", None, "UNSUPPORTED"),
    ("PUT", "/api/v1/users/admin/password", {"password": 12345678}, "UNSUPPORTED"),
    ("PUT", "/api/v1/users/admin/password", {"password": None}, "UNSUPPORTED"),
    ("POST", "/api/v1/grants", {"user": "admin", "pattern": "team/*", "actions": "fly"}, "UNSUPPORTED"),
    ("POST", "/api/v1/grants", {"user": "admin", "pattern": "team/*", "actions": ""}, "UNSUPPORTED"),
    ("POST", "/api/v1/grants", {"user": "admin", "pattern": "team/*", "actions": {"pull": True}}, "UNSUPPORTED"),
    ("POST", "/api/v1/grants", {"user": "admin", "pattern": "team/*", "actions": [1]}, "UNSUPPORTED"),
    ("POST", "/api/v1/grants", {"user": "admin", "pattern": "Team/[a]", "actions": "pull"}, "UNSUPPORTED"),
    ("POST", "/api/v1/grants", {"user": "admin", "pattern": "a" * 300, "actions": "pull"}, "UNSUPPORTED"),
    ("POST", "/api/v1/grants", {"user": ["admin"], "pattern": "team/*", "actions": "pull"}, "UNSUPPORTED"),
    ("POST", "/api/v1/me/tokens", {"expires_in": True}, "UNSUPPORTED"),
    ("POST", "/api/v1/me/tokens", {"expires_in": -1}, "UNSUPPORTED"),
    ("POST", "/api/v1/me/tokens", {"expires_in": "3600"}, "UNSUPPORTED"),
    ("POST", "/api/v1/me/tokens", {"expires_in": 1e300}, "UNSUPPORTED"),
    ("POST", "/api/v1/me/tokens", {"name": "x" * 129}, "UNSUPPORTED"),
    ("POST", "/api/v1/me/tokens", {"scope": "team/*:pull"}, "UNSUPPORTED"),
    ("POST", "/api/v1/me/tokens", {"scope": ["team/*"]}, "UNSUPPORTED"),
    ("POST", "/api/v1/me/tokens", {"scope": ["team/*:fly"]}, "UNSUPPORTED"),
    ("POST", "/api/v1/tokens", {"name": "t"}, "UNSUPPORTED"),  # no user
    ("POST", "/api/v1/namespaces", {"name": "UPPER"}, "NAME_INVALID"),
    ("POST", "/api/v1/namespaces", {"name": "ns", "public": "true"}, "UNSUPPORTED"),
    ("PUT", "/api/v1/visibility", {"repository": "team/app"}, "UNSUPPORTED"),  # public missing
    ("PUT", "/api/v1/visibility", {"repository": "team/app", "public": 1}, "UNSUPPORTED"),
    ("PUT", "/api/v1/visibility", {"repository": "../etc", "public": True}, "NAME_INVALID"),
    ("PUT", "/api/v1/visibility", {"public": True}, "UNSUPPORTED"),
]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    proc = start_auth_server(tmp_path_factory.mktemp("admin-bodies"))
    try:
        yield proc
    finally:
        proc.stop()


def _users(srv: RegistryProcess) -> list[dict[str, Any]]:
    r = requests.get(f"{srv.url}/api/v1/users", auth=ADMIN, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200
    return r.json()["users"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("method", "path", "body", "code"), BAD, ids=[f"{m} {p} {json.dumps(b)[:40]}" for m, p, b, _ in BAD])
def test_bad_admin_body_is_a_400_naming_the_problem(srv: RegistryProcess, method: str, path: str, body: Any, code: str) -> None:
    before = _users(srv)
    r = requests.request(
        method,
        srv.url + path,
        data=json.dumps(body),
        auth=ADMIN,
        timeout=HTTP_TIMEOUT,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert r.headers["Content-Type"].split(";")[0] == "application/json"
    err = r.json()["errors"][0]
    assert err["code"] == code, err
    assert _users(srv) == before  # nothing was made


def test_nan_and_infinity_are_refused(srv: RegistryProcess) -> None:
    """Python's JSON reader accepts ``NaN``/``Infinity``; a lifetime of NaN must not slip past
    the bounds (NaN compares false with everything)."""
    for raw in (b'{"expires_in": NaN}', b'{"expires_in": Infinity}', b'{"expires_in": -Infinity}'):
        r = requests.post(
            f"{srv.url}/api/v1/me/tokens",
            data=raw,
            auth=ADMIN,
            timeout=HTTP_TIMEOUT,
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 400, (raw, r.status_code, r.text[:300])
    tokens = requests.get(f"{srv.url}/api/v1/me/tokens", auth=ADMIN, timeout=HTTP_TIMEOUT).json()["tokens"]
    assert tokens == []


def test_good_bodies_still_work_and_unknown_keys_are_ignored(srv: RegistryProcess) -> None:
    r = requests.post(
        f"{srv.url}/api/v1/users", json={"name": "robbie", "robot": True, "colour": "red"}, auth=ADMIN, timeout=HTTP_TIMEOUT
    )
    assert r.status_code == 201 and r.json()["robot"] is True and "password" not in r.json(), r.text
    r = requests.post(
        f"{srv.url}/api/v1/grants",
        json={"user": "robbie", "pattern": "team/*", "actions": ["push", "pull"]},
        auth=ADMIN,
        timeout=HTTP_TIMEOUT,
    )
    assert r.status_code == 201 and r.json()["actions"] == ["pull", "push"], r.text
    r = requests.post(
        f"{srv.url}/api/v1/tokens",
        json={"user": "robbie", "expires_in": 60, "scope": ["team/*:pull"]},
        auth=ADMIN,
        timeout=HTTP_TIMEOUT,
    )
    assert r.status_code == 201 and r.json()["name"] == "token" and r.json()["expires_at"] is not None, r.text
    r = requests.post(
        f"{srv.url}/api/v1/grants",
        json={"user": "ghost", "pattern": "team/*", "actions": "pull"},
        auth=ADMIN,
        timeout=HTTP_TIMEOUT,
    )
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NOT_FOUND"


def test_the_openapi_document_publishes_the_models(tmp_path: Path) -> None:
    from moorage.composition import build_app
    from moorage.config import Settings

    doc = document_for(build_app(Settings(data=tmp_path, auth={"mode": "token"})))
    schemas = doc["components"]["schemas"]
    bodies = {
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        for path, item in doc["paths"].items()
        if path.startswith("/api/v1/")
        for op in item.values()
        if "requestBody" in op
        and path.split("/")[3] in ("me", "users", "grants", "group-grants", "tokens", "namespaces", "visibility")
    }
    assert bodies == {m.__name__ for m in admin_models.MODELS}
    for model in admin_models.MODELS:
        assert schemas[model.__name__] == model_schema(model)
    assert '"type": "null"' not in json.dumps(doc)  # OpenAPI 3.0 spells it "nullable"
    assert schemas["UserCreate"]["properties"]["admin"] == {"default": False, "type": "boolean"}
    assert schemas["TokenCreate"]["properties"]["expires_in"]["nullable"] is True
