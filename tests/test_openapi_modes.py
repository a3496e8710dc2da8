"""``/api/openapi.json`` lists exactly the routes that answer in the running configuration
(issue 20): per ``auth.mode`` (none, htpasswd, token) against a real ``moorage serve`` with every
extension on,

* every path + method the document lists answers something other than a routing miss (405,
  or the 404 the router gives for no such route) -- the document used to list the token
  server and the admin API in every mode;
* every route registered in that mode (the API's: not the web UI's HTML pages, not static
  files) is listed;
* in process, per mode and with the extensions off: of every (method, path) any configuration's
  document lists, exactly those this app's document lists answer (the document is assembled
  from the routes the app declared: :mod:`moorage.api.routing`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from moorage.api.openapi import document_for
from moorage.composition import build_app
from moorage.config import Settings
from tests.support.authsrv import ADMIN_PASSWORD, HTTP_TIMEOUT, auth_env
from tests.support.registry_proc import RegistryProcess, start_moorage, write_htpasswd

FULL: dict[str, Any] = {
    "proxy": {
        "upstreams": [{"name": "hub", "url": "http://127.0.0.1:9", "namespace": "hub"}],
        "mirror_rules": [{"name": "r", "src": "127.0.0.1:9/a", "dst": "127.0.0.1:9/b", "interval": 86400}],
    }
}
HT_USER = ("hank", "hank-Pw-1")
MODES = ("none", "htpasswd", "token")
#: Values for the path parameters (any well-formed value: a missing resource is still an answer).
PARAMS = {
    "name": "ci/app",
    "reference": "latest",
    "digest": "sha256:" + "0" * 64,
    "upload_id": "0d6f0e5c-2f7e-4f0b-9a0d-5a0e9e0f0a01",
    "uuid": "0d6f0e5c-2f7e-4f0b-9a0d-5a0e9e0f0a01",
    "user": "nobody",
    "id": "1",
    "pattern": "ci/*",
    "namespace": "ci",
    "advisory": "TEST-1",
    "rule": "r",
}


def registered(router: Any) -> set[tuple[str, str]]:
    """(method, path template) of the app's routes (written apart from the code under test)."""
    found = set()
    for route in router.routes():
        if route.resource is not None:
            info = route.resource.get_info()
            found.add((route.method.lower(), str(info.get("formatter") or info.get("path") or route.resource.canonical)))
    return found


def _is_api(path: str) -> bool:
    return not (path == "/" or path.startswith(("/ui/", "/static")))


@pytest.fixture(scope="module", params=MODES)
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RegistryProcess, Any]]:
    mode = request.param
    tmp = tmp_path_factory.mktemp(f"openapi-{mode}")
    config = tmp / "config.yml"
    config.write_text(yaml.safe_dump(FULL))
    if mode == "token":
        env, creds = {**auth_env("token"), "MOORAGE_AUTH__LOGIN_RATE_LIMIT": "100000"}, ("admin", ADMIN_PASSWORD)
    elif mode == "htpasswd":
        htpasswd = write_htpasswd(tmp / "htpasswd", dict([HT_USER]))
        env = {
            "MOORAGE_AUTH__MODE": "htpasswd",
            "MOORAGE_AUTH__HTPASSWD__PATH": str(htpasswd),
            "MOORAGE_AUTH__LOGIN_RATE_LIMIT": "100000",
        }
        creds = HT_USER
    else:
        env, creds = {}, None
    proc = start_moorage(tmp / "srv", env=env, extra_args=["--config", str(config)])
    proc.mode = mode  # type: ignore[attr-defined]
    try:
        yield mode, proc, creds
    finally:
        proc.stop()


def _fill(template: str) -> str:
    def value(m: re.Match[str]) -> str:
        key = m.group(1)
        if key == "name" and not template.startswith("/v2/"):
            return "ci"  # a user, webhook or rule name: one path segment
        return PARAMS.get(key, "x")

    return re.sub(r"\{([^}:]+)(?::[^}]*)?\}", value, template)


