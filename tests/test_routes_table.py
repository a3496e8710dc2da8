"""Every route is declared once, with its access rule and OpenAPI operation
(:mod:`moorage.api.routing`), the app records what it registered, and the auth middleware decides
by that record -- checked as an attacker would.

* every route the full app registers (every extension on, in each ``auth.mode``) has a declared
  rule and, unless it is a web-UI page or static file, an OpenAPI operation: by construction,
  since only :func:`~moorage.api.routing.add_routes` gives a route a rule; and every route name
  constant of :mod:`moorage.api.routes` is a registered route in some mode;
* a route registered around the declarations is refused in every mode (fail closed), in process
  -- also one slipped onto a declared route's resource, under its name;
* no registration under ``moorage/`` names its route with a string literal (an AST scan): the
  names are the constants of :mod:`moorage.api.routes`, so a typo is an import error;
* against a real ``moorage serve`` in token mode (and htpasswd mode), every route of the
  table gets, from an anonymous caller, from a signed-in user with no rights, and from an
  administrator holding a *scoped* access token, exactly the denial its rule names -- and an
  administrator is not denied (so a server that refused everything would fail here too).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from aiohttp import web

from moorage.api import routes as route_names
from moorage.api.routes import Rule
from moorage.api.routing import ROUTE_REGISTRY, UNDOCUMENTED, RouteTable, add_routes
from moorage.composition import build_app
from moorage.config import Settings
from tests.support.authsrv import ADMIN_PASSWORD, HTTP_TIMEOUT, auth_env, get_token
from tests.support.registry_proc import RegistryProcess, start_moorage, write_htpasswd

#: Every extension that registers routes, on (proxy and mirror rules need configuring).
FULL: dict[str, Any] = {
    "proxy": {
        "upstreams": [{"name": "hub", "url": "http://127.0.0.1:9", "namespace": "hub"}],
        "mirror_rules": [{"name": "r", "src": "127.0.0.1:9/a", "dst": "127.0.0.1:9/b", "interval": 86400}],
    }
}
MODES = ("none", "htpasswd", "token")
ADMIN = ("admin", ADMIN_PASSWORD)
MALLORY = ("mallory", "mallory-Pw-1")
HT_USER = ("hank", "hank-Pw-1")
#: Rules under which the handler, not the middleware, decides (written out here, not imported).
HANDLER_DECIDES = {Rule.PUBLIC, Rule.TOKEN_SERVER, Rule.SESSION, Rule.METRICS}


def _settings(mode: str, data: Path) -> Settings:
    auth: dict[str, Any] = {"mode": mode, "htpasswd": {"path": str(data / "htpasswd")}}
    if mode == "token":  # OpenID Connect sign-in registers routes of its own (nothing is contacted)
        auth["oidc"] = {"issuer": "http://127.0.0.1:9/oidc", "client_id": "moorage", "client_secret": "x"}
    return Settings(data=data, auth=auth, **FULL)


def _app(mode: str, data: Path = Path("/nonexistent")) -> web.Application:
    return build_app(_settings(mode, data))


def _routes(mode: str, data: Path = Path("/nonexistent")) -> list[tuple[str, str, str]]:
    """(route name, method, path template) of every route the full app registers in ``mode``."""
    app = _app(mode, data)
    out = []
    for route in app.router.routes():
        resource = route.resource
        canonical = resource.canonical if resource is not None else ""
        out.append((str(route.name), route.method, canonical))
    return out


def _rules(mode: str) -> dict[tuple[str, str, str], Rule | None]:
    """(name, method, path) -> the rule the app's registry holds for that route object (None:
    the route has no declaration)."""
    app = _app(mode)
    registry = app[ROUTE_REGISTRY]
    out = {}
    for route in app.router.routes():
        spec = registry.spec_of(route)
        canonical = route.resource.canonical if route.resource is not None else ""
        out[(str(route.name), route.method, canonical)] = None if spec is None else spec.rule
    return out


def _is_ui(name: str) -> bool:
    return name in route_names.UI_ROUTES


# -- every route is declared -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_every_registered_route_has_a_rule_and_a_doc(mode: str) -> None:
    app = _app(mode)
    registry = app[ROUTE_REGISTRY]
    missing, undocumented, stray_ui_docs = [], [], []
    for route in app.router.routes():
        where = f"{route.method} {route.resource.canonical if route.resource else '?'} ({route.name})"
        spec = registry.spec_of(route)
        if spec is None:
            missing.append(where)
            continue
        assert spec.name == route.name, where  # the name is the declaration's
        if _is_ui(spec.name):
            if spec.doc is not UNDOCUMENTED:
                stray_ui_docs.append(where)
        elif spec.doc is UNDOCUMENTED:
            undocumented.append(where)
    assert missing == [], f"routes without a declared rule: {missing}"
    assert undocumented == [], f"API routes without an OpenAPI operation: {undocumented}"
    assert stray_ui_docs == [], f"web-UI routes in the OpenAPI document: {stray_ui_docs}"


def test_every_route_name_has_a_route() -> None:
    """Each name constant of moorage.api.routes names a route of some mode (no dead names)."""
    names = {v for k, v in vars(route_names).items() if k.isupper() and isinstance(v, str)}
    registered = {n for mode in MODES for n, _, _ in _routes(mode)}
    assert sorted(names - registered) == []


def test_one_name_per_route_whatever_the_mode() -> None:
    """A (method, path) has the same route name in every mode that registers it (metrics labels
    and logs stay comparable across modes; there used to be two names for eleven routes)."""
    by_route: dict[tuple[str, str], set[str]] = {}
    for mode in MODES:
        for n, m, p in _routes(mode):
            if not (m == "HEAD" and (n.endswith("_get") or n in (route_names.MANIFEST_GET, route_names.BLOB_GET))):
                by_route.setdefault((m, p), set()).add(n)
    assert {k: v for k, v in by_route.items() if len(v) > 1} == {}


def test_a_declaration_needs_name_rule_and_doc() -> None:
    table = RouteTable()

    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    with pytest.raises(TypeError):
        table.add_route("GET", "/x", handler, name="x", doc=UNDOCUMENTED)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        table.add_route("GET", "/x", handler, name="x", rule="admin", doc=UNDOCUMENTED)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        table.add_route("GET", "/x", handler, name="x", rule=Rule.ADMIN, doc={"summary": "no operationId"})
    with pytest.raises(ValueError):  # an API route must say what it does
        table.add_route("GET", "/x", handler, name="x", rule=Rule.ADMIN, doc=UNDOCUMENTED)
    table.add_route("GET", "/x", handler, name="x", rule=Rule.SESSION, doc=UNDOCUMENTED)  # a web-UI page
    with pytest.raises(TypeError):
        table.get("/x", name="x", rule=Rule.ADMIN)  # type: ignore[call-arg]


# -- the table says what the URL space promises ----------------------------------------------------
def policy(method: str, template: str) -> Rule:
    """The access policy as the docs state it, by method and path -- written apart from the table,
    so a wrong entry there (or a route registered under the wrong name) shows up here."""
    if template in ("/v2/", "/v2"):
        return Rule.REGISTRY
    if template == "/v2/_catalog":
        return Rule.CATALOG
    if template.startswith("/v2/"):
        if "/blobs/uploads" in template or method in ("POST", "PUT", "PATCH"):
            return Rule.PUSH
        return Rule.DELETE if method == "DELETE" else Rule.PULL
    if template == "/auth/token":
        return Rule.TOKEN_SERVER
    if template in ("/auth/jwks", "/healthz", "/readyz", "/api/openapi.json"):
        return Rule.PUBLIC
    if template == "/metrics":
        return Rule.METRICS
    if template == "/" or template.startswith(("/ui/", "/static", "/auth/oidc/")):
        return Rule.SESSION  # (/auth/oidc/: the browser's OpenID Connect sign-in)
    if template.startswith(("/api/v1/me", "/api/v1/webhooks", "/api/v1/audit")):
        return Rule.AUTHENTICATED  # (webhooks, audit: the handler narrows to the caller's namespaces)
    if template.startswith(("/api/v1/insight/images/", "/api/v1/insight/search", "/api/v1/insight/status")):
        return Rule.VISIBLE
    assert template.startswith("/api/v1/"), f"a route outside the documented URL space: {method} {template}"
    return Rule.ADMIN


@pytest.mark.parametrize("mode", MODES)
def test_the_declared_rules_keep_the_documented_policy(mode: str) -> None:
    wrong = sorted(
        f"{m} {p} ({n}): declared {rule.value}, policy {policy(m, p).value}"
        for (n, m, p), rule in _rules(mode).items()
        if rule is not None and rule is not policy(m, p)
    )
    assert wrong == []


# -- route names are the table's constants ----------------------------------------------------------
PACKAGE = Path(__file__).resolve().parents[1] / "moorage"
#: Methods that register a route (aiohttp's router, ``RouteTableDef`` decorators, ``web.get`` ...).
_REGISTRARS = frozenset(
    {"add_route", "add_get", "add_post", "add_put", "add_patch", "add_delete", "add_head", "add_static", "add_view"}
    | {"route", "get", "post", "put", "patch", "delete", "head", "view", "static"}
)


def literal_route_names(source: str, filename: str = "<source>") -> tuple[int, list[str]]:
    """(registrations seen, registrations whose ``name=`` holds a string literal) in ``source``.
    Any literal counts: ``"x"``, ``f"x_{y}"``, ``prefix + "x"``, ``"a" if t else "b"``."""
    seen, bad = 0, []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if called not in _REGISTRARS:  # (a bare name: moorage.api.routing.add_static)
            continue
        for kw in node.keywords:
            if kw.arg != "name":
                continue
            seen += 1
            if any(
                isinstance(n, ast.JoinedStr) or (isinstance(n, ast.Constant) and isinstance(n.value, str))
                for n in ast.walk(kw.value)
            ):
                bad.append(f"{filename}:{node.lineno}: name={ast.unparse(kw.value)}")
    return seen, bad


def _scan_package() -> tuple[list[str], list[str]]:
    """(files that register routes, registrations with a literal name) under ``moorage/``."""
    files, bad = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = str(path.relative_to(PACKAGE.parent))
        n, b = literal_route_names(path.read_text(), name)
        files += [name] if n else []
        bad += b
    return files, bad


def test_route_registrations_use_the_name_constants() -> None:
    # In a process of its own (``python -m tests.test_routes_table``): CPython 3.11's ast is not
    # safe while another thread of this process parses (see tests/test_import_graph.py).
    cp = subprocess.run(
        [sys.executable, "-m", "tests.test_routes_table"], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=120
    )
    assert cp.returncode == 0, cp.stderr
    files, bad = json.loads(cp.stdout)
    assert bad == [], "route names must be constants of moorage.api.routes, not string literals:\n" + "\n".join(bad)
    # the scan reaches the core and every extension (one that matched nothing would pass above)
    for module in (
        "api/blobs.py",
        "api/uploads.py",
        "api/manifests.py",
        "gc/admin_http.py",
        "insight/http.py",
        "auth/token_server.py",
    ):
        assert f"moorage/{module}" in files, files
    for module in ("ui/manage.py", "ui/setup.py", "events/api.py", "proxy/schedule.py", "proxy/setup.py", "metrics.py"):
        assert f"moorage/{module}" in files, files


def test_the_scan_sees_literal_route_names() -> None:
    source = """
