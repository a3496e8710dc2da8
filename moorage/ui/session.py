"""Who is looking at a page: browser sessions, sign-in, CSRF tokens and the viewer's rights.

Sign-in reuses the registry's own checks (:meth:`moorage.auth.authenticator.Authenticator.login` for
``auth.mode: token`` -- password or personal access token, with its rate limit --
``htpasswd_login`` for htpasswd), so the browser gets exactly the rights the API would give
the same credentials: :func:`moorage.registry.access_rules.repository_rights` on the same
:class:`~moorage.registry.access_rules.Principal`.

Sessions: the cookie holds 32 random bytes; the database holds only their sha256, with the
user, the access token signed in with (revoking it ends the session) and the session's CSRF
token -- so every replica recognises every session and signing out is a row delete.  A
password change ends the sessions opened with the old password: in ``token`` mode through the
user's ``password_changed_at``; in ``htpasswd`` mode, where the file is the only record, the
session keeps a fingerprint of the user's hash line (HMAC keyed with the cookie value, so the
database alone gives nothing to guess passwords against) and ends when the line differs.

CSRF: every form carries a token; a POST without the right one is refused (403).  Signed-in
forms use the session's token; forms shown before sign-in (the sign-in form itself, and
everything under ``auth.mode: none``) use a random cookie echoed in the form ("double
submit"): a cross-site page can neither read that cookie nor (SameSite=Strict) send it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from aiohttp import web

from .. import errors
from ..api.common import SETTINGS, request_principal
from ..registry.access_rules import ALL_REPO_ACTIONS, Principal, pull_patterns, repository_rights
from ..registry.principal import Principal as ServicePrincipal
from .queries import UIQueries, Visibility

SESSION_COOKIE = "moorage_session"
CSRF_COOKIE = "moorage_csrf"
#: Request key holding the resolved :class:`Viewer`.
VIEWER = web.RequestKey["Viewer"]("ui_viewer")
#: Request key: cookies the UI middleware sets on the response.
SET_COOKIES = web.RequestKey[list[tuple[str, str, int | None, str]]]("ui_set_cookies")
QUERIES = web.AppKey("ui_queries", UIQueries)
#: A posted form, as ``request.post()`` parses it (a file upload is no text field).
Form = Mapping[str, str | bytes | bytearray | web.FileField]


class UIError(Exception):
    """An error page: status and a message for a person."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class Redirect(Exception):
    """Answer with a 303 to ``location`` (a local path)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


@dataclass(slots=True)
class Viewer:
    mode: str  # auth.mode: none | htpasswd | token
    name: str | None = None  # None = anonymous
    principal: Principal | None = None
    #: Administrator with full (not token-scoped) credentials: users, grants, policies, GC.
    admin: bool = False
    #: Signed in with a scoped access token (may not manage tokens).
    scoped: bool = False
    csrf: str = ""
    session_hash: str | None = None
    robot: bool = False

    @property
    def anonymous(self) -> bool:
        return self.name is None

    @property
    def sees_everything(self) -> bool:
        return (
            self.mode == "none"
            or (self.mode == "htpasswd" and not self.anonymous)
            or (self.principal is not None and self.principal.is_admin and self.principal.token_scope is None)
        )

    @property
    def may_administer(self) -> bool:
        """Policies, GC (and, in token mode, users, grants and visibility): whoever the API
        lets administer -- everyone without auth, every htpasswd user, token-mode admins."""
        if self.mode == "none":
            return True
        if self.mode == "htpasswd":
            return not self.anonymous
        return self.admin

    @property
    def may_manage_tokens(self) -> bool:
        return self.mode == "token" and not self.anonymous and not self.scoped

    def visibility(self) -> Visibility:
        if self.sees_everything:
            return Visibility(everything=True)
        if self.mode == "htpasswd":  # anonymous: the API refuses everything without credentials
            return Visibility(public_ok=False)
        if self.principal is None or self.principal.anonymous:
            return Visibility()
        patterns, scope = pull_patterns(self.principal)  # the read rule of repository_rights, as patterns
        return Visibility(pull_patterns=patterns, scope_patterns=scope)

    def rights(self, repository: str, *, public: bool) -> frozenset[str]:
        """Actions this viewer may take on ``repository`` (same rules as the API)."""
        if self.mode == "none" or (self.mode == "htpasswd" and not self.anonymous):
            return ALL_REPO_ACTIONS | {"admin"}
        if self.mode == "htpasswd" or self.principal is None:
            return frozenset()
        return repository_rights(self.principal, repository, public=public)


def _hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def htpasswd_fingerprint(sid: str, hashed: str) -> str:
    """What an htpasswd session remembers of its user's hash line: changing the password (or
    only re-hashing it) changes the line, and so ends the session."""
    return hmac.new(sid.encode(), b"moorage-ui-htpasswd\0" + hashed.encode(), hashlib.sha256).hexdigest()


class _CookieFlags(TypedDict):
    httponly: bool
    secure: bool
    path: str


def _cookie_flags(request: web.Request) -> _CookieFlags:
    settings = request.app[SETTINGS]
    secure = request.secure or settings.tls.certificate is not None
    return {"httponly": True, "secure": secure, "path": "/"}


def set_cookie(request: web.Request, name: str, value: str, *, max_age: int | None, samesite: str) -> None:
    request.setdefault(SET_COOKIES, []).append((name, value, max_age, samesite))


def apply_cookies(request: web.Request, response: web.StreamResponse) -> None:
    for name, value, max_age, samesite in request.get(SET_COOKIES, ()):
        if value == "":
            response.del_cookie(name, path="/")
        else:
            response.set_cookie(name, value, max_age=max_age, samesite=samesite, **_cookie_flags(request))


def anonymous_csrf(request: web.Request) -> str:
    """The double-submit token of a visitor without a session (set as a cookie if new)."""
    token = request.cookies.get(CSRF_COOKIE, "")
    if not (20 <= len(token) <= 100 and token.replace("-", "").replace("_", "").isalnum()):
        token = secrets.token_urlsafe(24)
        set_cookie(request, CSRF_COOKIE, token, max_age=None, samesite="Strict")
    return token


async def resolve_viewer(request: web.Request) -> Viewer:
    """The viewer of this request (cached on the request)."""
    if VIEWER in request:
        return request[VIEWER]
    settings = request.app[SETTINGS]
    mode = settings.auth.mode
    viewer = Viewer(mode=mode)
    sid = request.cookies.get(SESSION_COOKIE)
    queries = request.app[QUERIES]
    if sid and len(sid) <= 100:
        sess = await queries.get_session(_hash(sid))
        if sess is not None and await _still_valid(request, viewer, sess, sid):
            viewer.session_hash = _hash(sid)
            viewer.csrf = sess["csrf"]
        else:
            set_cookie(request, SESSION_COOKIE, "", max_age=None, samesite="Lax")
            viewer = Viewer(mode=mode)
    if viewer.anonymous:
        viewer.csrf = anonymous_csrf(request)
        if mode == "token":
            viewer.principal = Principal(None)
    request[VIEWER] = viewer
    return viewer


async def _still_valid(request: web.Request, viewer: Viewer, sess: dict[str, Any], sid: str) -> bool:
    """Fill ``viewer`` from a stored session if its user (and token, or password) still stand."""
    mode = viewer.mode
    name = sess["user"]
    if mode == "none":
        viewer.name = name
        viewer.admin = True
        return True
    from ..api.common import AUTHENTICATOR

    state = request.app.get(AUTHENTICATOR)
    if state is None:
        return False
    if mode == "htpasswd":
        hashed = state.htpasswd.entries().get(name) if state.htpasswd is not None else None
        stored = sess.get("credential")
        if hashed is None or not stored or not hmac.compare_digest(htpasswd_fingerprint(sid, hashed), stored):
            return False  # removed, password changed, or a session from before fingerprints
        viewer.name, viewer.admin = name, True
        return True
    user = await state.store.get_user(name)
    if user is None:
        return False
    token = None
    if sess["token_id"]:
        token = await state.store.get_token(sess["token_id"])
        if token is None or not token.usable() or token.user_id != user.id:
            return False
    elif user.password_changed_at > sess["created_at"]:
        return False
    try:
        principal = await state.principal(user, token)
    except errors.Unauthorized:  # a directory user no longer in the directory
        return False
    viewer.name = user.name
    viewer.principal = principal
    viewer.robot = user.is_robot
    viewer.scoped = token is not None and token.scope is not None
    viewer.admin = principal.is_admin and not viewer.scoped  # (a directory user: by admin_groups)
    return True


async def sign_in(request: web.Request, username: str, password: str) -> None:
    """Check the credentials as the API would, then open a session (new id: no fixation)."""
    settings = request.app[SETTINGS]
    mode = settings.auth.mode
    token_id: str | None = None
    hashed: str | None = None
    if not username or len(username) > 64 or len(password) > 4096 or "\x00" in password:
        raise UIError(401, "Invalid username or password.")
    if mode == "token":
        from ..api.common import AUTHENTICATOR

        state = request.app[AUTHENTICATOR]
        try:
            user, token = await state.login(request, username, password, challenge={})
        except errors.TooManyRequests:
            raise UIError(429, "Too many failed sign-ins; try again in a minute.") from None
        except errors.Unavailable as exc:  # the directory does not answer: say so, not "wrong password"
            raise UIError(503, exc.message) from None
        except errors.Unauthorized as exc:
            from ..auth.groups import ClearRefusal

            raise UIError(401, exc.message if isinstance(exc, ClearRefusal) else "Invalid username or password.") from None
        username = user.name
        token_id = token.id if token is not None else None
    elif mode == "htpasswd":
        from ..api.common import AUTHENTICATOR

        state = request.app[AUTHENTICATOR]
        before = state.htpasswd.entries().get(username) if state.htpasswd is not None else None
        try:
            await state.htpasswd_login(request, username, password)
        except errors.TooManyRequests:
            raise UIError(429, "Too many failed sign-ins; try again in a minute.") from None
        except errors.Unauthorized:
            raise UIError(401, "Invalid username or password.") from None
        hashed = state.htpasswd.entries().get(username) if state.htpasswd is not None else None
        if hashed is None or hashed != before:  # the file changed while we checked: check again
            raise UIError(401, "Invalid username or password.")
    # auth.mode none: anyone may do anything; the name is only shown (and recorded).
    await open_session(request, username, token_id, htpasswd_line=hashed)


async def open_session(request: web.Request, username: str, token_id: str | None, *, htpasswd_line: str | None = None) -> None:
    """A new session for ``username`` (already checked: password, token or OpenID Connect);
    ``htpasswd_line``: the user's hash line in htpasswd mode (the session ends when it changes)."""
    settings = request.app[SETTINGS]
    queries = request.app[QUERIES]
    old = request.cookies.get(SESSION_COOKIE)
    if old and len(old) <= 100:
        await queries.delete_session(_hash(old))
    sid = secrets.token_urlsafe(32)
    ttl = settings.ui.session_ttl
    credential = htpasswd_fingerprint(sid, htpasswd_line) if htpasswd_line is not None else None
    await queries.create_session(_hash(sid), username, token_id, secrets.token_urlsafe(24), ttl, credential)
    set_cookie(request, SESSION_COOKIE, sid, max_age=ttl, samesite="Lax")