def _routing_miss(r: requests.Response) -> bool:
    if r.status_code == 405:
        return True
    if r.status_code != 404:
        return False
    try:
        message = r.json()["errors"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return False
    return message.startswith(("no route for", "no API endpoint at"))


def test_listed_routes_answer(srv: Any) -> None:
    mode, proc, creds = srv
    doc = requests.get(f"{proc.url}/api/openapi.json", timeout=HTTP_TIMEOUT).json()
    missing = []
    for path, item in doc["paths"].items():
        for method in item:
            if method not in ("get", "put", "post", "delete", "patch", "head"):
                continue
            r = requests.request(
                method.upper(), proc.url + _fill(path), auth=creds, timeout=HTTP_TIMEOUT, allow_redirects=False, data=b""
            )
            if _routing_miss(r):
                missing.append(f"{method.upper()} {path} -> {r.status_code} {r.text[:100]}")
    assert missing == [], f"{mode}: listed but not answering: {missing}"


def test_registered_routes_are_listed(srv: Any, tmp_path: Path) -> None:
    mode, proc, _ = srv
    doc = requests.get(f"{proc.url}/api/openapi.json", timeout=HTTP_TIMEOUT).json()
    listed = {(m, p) for p, item in doc["paths"].items() for m in item}
    settings = Settings(data=tmp_path, auth={"mode": mode, "htpasswd": {"path": str(tmp_path / "htpasswd")}}, **FULL)
    have = {(m, p) for m, p in registered(build_app(settings).router) if _is_api(p) and m != "head"}
    assert sorted(have - listed) == [], f"{mode}: registered but not in /api/openapi.json"


#: Every extension that registers routes off (and no upstreams): a configuration with fewer routes.
OFF: dict[str, Any] = {"insight": {"enabled": False}, "events": {"enabled": False}, "ui": {"enabled": False}}
CONFIGS = [("none", FULL), ("htpasswd", FULL), ("token", FULL), ("none", OFF), ("token", OFF)]


def _settings(mode: str, extra: dict[str, Any], data: Path) -> Settings:
    return Settings(data=data, auth={"mode": mode, "htpasswd": {"path": str(data / "htpasswd")}}, **extra)


def _pairs(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m, p) for p, item in doc["paths"].items() for m in item if m != "parameters"}


@pytest.mark.parametrize(("mode", "extra"), CONFIGS, ids=[f"{m}-{'full' if e is FULL else 'off'}" for m, e in CONFIGS])
async def test_the_document_lists_exactly_what_answers(mode: str, extra: dict[str, Any], tmp_path: Path) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    candidates: set[tuple[str, str]] = set()
    for m, e in CONFIGS:
        candidates |= _pairs(document_for(build_app(_settings(m, e, Path("/nonexistent-not-opened")))))
    write_htpasswd(tmp_path / "htpasswd", dict([HT_USER]))
    app = build_app(_settings(mode, extra, tmp_path))
    listed = _pairs(document_for(app))
    assert listed <= candidates
    wrong = []
    async with TestClient(TestServer(app)) as client:
        served = await (await client.get("/api/openapi.json")).json()
        assert _pairs(served) == listed  # what the route serves is what document_for builds
        for method, path in sorted(candidates):
            url = _fill(path).replace("/mirror/r/", "/mirror/nosuchrule/")  # nothing is run
            r = await client.request(method.upper(), url, data=b"", allow_redirects=False)
            text = await r.text()
            miss = r.status == 405 or (r.status == 404 and ("no route for" in text or "no API endpoint at" in text))
            if miss == ((method, path) in listed):
                wrong.append(f"{method.upper()} {path}: {r.status}, {'listed' if (method, path) in listed else 'not listed'}")
    assert wrong == [], f"{mode}: the document and the routes disagree: {wrong}"