from aiohttp import web
from moorage.api import routes as route_names
routes = web.RouteTableDef()
@routes.get("/a", name="a_literal")
async def a(request): ...
@routes.get("/b", name=route_names.BASE)
async def b(request): ...
def setup(app, t):
    app.router.add_get("/c", a, name="api_v1_" + "c")
    app.router.add_post("/d", a, name=f"api_v1_{t}")
    app.router.add_delete("/e", a, name="e1" if t else "e2")
    app.router.add_put("/f", a, name=route_names.PROXY_STATUS.pick(t))
    web.get("/g", a, name="g")
    app.router.add_static("/static/", ".", name="static_literal")
    logging.getLogger(name="not a route")
"""
    seen, bad = literal_route_names(source)
    assert seen == 8
    assert [line.split(": ", 1)[1] for line in bad] == [
        "name='a_literal'",
        "name='api_v1_' + 'c'",
        "name=f'api_v1_{t}'",
        "name='e1' if t else 'e2'",
        "name='g'",
        "name='static_literal'",
    ]


# -- fail closed ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_a_route_registered_around_the_declarations_is_refused(mode: str, tmp_path: Path) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from moorage.api.extension import ExtensionContext
    from moorage.composition import default_extensions

    write_htpasswd(tmp_path / "htpasswd", dict([HT_USER]))
    settings = _settings(mode, tmp_path)

    async def leaky(request: web.Request) -> web.Response:
        return web.json_response({"secret": True})

    def sneak(ctx: ExtensionContext) -> None:  # an extension going around moorage.api.routing
        ctx.app.router.add_get("/api/v1/forgotten", leaky, name="forgotten_route")
        ctx.app.router.add_get("/api/v1/unnamed", leaky)
        if mode != "token":  # the name of a declared route (token mode registers that one itself)
            ctx.app.router.add_get("/api/v1/borrowed", leaky, name=route_names.ME)

    app = build_app(settings, [*default_extensions(settings), sneak])
    # a route slipped onto a declared route's resource: same name, same path, no declaration
    app.router.named_resources()[route_names.HEALTHZ].add_route("POST", leaky)
    sneaked = [("GET", "/api/v1/forgotten"), ("GET", "/api/v1/unnamed"), ("POST", "/healthz")]
    if mode != "token":
        sneaked.append(("GET", "/api/v1/borrowed"))
    async with TestClient(TestServer(app)) as client:
        for method, path in sneaked:
            for auth in (None, HT_USER, ADMIN):
                headers = {} if auth is None else {"Authorization": _basic(*auth)}
                r = await client.request(method, path, headers=headers)
                body = await r.json()
                assert r.status == 403 and body["errors"][0]["code"] == "DENIED", (mode, method, path, r.status, body)
                assert "secret" not in body
        r = await client.get("/healthz")  # a declared route still answers
        assert r.status == 200


async def test_add_routes_records_rule_and_doc_on_the_app() -> None:
    table = RouteTable()

    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    doc = {"operationId": "probe", "responses": {}}
    table.add_route("GET", "/probe/{id}", handler, name="probe", rule=Rule.ADMIN, doc=doc)
    app = web.Application()
    add_routes(app, table)
    registry = app[ROUTE_REGISTRY]
    routes = list(app.router.routes())
    assert sorted(r.method for r in routes) == ["GET", "HEAD"]  # as aiohttp's add_get
    assert all(registry.spec_of(r) is not None and registry.spec_of(r).rule is Rule.ADMIN for r in routes)  # type: ignore[union-attr]
    assert [(t, s.doc) for t, s in registry.templates()] == [("/probe/{id}", doc)]


def _basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- as an attacker, against the real server ---------------------------------------------------------
#: Path parameters: a repository no test user has rights on, and ids that exist nowhere.
_VALUES = {
    "name": "victim/app",
    "reference": "latest",
    "digest": "sha256:" + "a" * 64,
    "ref": "latest",
    "upload_id": "0123456789abcdef0123456789abcdef",
    "id": "0123456789abcdef",
    "user": "nobody",
    "rule": "nosuchrule",
    "namespace": "victim",
    "advisory": "CVE-2024-0001",
    "hook": "nobody",
}


def _path(template: str) -> str:
    if template.startswith("/static"):
        return "/static/nosuchfile.css"
    if template.startswith(("/api/v1/users/", "/api/v1/webhooks/")):
        template = template.replace("{name}", "nobody")  # one path component there
    return re.sub(r"\{(\w+)[^}]*\}", lambda m: _VALUES[m.group(1)], template)


def _cases(mode: str) -> list[Any]:
    seen: set[tuple[str, str]] = set()
    out = []
    for name, method, template in sorted(_routes(mode)):
        if (name, method) in seen:
            continue
        seen.add((name, method))
        out.append(pytest.param(name, method, template, id=f"{name}-{method}"))
    return out


def _config(tmp: Path) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "config.yml"
    config.write_text(yaml.safe_dump(FULL))
    return config


@pytest.fixture(scope="module")
def token_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    tmp = tmp_path_factory.mktemp("routes-token")
    env = {**auth_env("token"), "MOORAGE_AUTH__LOGIN_RATE_LIMIT": "100000"}
    proc = start_moorage(
        tmp / "srv", env=env, extra_args=["--config", str(_config(tmp))], username="admin", password=ADMIN_PASSWORD
    )
    try:
        r = requests.post(
            f"{proc.url}/api/v1/users", json={"name": MALLORY[0], "password": MALLORY[1]}, auth=ADMIN, timeout=HTTP_TIMEOUT
        )
        assert r.status_code == 201, r.text
        # the administrator's own access token, scoped to one repository: less than admin rights
        r = requests.post(
            f"{proc.url}/api/v1/me/tokens", json={"name": "ci", "scope": ["ci/*:pull"]}, auth=ADMIN, timeout=HTTP_TIMEOUT
        )
        assert r.status_code == 201, r.text
        proc.scoped_admin = r.json()["token"]  # type: ignore[attr-defined]
        yield proc
    finally:
        proc.stop()


def _send(srv: RegistryProcess, method: str, path: str, headers: dict[str, str] | None = None) -> requests.Response:
    body = b"{}" if method in ("POST", "PUT", "PATCH") else None
    return requests.request(
        method,
        srv.url + path,
        data=body,
        allow_redirects=False,
        timeout=HTTP_TIMEOUT,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _code(r: requests.Response) -> str | None:
    try:
        return r.json()["errors"][0]["code"]  # type: ignore[no-any-return]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _denied(r: requests.Response, status: int, code: str, method: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    if method != "HEAD":
        assert _code(r) == code, r.text[:300]


def _scope_of(challenge: str) -> list[str]:
    m = re.search(r'scope="([^"]*)"', challenge)
    return m.group(1).split(" ") if m else []


@pytest.mark.parametrize(("name", "method", "template"), _cases("token"))
def test_token_mode_denies_what_the_rule_says(token_srv: RegistryProcess, name: str, method: str, template: str) -> None:
    rule = policy(method, template)  # what the docs promise, not what the table says
    path = _path(template)
    anonymous = _send(token_srv, method, path)
    assert anonymous.status_code < 500, (anonymous.status_code, anonymous.text[:300])
    as_mallory = _send(token_srv, method, path, {"Authorization": _basic(*MALLORY)})
    as_scoped_admin = _send(token_srv, method, path, {"Authorization": _basic("admin", token_srv.scoped_admin)})  # type: ignore[attr-defined]
    as_admin = _send(token_srv, method, path, {"Authorization": _basic(*ADMIN)})
    for r in (as_mallory, as_scoped_admin, as_admin):
        assert r.status_code < 500, (r.status_code, r.text[:300])

    if rule in (Rule.ADMIN, Rule.AUTHENTICATED):
        _denied(anonymous, 401, "UNAUTHORIZED", method)
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer realm=")
        # a bearer token from /auth/token names a user too: the same answers
        mallory_jwt = {"Authorization": f"Bearer {get_token(token_srv, [], MALLORY)}"}
        as_mallory_jwt = _send(token_srv, method, path, mallory_jwt)
        if rule is Rule.ADMIN:
            _denied(as_mallory, 403, "DENIED", method)
            _denied(as_mallory_jwt, 403, "DENIED", method)
            _denied(as_scoped_admin, 403, "DENIED", method)
        elif (method, template) == ("POST", "/api/v1/webhooks"):
            # past the route rule, the webhook service refuses: with events.webhooks.namespace_admins
            # off (the default) only administrators create webhooks (issue 20)
            for r in (as_mallory, as_mallory_jwt):
                _denied(r, 403, "DENIED", method)
                assert "administrators" in r.text
        else:
            assert as_mallory.status_code not in (401, 403), (as_mallory.status_code, as_mallory.text[:300])
            assert as_mallory_jwt.status_code not in (401, 403), as_mallory_jwt.text[:300]
        assert as_admin.status_code not in (401, 403), (as_admin.status_code, as_admin.text[:300])
        # a wrong password is 401, never the route's answer
        _denied(_send(token_srv, method, path, {"Authorization": _basic("admin", "wrong")}), 401, "UNAUTHORIZED", method)
    elif rule in (Rule.REGISTRY, Rule.CATALOG, Rule.PULL, Rule.PUSH, Rule.DELETE):
        # the registry takes bearer tokens only: no credentials, or basic ones, get the challenge
        for r in (anonymous, as_mallory, as_admin):
            _denied(r, 401, "UNAUTHORIZED", method)
            assert r.headers["WWW-Authenticate"].startswith("Bearer realm=")
        scopes = _scope_of(anonymous.headers["WWW-Authenticate"])
        expected = {
            Rule.REGISTRY: [],
            Rule.CATALOG: ["registry:catalog:*"],
            Rule.PULL: ["repository:victim/app:pull"],
            Rule.PUSH: ["repository:victim/app:pull,push"],
            Rule.DELETE: ["repository:victim/app:delete"],
        }[rule]
        assert scopes == expected, anonymous.headers["WWW-Authenticate"]
        # mallory asks for exactly that scope, as a client would, and gets a token without it
        token = get_token(token_srv, scopes, MALLORY)
        retried = _send(token_srv, method, path, {"Authorization": f"Bearer {token}"})
        if rule in (Rule.REGISTRY, Rule.CATALOG):
            assert retried.status_code not in (401, 403), retried.text[:300]
        else:
            _denied(retried, 401, "UNAUTHORIZED", method)
            assert 'error="insufficient_scope"' in retried.headers["WWW-Authenticate"]
            admin_token = get_token(token_srv, scopes, ADMIN)
            as_admin_jwt = _send(token_srv, method, path, {"Authorization": f"Bearer {admin_token}"})
            assert as_admin_jwt.status_code not in (401, 403), as_admin_jwt.text[:300]
    elif rule is Rule.METRICS:  # metrics.access auto = admin with auth on
        _denied(anonymous, 401, "UNAUTHORIZED", method)
        _denied(as_mallory, 403, "DENIED", method)
        assert as_admin.status_code == 200
    elif rule is Rule.SESSION:
        # the UI's own rules: basic credentials are no session; nothing changes without a
        # session and its CSRF token, and nothing private is shown
        for r in (anonymous, as_mallory):
            if method == "POST":
                assert r.status_code in (303, 403), (r.status_code, r.text[:300])
            else:
                assert r.status_code in (200, 303, 304, 404), (r.status_code, r.text[:300])
            if r.status_code == 303:
                assert r.headers["Location"].startswith("/ui/login"), r.headers["Location"]
    else:
        assert rule in HANDLER_DECIDES or rule is Rule.VISIBLE
        if rule is Rule.VISIBLE and "/images/" in path:  # the handler narrows to what the caller may see
            if method == "POST":  # a scan needs push on the repository
                _denied(anonymous, 403, "DENIED", method)
                _denied(as_mallory, 403, "DENIED", method)
            else:  # victim/app is nobody's: not even its existence shows
                assert anonymous.status_code == 404 and as_mallory.status_code == 404
            assert as_admin.status_code not in (401, 403), as_admin.text[:300]
        else:
            for r in (anonymous, as_mallory):
                assert r.status_code not in (401, 403), (rule, r.status_code, r.text[:300])


@pytest.fixture(scope="module")
def htpasswd_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    tmp = tmp_path_factory.mktemp("routes-htpasswd")
    htpasswd = write_htpasswd(tmp / "htpasswd", dict([HT_USER]))
    env = {
        "MOORAGE_AUTH__MODE": "htpasswd",
        "MOORAGE_AUTH__HTPASSWD__PATH": str(htpasswd),
        "MOORAGE_AUTH__LOGIN_RATE_LIMIT": "100000",
    }
    proc = start_moorage(tmp / "srv", env=env, extra_args=["--config", str(_config(tmp))])
    try:
        yield proc
    finally:
        proc.stop()


@pytest.mark.parametrize(("name", "method", "template"), _cases("htpasswd"))
def test_htpasswd_mode_denies_what_the_rule_says(htpasswd_srv: RegistryProcess, name: str, method: str, template: str) -> None:
    """Every htpasswd user may do everything: every rule but those the handler decides needs
    valid basic credentials (the insight API used to answer anonymous callers here)."""
    rule = policy(method, template)
    path = _path(template)
    anonymous = _send(htpasswd_srv, method, path)
    wrong = _send(htpasswd_srv, method, path, {"Authorization": _basic(HT_USER[0], "wrong")})
    user = _send(htpasswd_srv, method, path, {"Authorization": _basic(*HT_USER)})
    for r in (anonymous, wrong, user):
        assert r.status_code < 500, (r.status_code, r.text[:300])
    if rule in HANDLER_DECIDES:
        if rule is Rule.METRICS:  # metrics.access auto = admin; every htpasswd user is one
            _denied(anonymous, 401, "UNAUTHORIZED", method)
            assert user.status_code == 200
        return
    for r in (anonymous, wrong):
        _denied(r, 401, "UNAUTHORIZED", method)
        assert r.headers["WWW-Authenticate"].startswith("Basic realm="), r.headers
    assert user.status_code not in (401, 403), (user.status_code, user.text[:300])


if __name__ == "__main__":  # the package scan, for test_route_registrations_use_the_name_constants
    print(json.dumps(_scan_package()))
