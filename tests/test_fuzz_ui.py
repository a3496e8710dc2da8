"""Hostile input on every web-UI route (issue 21 item 5): the UI is not in ``/api/openapi.json``,
so the Schemathesis run never reaches it; this module does the same job for it with Hypothesis.

Every route the app's router names ``public_ui_*``/``ui_*`` (and every one of
``moorage.api.routes.UI_ROUTES`` that the configuration mounts) is driven with hostile path
parameters (huge, control characters, odd Unicode, ``..``, ``%00``, percent-encoded lone
surrogates), query strings (every parameter a UI handler reads, random extra ones, repeated keys,
huge values) and, for POST routes, form bodies with random fields, wrong types and huge values --
once signed in as the administrator (a valid session cookie, the form's CSRF token, a same-origin
``Origin``) and once anonymous.  Content is seeded first (a pushed image, a user, webhooks) so
the handlers go deep.  The assertion: never a 5xx, never a hang (a per-request timeout), and the
server still answers ``/v2/`` at the end.

Unit tier: the app runs in this process (tests/support/inproc.py), token auth, events on.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from moorage.api import routes as route_names
from tests.support.authsrv import bearer, push_image
from tests.support.http import OCI_INDEX, OCI_MANIFEST, sha256
from tests.support.inproc import InProcessRegistry

pytestmark = [
    pytest.mark.unit,
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning"),
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

ADMIN_PW = "admin-Pw-for-ui-fuzz"
ADMIN = ("admin", ADMIN_PW)
T = 10  # seconds: a request that takes longer is a hang
#: per route and identity: ~60 routes x 2 identities x 12 stays well under a minute (more, for a hunt:
#: MOORAGE_UI_FUZZ_EXAMPLES=200)
EXAMPLES = int(os.environ.get("MOORAGE_UI_FUZZ_EXAMPLES", "12"))

#: Every query parameter a UI handler reads (``grep request.query moorage/ui/*.py``) and the
#: ones the admin pages' ``_query_text``/``_query_id`` read.
QUERY_KEYS = (
    "q",
    "ns",
    "sort",
    "page",
    "tag",
    "digest",
    "next",
    "status",
    "sent",
    "actor",
    "action",
    "repository",
    "before",
    "state",
    "code",
    "error",
    "v",
)
#: Every form field a UI form has (templates' ``name="..."``, ``form.get`` in moorage/ui).
FORM_KEYS = (
    "action",
    "admin",
    "confirm",
    "delete_untagged",
    "digest",
    "expire_days",
    "expires_days",
    "format",
    "group",
    "keep_last",
    "keep_regex",
    "kind",
    "limit",
    "name",
    "namespace",
    "next",
    "password",
    "pattern",
    "public",
    "repositories",
    "repository",
    "scope",
    "secret",
    "tag",
    "tag_regex",
    "url",
    "user",
    "username",
)

#: Already percent-encoded hostile fragments (sent as they are).
RAW = (
    "%00",
    "..",
    "%2e%2e",
    "%2F",
    "%ED%A0%80",  # a lone surrogate, UTF-8-encoded
    "%ff%fe",
    "%C0%AF",  # overlong "/"
    "%0d%0aX-Injected:%201",
    "%",
    "%zz",
    "a%00b",
    "a" * 9000,
    "a/" * 2000 + "a",
    "sha256:" + "0" * 64,
    "sha256:" + "g" * 64,
    "sha512:" + "0" * 128,
    "9" * 40,
    "-1",
    "0",
    "%EF%BC%91",  # fullwidth digit one
    "%D9%A3",  # Arabic-Indic digit three
)
#: Hostile text values (encoded by :func:`enc`).
HOSTILE = (
    "",
    " ",
    "\x00",
    "\t\r\n",
    "\ud800",
    "\udfff",
    "\u202e",
    "\ufeff",
    "\U0001f600" * 50,
    "x" * 70_000,
    "[" * 5000,
    "../../etc/passwd",
    "/%09/evil.example/x",
    "//evil.example",
    "\\\\evil.example",
    "javascript:alert(1)",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "1e400",
    "NaN",
    "-0",
    "99999999999999999999999999",
    "true",
    "[]",
    "{}",
    "null",
)


#: multipart bodies: a good first part (the CSRF token), then random bytes, under odd boundaries
MULTIPART_TYPES = (
    "multipart/form-data; boundary=b",
    "multipart/form-data",
    "multipart/form-data; boundary=",
    'multipart/form-data; boundary="\x00"',
    "multipart/form-data; boundary=" + "b" * 5000,
    "multipart/mixed; boundary=b",
    "application/x-www-form-urlencoded; charset=utf-16",
    "application/x-www-form-urlencoded; charset=nope",
    "text/plain",
)
MULTIPART_BODY = b'--b\r\nContent-Disposition: form-data; name="csrf"\r\n\r\nCSRF\r\n--b\r\nContent-Disposition: form-data; name="name"; filename="x"\r\n\r\n'


def enc(value: str) -> str:
    """Percent-encode everything (lone surrogates as their UTF-8-shaped bytes)."""
    return quote(value, safe="", errors="surrogatepass")


@dataclass(frozen=True)
class Route:
    method: str
    name: str
    formatter: str  # "/ui/repo/{name}/-/manifest/{ref}"; "/static/{filename}" for the static files

    @property
    def params(self) -> list[str]:
        return re.findall(r"\{(\w+)", self.formatter)


def ui_routes(app: Any) -> list[Route]:
    """The UI routes of the router, mutating ones last (they may delete the seeded content)."""
    out: set[Route] = set()
    for r in app.router.routes():
        name = r.name or ""
        if not (name.startswith(("public_ui_", "ui_")) or name in route_names.UI_ROUTES) or r.method == "*":
            continue
        info = r.resource.get_info()
        fmt = info["prefix"] + "/{filename}" if "prefix" in info else info.get("formatter") or info["path"]
        out.add(Route(r.method, name, fmt))
    return sorted(out, key=lambda r: (r.method == "POST", "delete" in r.name, r.name, r.method))


def value_strategy(seeds: tuple[str, ...]) -> st.SearchStrategy[str]:
    """An encoded value: a seeded valid one, a raw hostile fragment, or hostile/random text."""
    return st.one_of(
        st.sampled_from(seeds).map(lambda s: quote(s, safe="/")) if seeds else st.nothing(),
        st.sampled_from(RAW),
        st.sampled_from(HOSTILE).map(enc),
        st.text(max_size=30).map(enc),
    )


# -- hostile content the pages must render ------------------------------------------------------
CONFIG_MT = "application/vnd.oci.image.config.v1+json"
HOSTILE_CONFIGS: dict[str, bytes] = {
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "types": b'{"architecture": 5, "os": [], "config": "x", "history": {"a": 1}, "rootfs": 1, "created": 12}',
    "inner": b'{"history": [1, "x", null, {"created_by": 7}], "config": {"Labels": [1], "Env": "x", "ExposedPorts": []}}',
    "notjson": b"\xff\xfe not json",
    "unicode": '{"os": "\u202e\ud800", "architecture": "\u0000", "created": "9999-99-99"}'.encode("utf-8", "surrogatepass"),
}


def _blob(reg: InProcessRegistry, repo: str, data: bytes, headers: dict[str, str]) -> str:
    digest = sha256(data)
    r = requests.post(f"{reg.url}/v2/{repo}/blobs/uploads/", params={"digest": digest}, data=data, headers=headers, timeout=T)
    assert r.status_code == 201, (r.status_code, r.text)
    return digest


def _manifest(reg: InProcessRegistry, repo: str, ref: str, body: bytes, media_type: str, headers: dict[str, str]) -> bool:
    r = requests.put(
        f"{reg.url}/v2/{repo}/manifests/{ref}", data=body, headers={**headers, "Content-Type": media_type}, timeout=T
    )
    assert r.status_code < 500, (r.status_code, r.text)
    return r.status_code == 201


def seed_hostile(reg: InProcessRegistry, repo: str, headers: dict[str, str]) -> list[str]:
    """Images whose config, manifest or index fields have the wrong JSON types (whatever the
    registry accepts at push is what the UI pages then render); returns the tags stored."""
    import json

    layer = b"hostile-layer"
    layer_d = _blob(reg, repo, layer, headers)
    tags: list[str] = []
    digests: list[tuple[str, int]] = []
    for tag, config in HOSTILE_CONFIGS.items():
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": CONFIG_MT, "digest": _blob(reg, repo, config, headers), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_d, "size": len(layer)}],
            "annotations": {"org.opencontainers.image.created": "\u202e" * 300, "x": "<script>alert(1)</script>"},
        }
        body = json.dumps(doc).encode()
        if _manifest(reg, repo, tag, body, OCI_MANIFEST, headers):
            tags.append(tag)
            digests.append((sha256(body), len(body)))
    odd_platforms: list[Any] = ["linux/amd64", {"os": 1, "architecture": []}, None, [], {"os": "linux", "variant": {"a": 1}}]
    for i, platform in enumerate(odd_platforms):
        digest, size = digests[i % len(digests)]
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": size, "platform": platform}],
        }
        if _manifest(reg, repo, f"index{i}", json.dumps(index).encode(), OCI_INDEX, headers):
            tags.append(f"index{i}")
    assert tags, "the registry accepted none of the hostile images"
    return tags


# -- the server --------------------------------------------------------------------------------
@dataclass
class Target:
    reg: InProcessRegistry
    seeds: dict[str, tuple[str, ...]]
    counts: dict[str, int]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    reg = InProcessRegistry(
        tmp_path_factory.mktemp("ui-fuzz"),
        auth={"mode": "token", "admin_password": ADMIN_PW, "bcrypt_rounds": 4, "login_rate_limit": 100_000},
        webhooks=[{"name": "cfg-hook", "url": "http://127.0.0.1:9/hook", "secret": "s3cret-fuzz", "repositories": ["fuzz/*"]}],
        events={"delivery_poll_interval": 0.2, "retry_backoff": 0.2},
    ).start()
    try:
        api = f"{reg.url}/api/v1"
        assert requests.post(f"{api}/users", json={"name": "bob", "password": "bob-pw-12345"}, auth=ADMIN, timeout=T).ok
        tok = requests.post(f"{api}/tokens", json={"user": "bob", "name": "t1"}, auth=ADMIN, timeout=T)
        token_id = str(tok.json().get("id", "1")) if tok.ok else "1"
        requests.post(
            f"{api}/webhooks",
            json={"name": "api-hook", "url": "https://hooks.example.invalid/x", "secret": "s3cret-fuzz"},
            auth=ADMIN,
            timeout=T,
        )
        params = [("service", "moorage")] + [("scope", f"repository:{r}:pull,push,delete") for r in ("fuzz/app", "fuzz/hostile")]
        push_tok = requests.get(f"{reg.url}/auth/token", params=params, auth=ADMIN, timeout=T).json()["token"]
        digest = push_image(reg.url, "fuzz/app", "v1", push_tok, b"fuzz-layer")
        push_image(reg.url, "fuzz/app", "v2", push_tok, b"fuzz-layer-2")
        hostile = seed_hostile(reg, "fuzz/hostile", bearer(push_tok))
        assert requests.get(f"{reg.url}/v2/", headers=bearer(push_tok), timeout=T).status_code == 200
        seeds = {
            "name": ("fuzz/app", "fuzz/hostile", "fuzz", "nope/missing"),
            "ref": ("v1", "v2", digest, "missing", *hostile),
            "id": (token_id, "1", "2"),
            "user": ("bob", "nobody"),
            "hook": ("cfg-hook", "api-hook", "missing"),
            "filename": ("ui.css", "app.js", "../ui/setup.py"),
        }
        seeds["hostile"] = tuple(hostile)  # not a path parameter: the tags the manifest page must render
        print(f"\nhostile images stored: {hostile}")
        yield Target(reg, seeds, {"requests": 0, "routes": 0})
    finally:
        reg.stop()


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field in the page"
    return m.group(1)


def _session(reg: InProcessRegistry, admin: bool) -> tuple[requests.Session, str]:
    """A browser: the login page's CSRF token (anonymous), or signed in as the administrator."""
    s = requests.Session()
    csrf = _csrf(s.get(f"{reg.url}/ui/login", timeout=T).text)
    if admin:
        r = s.post(
            f"{reg.url}/ui/login",
            data={"username": ADMIN[0], "password": ADMIN[1], "csrf": csrf},
            headers={"Origin": reg.url},
            timeout=T,
            allow_redirects=False,
        )
        assert r.status_code == 303, (r.status_code, r.text[:300])
        csrf = _csrf(s.get(f"{reg.url}/ui/tokens", timeout=T).text)
    return s, csrf


