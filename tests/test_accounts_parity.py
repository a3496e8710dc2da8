"""Parity of the faces: every state-changing account and webhook operation, driven through every
face that offers it, leaves the same audit entry.

The operations are not listed here by hand: they are read from the service classes
(:func:`moorage.registry.audit.operations` over :class:`~moorage.accounts.service.AccountsService`,
:class:`~moorage.gc.policy_admin.PolicyAdminService` and
:class:`~moorage.events.webhooks.WebhookService`), and the test is parametrised by them, so an
operation added without a driver in :data:`DRIVERS` fails ``test_operation_leaves_the_same_entry``
for it.  Each face drives the operation as a user would: ``/api/v1`` over HTTP, the web UI by
signing in and posting its forms with the page's CSRF token and a same-origin ``Origin``, the
CLI as a process against the server's data.  The entry must name the actor, the face, the
operation's action, the target and outcome ``ok`` -- exactly one of it (the route-keyed audit of
old would add a second).

Protocol tier: one real ``moorage serve`` (token auth) for the module.
"""

from __future__ import annotations

import getpass
import itertools
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from moorage.accounts.service import AccountsService
from moorage.events.webhooks import WebhookService
from moorage.gc.policy_admin import PolicyAdminService
from moorage.insight.policy_admin import PullPolicyAdmin
from moorage.registry.audit import operations
from tests.support.authsrv import ADMIN_PASSWORD, cli, start_auth_server
from tests.support.registry_proc import RegistryProcess

ADMIN = ("admin", ADMIN_PASSWORD)
TIMEOUT = 30
CLI_ACTOR = f"cli:{getpass.getuser()}"
_seq = itertools.count()


def _unique(prefix: str) -> str:
    return f"{prefix}{next(_seq)}"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    proc = start_auth_server(tmp_path_factory.mktemp("parity") / "srv", None)
    try:
        yield proc
    finally:
        proc.stop()


@dataclass
class Faces:
    """The three ways in, signed in as the administrator."""

    srv: RegistryProcess
    ui: requests.Session = field(default_factory=requests.Session)

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(method, self.srv.url + path, auth=ADMIN, timeout=TIMEOUT, **kw)

    def form(self, path: str, data: dict[str, str], page: str = "/ui/tokens") -> requests.Response:
        """A form POST as the browser sends it: the page's CSRF token, same-origin Origin."""
        html = self.ui.get(self.srv.url + page, timeout=TIMEOUT).text
        m = re.search(r'name="csrf" value="([^"]+)"', html)
        assert m, html[:500]
        return self.ui.post(
            self.srv.url + path,
            data={**data, "csrf": m.group(1)},
            headers={"Origin": self.srv.url},
            timeout=TIMEOUT,
            allow_redirects=False,
        )

    def cli(self, *args: str, input: str | None = None) -> str:
        return cli(self.srv, *args, input=input).stderr

    def token_for(self, user: str) -> str:
        r = self.api("POST", "/api/v1/tokens", json={"user": user, "name": "to-revoke"})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def newest_token(self, user: str) -> str:
        tokens = self.api("GET", "/api/v1/tokens", params={"user": user}).json()["tokens"]
        return str(max(tokens, key=lambda t: t["created_at"])["id"])

    def user(self, prefix: str = "u") -> str:
        name = _unique(prefix)
        assert self.api("POST", "/api/v1/users", json={"name": name, "password": "pw-" + name}).status_code == 201
        return name


@pytest.fixture(scope="module")
def faces(srv: RegistryProcess) -> Faces:
    f = Faces(srv)
    page = f.ui.get(srv.url + "/ui/login", timeout=TIMEOUT).text
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token
    r = f.ui.post(
        srv.url + "/ui/login",
        data={"username": "admin", "password": ADMIN_PASSWORD, "csrf": token.group(1)},
        headers={"Origin": srv.url},
        timeout=TIMEOUT,
        allow_redirects=False,
    )
    assert r.status_code == 303, r.text[:300]
    return f


def _ok(r: requests.Response, *codes: int) -> None:
    assert r.status_code in (codes or (200, 201, 204, 303)), (r.status_code, r.text[:500])


# -- one driver per (operation, face): does the operation, returns the expected target ----------
Driver = Callable[[Faces], str]