async def sign_out(request: web.Request) -> None:
    sid = request.cookies.get(SESSION_COOKIE)
    if sid and len(sid) <= 100:
        await request.app[QUERIES].delete_session(_hash(sid))
    set_cookie(request, SESSION_COOKIE, "", max_age=None, samesite="Lax")


async def check_csrf(request: web.Request) -> tuple[Viewer, Form]:
    """The viewer and the posted form, after checking the form's CSRF token (403 otherwise).

    Also refuses a cross-origin ``Origin`` header: browsers send it on every POST.
    """
    viewer = await resolve_viewer(request)
    origin = request.headers.get("Origin")
    if origin and origin != "null" and origin.split("://", 1)[-1] != request.host:
        raise UIError(403, "Cross-site request refused.")
    if request.content_length is not None and request.content_length > 256 * 1024:
        raise UIError(413, "Form too large.")
    if len(await request.read()) > 256 * 1024:  # a chunked body declares no length; post() reads this cached copy
        raise UIError(413, "Form too large.")
    try:
        form = await request.post()
    except (ValueError, LookupError) as exc:  # undecodable in its charset (UnicodeDecodeError), unknown charset
        raise UIError(400, "The form is not valid (undecodable or malformed body, or unknown charset).") from exc
    sent = form.get("csrf")
    if not isinstance(sent, str) or not viewer.csrf or not hmac.compare_digest(sent.encode(), viewer.csrf.encode()):
        raise UIError(403, "Missing or invalid form token (CSRF); reload the page and try again.")
    return viewer, form


def ui_principal(request: web.Request, viewer: Viewer) -> ServicePrincipal:
    """The viewer as the caller of a service operation (face ``ui``).

    The one place the web UI builds a service principal -- account changes, policy and webhook
    changes, GC runs and registry deletes alike -- on top of the one builder of every network
    face (:func:`~moorage.api.common.request_principal`): the same request details in the audit
    entry, whichever page made the change."""
    p = viewer.principal
    scope = None
    if p is not None and p.token_scope is not None:
        scope = tuple(f"{g.pattern}:{','.join(sorted(g.actions))}" for g in p.token_scope)

    def may(action: str, repository: str) -> bool:  # the viewer's rights, as the pages show them
        return action in viewer.rights(repository, public=False)

    return request_principal(
        request,
        "ui",
        name=viewer.name,
        admin=viewer.may_administer,
        token_id=p.token_id if p is not None else None,
        scope=scope,
        may=None if viewer.sees_everything else may,
    )