def _form(fields: list[tuple[str, str]], csrf: str | None) -> bytes:
    pairs = list(fields) + ([("csrf", csrf)] if csrf is not None else [])
    return "&".join(f"{enc(k)}={v}" for k, v in pairs).encode()


def _fill(formatter: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        formatter = re.sub(r"\{" + key + r"[^}]*\}", lambda _m: value, formatter)
    return formatter


def _cause(reg: InProcessRegistry) -> str:
    """The exception the server logged last (its traceback's final line)."""
    errors = [ln for ln in reg.log(40).splitlines() if re.match(r"^[\w.]+(Error|Exception)\b", ln)]
    return errors[-1][:160] if errors else "?"


def _fuzz_route(target: Target, route: Route, admin: bool, failures: list[str], allowed: frozenset[int] = frozenset()) -> None:
    reg = target.reg
    state: dict[str, Any] = {}

    def fresh() -> None:
        state["s"], state["csrf"] = _session(reg, admin)

    fresh()
    # first every combination of the seeded (valid) path values, so each page renders real content
    combos: list[dict[str, str]] = [{}]
    for p in route.params:
        combos = [{**c, p: quote(v, safe="/")} for c in combos for v in target.seeds.get(p, ("x",))]
    for combo in combos if route.method != "POST" else []:
        url = reg.url + _fill(route.formatter, combo)
        target.counts["requests"] += 1
        r = state["s"].request(route.method, url, timeout=T, allow_redirects=False)
        if r.status_code >= 500 and r.status_code not in allowed:
            failures.append(f"{r.status_code} {route.method} {route.name}: {_cause(reg)} | {url[:200]}")
        if admin and route.name == route_names.UI_MANIFEST and combo["name"] == "fuzz/hostile":
            target.counts["hostile_pages"] = target.counts.get("hostile_pages", 0) + 1
            # the hostile images are rendered (not refused): the page goes through ui/format.py
            if route.method == "GET" and combo["ref"] in target.seeds["hostile"]:
                assert r.status_code == 200, (url, r.status_code)
    path_st = st.fixed_dictionaries({p: value_strategy(target.seeds.get(p, ())) for p in route.params})
    query_st = st.lists(
        st.tuples(st.one_of(st.sampled_from(QUERY_KEYS), st.text(max_size=10).map(enc)), value_strategy(("1", "2", "v1"))),
        max_size=6,
    )
    form_st = st.lists(
        st.tuples(st.sampled_from(FORM_KEYS), value_strategy(("fuzz/app", "bob", "v1", "on", "1", "pull"))),
        max_size=8,
    )
    body_st = st.one_of(
        form_st.map(lambda f: ("form", f)),
        st.binary(max_size=200).map(lambda b: ("raw", b)),
        st.just(("huge", b"a=" + b"x" * 3_000_000)),
        st.tuples(st.sampled_from(MULTIPART_TYPES), st.binary(max_size=300)).map(lambda t: ("multipart", t)),
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize="MOORAGE_UI_FUZZ_EXAMPLES" not in os.environ,  # a longer hunt draws new cases each run
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(path=path_st, query=query_st, body=body_st, with_csrf=st.booleans())
    def run(path: dict[str, str], query: list[tuple[str, str]], body: tuple[str, Any], with_csrf: bool) -> None:
        url = reg.url + _fill(route.formatter, path) + ("?" + "&".join(f"{k}={v}" for k, v in query) if query else "")
        headers = {"Origin": reg.url}
        data: bytes | None = None
        if route.method == "POST":
            kind, payload = body
            csrf = state["csrf"] if with_csrf or admin else None
            if kind == "form":
                data = _form(payload, csrf)
            elif kind == "raw":
                data = payload
            elif kind == "multipart":
                ctype, raw = payload
                data = MULTIPART_BODY.replace(b"CSRF", (csrf or "").encode()) + raw
            else:
                data = payload + b"&csrf=" + (csrf or "").encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            if kind == "multipart":
                headers["Content-Type"] = ctype
        req = requests.Request(route.method, url, data=data, headers=headers)
        prepared = state["s"].prepare_request(req)
        prepared.url = url  # exactly as built (requests would re-quote)
        target.counts["requests"] += 1
        try:
            r = state["s"].send(prepared, timeout=T, allow_redirects=False)
        except requests.Timeout:
            failures.append(f"HANG {route.method} {url[:300]}")
            return
        if r.status_code >= 500 and r.status_code not in allowed:
            failures.append(f"{r.status_code} {route.method} {route.name}: {_cause(reg)} | {url[:200]} | body={str(data)[:120]}")
        if (
            route.name in (route_names.UI_LOGOUT, route_names.UI_LOGIN_POST)
            or r.status_code == 303
            and "/ui/login" in (r.headers.get("Location") or "")
        ):
            fresh()  # signed out (or signed in as someone else): sign in again

    run()


@pytest.mark.parametrize("admin", [True, False], ids=["admin", "anonymous"])
def test_no_ui_route_answers_5xx(target: Target, admin: bool) -> None:
    app = target.reg._runner.app if target.reg._runner else None  # type: ignore[union-attr]
    assert app is not None
    routes = ui_routes(app)
    names = {r.name for r in routes}
    # every UI route this configuration mounts (OIDC's only with auth.oidc) is enumerated
    assert route_names.UI_ROUTES - {route_names.UI_OIDC_LOGIN, route_names.UI_OIDC_CALLBACK} <= names
    failures: list[str] = []
    started = time.monotonic()
    before = target.counts["requests"]
    for route in routes:
        _fuzz_route(target, route, admin, failures)
    sent = target.counts["requests"] - before
    print(
        f"\nui fuzz ({'admin' if admin else 'anonymous'}): {len(routes)} routes, {sent} requests, {time.monotonic() - started:.1f} s"
    )
    assert requests.get(f"{target.reg.url}/v2/", timeout=T).status_code in (200, 401)
    distinct = {f.split(":")[0]: f for f in failures}  # route and exception type
    assert not failures, f"{len(failures)} failures, {len(distinct)} distinct:\n" + "\n".join(distinct.values())


# -- hostile cookies and Host on every GET page ---------------------------------------------------
COOKIE_VALUES = st.one_of(
    st.sampled_from(("", "x" * 5000, '"', "a;b", "%00", "\\", "=", "null", "0" * 200)),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=";,"), max_size=40),
)