def _user_add(face: str) -> Driver:
    def run(f: Faces) -> str:
        name = _unique("new")
        if face == "api":
            _ok(f.api("POST", "/api/v1/users", json={"name": name, "password": "pw-12345678", "admin": True}))
        elif face == "ui":  # an administrator made in the UI: issue 20's first finding
            _ok(f.form("/ui/admin/users", {"name": name, "password": "pw-12345678", "admin": "1"}, "/ui/admin/users"), 200)
        else:
            f.cli("user", "add", name, "--admin", "--password-stdin", input="pw-12345678\n")
        return name

    return run


def _user_delete(face: str) -> Driver:
    def run(f: Faces) -> str:
        name = f.user()
        if face == "api":
            _ok(f.api("DELETE", f"/api/v1/users/{name}"))
        elif face == "ui":
            _ok(f.form(f"/ui/admin/users/{name}/delete", {}, "/ui/admin/users"))
        else:
            f.cli("user", "rm", name)
        return name

    return run


def _user_password(face: str) -> Driver:
    def run(f: Faces) -> str:
        name = f.user()
        if face == "api":
            _ok(f.api("PUT", f"/api/v1/users/{name}/password", json={"password": "another-pw-1"}))
        elif face == "ui":
            _ok(f.form(f"/ui/admin/users/{name}/password", {}, "/ui/admin/users"), 200)
        else:
            f.cli("user", "passwd", name, "--password-stdin", input="another-pw-1\n")
        return name

    return run


@dataclass(frozen=True)
class _Holder:
    """Whom a grant is to -- a user or a directory group (no directory needed: the rows name a
    group, the directory says who is in it).  One operation of the accounts service with another
    holder, offered by the same faces at other addresses: ``/api/v1/grants`` and
    ``/api/v1/group-grants``, the UI's namespaces and group-grants pages, ``grant [--group]``."""

    key: str
    api: str
    page: str
    cli: tuple[str, ...]

    def new(self, f: Faces) -> str:
        return f.user() if self.key == "user" else f"Team {_unique('g')}"  # directory names: capitals, spaces

    def listed(self, f: Faces, holder: str) -> list[dict[str, Any]]:
        return list(f.api("GET", self.api, params={self.key: holder}).json()["grants"])


USER = _Holder("user", "/api/v1/grants", "/ui/admin/namespaces", ())
GROUP = _Holder("group", "/api/v1/group-grants", "/ui/admin/group-grants", ("--group",))


def _grant_add(face: str, h: _Holder = USER) -> Driver:
    def run(f: Faces) -> str:
        holder, ns = h.new(f), _unique("ns")
        pattern = f"{ns}/*"
        if face == "api":
            _ok(f.api("POST", h.api, json={h.key: holder, "pattern": pattern, "actions": "pull,push"}), 201)
        elif face == "ui":
            form = {"action": "grant", h.key: holder, "namespace": ns, "pull": "1", "push": "1"}
            _ok(f.form(h.page, form, h.page), 303)
        else:
            f.cli("grant", *h.cli, holder, pattern, "pull,push")
        assert h.listed(f, holder) == [{h.key: holder, "pattern": pattern, "actions": ["pull", "push"]}]
        return pattern

    return run


def _grant_revoke(face: str, h: _Holder = USER) -> Driver:
    def run(f: Faces) -> str:
        holder, ns = h.new(f), _unique("ns")
        pattern = f"{ns}/*"
        _ok(f.api("POST", h.api, json={h.key: holder, "pattern": pattern, "actions": "pull"}), 201)
        if face == "api":
            _ok(f.api("DELETE", h.api, params={h.key: holder, "pattern": pattern}), 204)
        elif face == "ui":
            _ok(f.form(h.page, {"action": "revoke", h.key: holder, "pattern": pattern}, h.page), 303)
        else:
            f.cli("revoke", *h.cli, holder, pattern)
        assert h.listed(f, holder) == []  # revoked, whichever face did it
        return pattern

    return run


def _group_grant_add(face: str) -> Driver:
    return _grant_add(face, GROUP)


def _group_grant_revoke(face: str) -> Driver:
    return _grant_revoke(face, GROUP)


def _token_create(face: str) -> Driver:
    def run(f: Faces) -> str:
        if face == "api":
            r = f.api("POST", "/api/v1/me/tokens", json={"name": "parity", "expires_in": 3600})
            _ok(r)
            return str(r.json()["id"])
        if face == "ui":
            _ok(f.form("/ui/tokens", {"name": "parity", "expires_days": "1"}), 200)
        else:
            f.cli("token", "create", "admin", "--name", "parity", "--expires", "1d")
        return f.newest_token("admin")

    return run


def _token_revoke(face: str) -> Driver:
    def run(f: Faces) -> str:
        tid = f.token_for("admin")
        if face == "api":
            _ok(f.api("DELETE", f"/api/v1/tokens/{tid}"))
        elif face == "ui":
            _ok(f.form(f"/ui/admin/tokens/{tid}/revoke", {}, "/ui/admin/users"))
        else:
            f.cli("token", "revoke", tid)
        return tid

    return run


def _visibility(face: str) -> Driver:
    def run(f: Faces) -> str:
        ns = _unique("vis")
        if face == "api":
            _ok(f.api("PUT", "/api/v1/visibility", json={"namespace": ns, "public": True}))
        elif face == "ui":
            _ok(f.form("/ui/admin/namespaces", {"action": "visibility", "namespace": ns, "public": "1"}, "/ui/admin/namespaces"))
        else:
            f.cli("namespace", "public", ns, "--on")
        return ns

    return run


def _namespace_add(face: str) -> Driver:
    def run(f: Faces) -> str:
        ns = _unique("org")
        if face == "api":
            _ok(f.api("POST", "/api/v1/namespaces", json={"name": ns}))
        else:
            f.cli("namespace", "add", ns)
        return ns

    return run


def _namespace_delete(face: str) -> Driver:
    def run(f: Faces) -> str:
        ns = _unique("org")
        _ok(f.api("POST", "/api/v1/namespaces", json={"name": ns}))
        f.cli("namespace", "rm", ns)
        return ns

    return run


HOOK = {"url": "http://203.0.113.7/hook", "secret": "s" * 20, "repositories": ["*"]}


def _webhook_add(face: str) -> Driver:
    def run(f: Faces) -> str:
        name = _unique("hook")
        _ok(f.api("POST", "/api/v1/webhooks", json={**HOOK, "name": name}))
        return name

    return run


def _webhook_delete(face: str) -> Driver:
    def run(f: Faces) -> str:
        name = _unique("hook")
        _ok(f.api("POST", "/api/v1/webhooks", json={**HOOK, "name": name}))
        if face == "ui":
            _ok(f.form(f"/ui/admin/webhooks/{name}/delete", {}, f"/ui/admin/webhooks/{name}"), 303)
        else:
            _ok(f.api("DELETE", f"/api/v1/webhooks/{name}"))
        return name

    return run


def _webhook_test(face: str) -> Driver:
    """A test event from the UI's webhook page (the delivery itself goes nowhere: TEST-NET)."""

    def run(f: Faces) -> str:
        name = _unique("hook")
        _ok(f.api("POST", "/api/v1/webhooks", json={**HOOK, "name": name}))
        _ok(f.form(f"/ui/admin/webhooks/{name}/test", {}, f"/ui/admin/webhooks/{name}"), 303)
        return name

    return run


def _webhook_retry(face: str) -> Driver:
    """A dead delivery (a test event to a closed local port, one attempt) put back in the queue."""

    def run(f: Faces) -> str:
        name = _unique("hook")
        hook = {**HOOK, "name": name, "url": "http://127.0.0.1:9/closed", "max_attempts": 1, "timeout": 2}
        _ok(f.api("POST", "/api/v1/webhooks", json=hook))
        _ok(f.form(f"/ui/admin/webhooks/{name}/test", {}, f"/ui/admin/webhooks/{name}"), 303)
        deadline = time.monotonic() + 30
        dead: list[dict[str, Any]] = []
        while not dead and time.monotonic() < deadline:
            dead = f.api("GET", f"/api/v1/webhooks/{name}/deliveries", params={"status": "dead"}).json()["deliveries"]
            time.sleep(0.2)
        assert dead, f"the delivery to {hook['url']} did not die"
        did = dead[0]["id"]
        if face == "api":
            _ok(f.api("POST", f"/api/v1/webhooks/{name}/deliveries/{did}/retry"), 202)
        elif face == "cli":
            f.cli("webhooks", "retry", name, str(did))
        else:
            _ok(f.form(f"/ui/admin/webhooks/{name}/deliveries/{did}/retry", {}, f"/ui/admin/webhooks/{name}"), 303)
        return name

    return run