def test_hostile_cookies_and_host_answer_no_5xx(target: Target) -> None:
    """Session, CSRF and OIDC-state cookies and the Host header with hostile values, on every
    UI GET route (with seeded path values) and on a form POST: never a 5xx."""
    reg = target.reg
    app = reg._runner.app if reg._runner else None
    assert app is not None
    gets = [r for r in ui_routes(app) if r.method == "GET"]
    failures: list[str] = []

    @settings(max_examples=3 * EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(
        route=st.sampled_from(gets),
        session=COOKIE_VALUES,
        csrf=COOKIE_VALUES,
        state=COOKIE_VALUES,
        host=st.sampled_from((None, "", "evil.example", "a" * 300, "[::1", "x:99999", "\u00e9.example")),
        post=st.booleans(),
    )
    def run(route: Route, session: str, csrf: str, state: str, host: str | None, post: bool) -> None:
        path = _fill(route.formatter, {p: quote(target.seeds.get(p, ("x",))[0], safe="/") for p in route.params})
        headers = {"Cookie": f"moorage_session={session}; moorage_csrf={csrf}; moorage_oidc_state={state}"}
        if host is not None:
            headers["Host"] = host.encode("utf-8").decode("latin-1")
        method, url, data = ("POST", "/ui/tokens", f"csrf={csrf}&name=x") if post else ("GET", path, None)
        try:
            r = requests.request(method, reg.url + url, headers=headers, data=data, timeout=T, allow_redirects=False)
        except requests.Timeout:
            failures.append(f"HANG {method} {url}")
            return
        if r.status_code >= 500:
            failures.append(f"{r.status_code} {method} {url}: {_cause(reg)} | {headers}")

    run()
    assert not failures, "\n".join(failures[:10])


# -- regressions of what the run found -----------------------------------------------------------
@pytest.mark.parametrize("path", ["/ui/login", "/ui/logout", "/ui/tokens", "/ui/admin/users"])
def test_undecodable_form_body_is_400_not_500(target: Target, path: str) -> None:
    """A form body that is not UTF-8 (raw bytes, not percent-escapes) made aiohttp's
    ``request.post()`` raise UnicodeDecodeError in ``check_csrf``: a 500 on every UI form."""
    s, csrf = _session(target.reg, admin=True)
    for body in (b"\xff\xfe", b"csrf=" + csrf.encode() + b"&name=\xc3\x28"):
        r = s.post(
            target.reg.url + path,
            data=body,
            headers={"Origin": target.reg.url, "Content-Type": "application/x-www-form-urlencoded"},
            timeout=T,
            allow_redirects=False,
        )
        assert r.status_code == 400, (path, body, r.status_code, r.text[:300])
        assert "Traceback" not in r.text


@pytest.mark.parametrize("path", ["/ui/login", "/ui/admin/users/nobody/password"])
def test_unknown_form_charset_is_400_not_500(target: Target, path: str) -> None:
    """``Content-Type: ...; charset=nope`` made ``request.post()`` raise LookupError (a 500)."""
    s, csrf = _session(target.reg, admin=True)
    r = s.post(
        target.reg.url + path,
        data=f"csrf={csrf}&password=x".encode(),
        headers={"Origin": target.reg.url, "Content-Type": "application/x-www-form-urlencoded; charset=nope"},
        timeout=T,
        allow_redirects=False,
    )
    assert r.status_code == 400, (path, r.status_code, r.text[:300])


# -- OpenID Connect sign-in ------------------------------------------------------------------------
def test_oidc_routes_answer_no_5xx_but_provider_unavailable(tmp_path: Path) -> None:
    """The two OIDC routes (mounted only with ``auth.oidc``) under the same hostile input.  The
    provider here is unreachable (a closed port), so ``/auth/oidc/login`` may answer 503 (the
    provider is down: documented), never 500; the callback checks state and cookie before it
    would ever reach the provider, so it answers 4xx."""
    reg = InProcessRegistry(
        tmp_path,
        auth={
            "mode": "token",
            "admin_password": ADMIN_PW,
            "bcrypt_rounds": 4,
            "oidc": {"issuer": "http://127.0.0.1:1/realms/x", "client_id": "moorage", "client_secret": "s", "timeout": 2},
        },
    ).start()
    try:
        app = reg._runner.app if reg._runner else None
        assert app is not None
        routes = [r for r in ui_routes(app) if r.name in (route_names.UI_OIDC_LOGIN, route_names.UI_OIDC_CALLBACK)]
        assert {r.name for r in routes} == {route_names.UI_OIDC_LOGIN, route_names.UI_OIDC_CALLBACK}
        target = Target(reg, {}, {"requests": 0})
        failures: list[str] = []
        for route in routes:
            allowed = frozenset({503}) if route.name == route_names.UI_OIDC_LOGIN else frozenset()
            for admin in (True, False):
                _fuzz_route(target, route, admin, failures, allowed)
        r = requests.get(f"{reg.url}/auth/oidc/login", timeout=T, allow_redirects=False)
        assert r.status_code == 503 and "Traceback" not in r.text
        assert requests.get(f"{reg.url}/v2/", timeout=T).status_code == 401
        print(f"\nui fuzz (oidc): {len(routes)} routes, {target.counts['requests']} requests")
        assert not failures, "\n".join(failures[:10])
    finally:
        reg.stop()