def _policy(action: str) -> Callable[[str], Driver]:
    """Quotas, retention, immutable tags: the UI's namespaces page (the policy service) and the
    ``moorage quota|retention|immutable`` commands."""

    def factory(face: str) -> Driver:
        def run(f: Faces) -> str:
            ns = _unique("pol")
            pattern = f"{ns}/*"
            setup = {
                "quota.delete": ("quota", "set", ns, "10M"),
                "retention.delete": ("retention", "set", pattern, "--keep-last", "3"),
                "immutable.delete": ("immutable", "set", pattern, "^v.*"),
            }
            if action in setup:
                f.cli(*setup[action])
            ui, cli_args, target = {
                "quota.set": ({"action": "quota", "namespace": ns, "limit": "10M"}, ("quota", "set", ns, "10M"), ns),
                "quota.delete": ({"action": "quota_remove", "namespace": ns}, ("quota", "rm", ns), ns),
                "retention.set": (
                    {"action": "retention", "namespace": ns, "keep_last": "3"},
                    ("retention", "set", pattern, "--keep-last", "3"),
                    pattern,
                ),
                "retention.delete": ({"action": "retention_remove", "pattern": pattern}, ("retention", "rm", pattern), pattern),
                "immutable.set": (
                    {"action": "immutable", "namespace": ns, "tag_regex": "^v.*"},
                    ("immutable", "set", pattern, "^v.*"),
                    pattern,
                ),
                "immutable.delete": (
                    {"action": "immutable_remove", "pattern": pattern, "tag_regex": "^v.*"},
                    ("immutable", "rm", pattern, "^v.*"),
                    pattern,
                ),
            }[action]
            if face == "ui":
                _ok(f.form("/ui/admin/namespaces", ui, "/ui/admin/namespaces"))
            else:
                f.cli(*cli_args)
            return target

        return run

    return factory


def _vuln_policy(action: str) -> Callable[[str], Driver]:
    """The vulnerability pull policy and its allow-list (moorage/insight/policy_admin.py)."""

    def factory(face: str) -> Driver:
        def run(f: Faces) -> str:
            ns = _unique("vp")
            if action == "vuln_policy.delete":
                _ok(f.api("PUT", f"/api/v1/insight/policies/{ns}", json={"block_severity": "HIGH"}))
            if action == "vuln_allow.delete":
                _ok(f.api("PUT", f"/api/v1/insight/allowlist/{ns}/TEST-1", json={"reason": "r"}))
            if face == "api":
                method, path, body = {
                    "vuln_policy.set": ("PUT", f"/api/v1/insight/policies/{ns}", {"block_severity": "high"}),
                    "vuln_policy.delete": ("DELETE", f"/api/v1/insight/policies/{ns}", None),
                    "vuln_allow.add": ("PUT", f"/api/v1/insight/allowlist/{ns}/TEST-1", {"reason": "r"}),
                    "vuln_allow.delete": ("DELETE", f"/api/v1/insight/allowlist/{ns}/TEST-1", None),
                }[action]
                _ok(f.api(method, path, json=body))
            else:
                f.cli(
                    *{
                        "vuln_policy.set": ("vuln-policy", ns, "--block", "high"),
                        "vuln_policy.delete": ("vuln-policy", ns, "--block", "off"),
                        "vuln_allow.add": ("vuln-allow", ns, "TEST-1", "--reason", "r"),
                        "vuln_allow.delete": ("vuln-allow", ns, "TEST-1", "--remove"),
                    }[action]
                )
            return ns

        return run

    return factory


VULN_OPERATIONS = ("vuln_policy.set", "vuln_policy.delete", "vuln_allow.add", "vuln_allow.delete")
ALL = ("api", "ui", "cli")
#: The policy operations (moorage/gc/policy_admin.py), offered by the web UI and the CLI.
POLICY_OPERATIONS = {"quota.set", "quota.delete", "retention.set", "retention.delete", "immutable.set", "immutable.delete"}
#: audit action -> (driver factory, the faces that offer the operation).
DRIVERS: dict[str, tuple[Callable[[str], Driver], tuple[str, ...]]] = {
    "user.add": (_user_add, ALL),
    "user.delete": (_user_delete, ALL),
    "user.password": (_user_password, ALL),
    "grant.add": (_grant_add, ALL),
    "grant.revoke": (_grant_revoke, ALL),
    "group_grant.add": (_group_grant_add, ALL),
    "group_grant.revoke": (_group_grant_revoke, ALL),
    "token.create": (_token_create, ALL),
    "token.revoke": (_token_revoke, ALL),
    "visibility.set": (_visibility, ALL),
    "namespace.add": (_namespace_add, ("api", "cli")),
    "namespace.delete": (_namespace_delete, ("cli",)),
    "webhook.add": (_webhook_add, ("api",)),
    "webhook.delete": (_webhook_delete, ("api", "ui")),
    "webhook.test": (_webhook_test, ("ui",)),
    "webhook.retry": (_webhook_retry, ALL),
    **{a: (_policy(a), ("ui", "cli")) for a in sorted(POLICY_OPERATIONS)},
    **{a: (_vuln_policy(a), ("api", "cli")) for a in VULN_OPERATIONS},
}
OPERATIONS = {
    **operations(AccountsService),
    **operations(WebhookService),
    **operations(PolicyAdminService),
    **operations(PullPolicyAdmin),
}
ACTOR = {"api": "admin", "ui": "admin", "cli": CLI_ACTOR}


def _entries(f: Faces, action: str) -> list[dict[str, Any]]:
    r = f.api("GET", "/api/v1/audit", params={"action": action, "limit": "1000"})
    assert r.status_code == 200, r.text
    return list(r.json()["entries"])


@pytest.mark.parametrize("method", sorted(OPERATIONS))
def test_operation_leaves_the_same_entry(faces: Faces, method: str) -> None:
    action = OPERATIONS[method]
    assert action in DRIVERS, f"operation {method} ({action}) has no parity driver: add one to DRIVERS"
    factory, offered = DRIVERS[action]
    seen: dict[str, dict[str, Any]] = {}
    for face in offered:
        before = max((e["id"] for e in _entries(faces, action)), default=0)
        target = factory(face)(faces)
        new = [e for e in _entries(faces, action) if e["id"] > before and e["action"] == action]
        mine = [e for e in new if e["target"] == target]
        assert len(mine) == 1, f"{action} through {face}: expected one entry for {target!r}, got {new}"
        e = mine[0]
        got = (e["actor"], e["face"], e["action"], e["target"], e["outcome"])
        assert got == (ACTOR[face], face, action, target, "ok"), f"{action} through {face}: {e}"
        seen[face] = e
    keys = {face: sorted((e["detail"] or {}).keys()) for face, e in seen.items()}
    assert len({tuple(k) for k in keys.values()}) == 1, f"{action}: the faces record different details: {keys}"


def test_every_operation_is_named_by_the_operation() -> None:
    """Audit actions are the operations' own names, one each, never a route name."""
    actions = list(OPERATIONS.values())
    assert len(actions) == len(set(actions)), actions
    assert all(re.fullmatch(r"[a-z]+(?:_[a-z]+)*\.[a-z]+", a) for a in actions), actions
    assert set(DRIVERS) == set(actions), set(DRIVERS) ^ set(actions)


#: Group names the CLI refuses as a usage error (exit 2), never a traceback: over-long (argv
#: allows 128 KiB), control characters, invisible format characters, a byte that is no UTF-8
#: (a lone surrogate to Python), surrounding spaces, empty.
HOSTILE_GROUPS = ["g" * 256, "g" * 100_000, "dev\x07ops", "dev\nops", "dev\u202eops", "dev\udcffops", " dev", ""]


def test_hostile_group_names_are_a_clean_cli_error(faces: Faces) -> None:
    for group in HOSTILE_GROUPS:
        for args in (("grant", "--group", group, "team/*", "pull"), ("revoke", "--group", group, "team/*")):
            cp = cli(faces.srv, *args, check=False)
            assert cp.returncode == 2, (args[:2], group[:20], cp.returncode, cp.stderr[-500:])
            assert "Traceback" not in cp.stderr and "Invalid value for --group" in cp.stderr, cp.stderr[-500:]
    # an unknown group is nobody's business but the directory's: granted; revoking twice is a one-line error
    faces.cli("grant", "--group", "Nobody Here", "team/*", "pull")
    faces.cli("revoke", "--group", "Nobody Here", "team/*")
    cp = cli(faces.srv, "revoke", "--group", "Nobody Here", "team/*", check=False)
    assert cp.returncode == 1 and "has no grant" in cp.stderr and "Traceback" not in cp.stderr, cp.stderr[-500:]
    cp = cli(faces.srv, "grant", "--group", "developers", "team/*\n", "pull", check=False)
    assert cp.returncode == 2 and "REPO_PATTERN" in cp.stderr, cp.stderr[-500:]
    listed = faces.api("GET", "/api/v1/group-grants").json()["grants"]
    assert not any(g["pattern"].startswith("team/") for g in listed), listed
