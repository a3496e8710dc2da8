"""The audit log: who did what, when, from where.

Entries come from three places:

* registry events (:meth:`AuditRecorder.entry_for_event`): manifest pushes (with their tag),
  deletes of manifests, tags and blobs, and manifest pulls -- ``aggregate`` (default) keeps
  one entry per (actor, repository, digest) per ``events.audit_pull_window`` seconds, keyed so
  that workers and replicas don't write it twice; ``all``; or ``none``.  Layer pushes and pulls
  are not entries of their own (the manifest's entry says what was pushed or pulled);
* logins (:meth:`AuditRecorder.login`): every failure, successes aggregated per (user, address)
  per ``events.audit_login_window``;
* administrative changes through the HTTP API that no service audits yet
  (:func:`admin_middleware`): repository deletes, webhook retries -- and any other ``/api/v1``
  change another extension adds (``api.<route>``); GC runs are copied from the ``gc_runs``
  table.  Account changes (users, grants to users and to directory groups, tokens, namespaces,
  visibility), policies (quotas, retention, immutable tags, the vulnerability pull policy and
  its allow-list) and webhook endpoints are audited by their services in the
  change's own transaction, whichever face -- API, web UI, CLI -- made them, with the face and
  outcome; the middleware skips their routes (:data:`SERVICE_AUDITED`).

Entries of events that also go to a webhook are written with the outbox rows in the request's
one small transaction; all others (and pulls and logins) are buffered and written by the
background job about once a second, so the audit log adds no write to a push or pull -- a
crash can lose that last second of them.  Values kept in ``detail`` are an allow-list: never a password, secret or token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from yarl import URL

from ..config import EventsSettings
from ..metadata.events_store import AuditEntry, EventsStore
from ..registry.events import Pull, RegistryEvent
from ..registry.safejson import UntrustedJSONError, loads_untrusted
from .stats import EventMetrics

log = logging.getLogger("moorage.events")

#: Buffered entries beyond this are dropped (and counted in the log) rather than eat memory.
MAX_BUFFER = 50_000
#: Pull keys remembered in memory to skip the database write of an aggregated pull already
#: recorded this window.  Only a shortcut: the database dedupes by ``dedupe_key`` anyway, so a
#: small bound costs a few redundant (do-nothing) inserts, while 100,000 keys held ~25 MiB.
_SEEN_LIMIT = 10_000
#: Admin-API route name -> audit action, for the requests no service audits: the two that start
#: work rather than change a setting -- a scan asked for (its SBOMs are pushes, audited by the
#: registry service) and a mirror rule run now (its copies are pushes with face ``mirror``).
#: Every account, policy, webhook and repository change is audited by its service
#: (:data:`SERVICE_AUDITED`).  Named by what was asked, as operations are, never by the route.
ROUTE_ACTIONS: dict[str, str] = {"api_v1_insight_scan": "insight.scan", "api_v1_mirror_run": "mirror.run"}
#: Routes whose operation a service audits (in the change's transaction, with face and
#: outcome): the middleware writes nothing for them, or every entry would be there twice.
SERVICE_AUDITED = frozenset(
    {
        "api_v1_me_token_add",
        "api_v1_me_token_delete",
        "api_v1_token_add",
        "api_v1_token_delete",
        "api_v1_user_add",
        "api_v1_user_delete",
        "api_v1_user_password",
        "api_v1_grant_add",
        "api_v1_grant_delete",
        "api_v1_group_grant_add",
        "api_v1_group_grant_delete",
        "api_v1_namespace_add",
        "api_v1_visibility",
        "api_v1_webhook_add",
        "api_v1_webhook_delete",
        "api_v1_repository_delete",
        "api_v1_webhook_retry",
        "api_v1_insight_policy_put",
        "api_v1_insight_policy_delete",
        "api_v1_insight_allow",
        "api_v1_insight_disallow",
    }
)
#: Request fields worth keeping (everything else -- passwords, secrets -- is never stored).
SAFE_FIELDS = (
    "name",
    "user",
    "pattern",
    "actions",
    "admin",
    "robot",
    "repository",
    "namespace",
    "public",
    "scope",
    "expires_in",
    "url",
    "format",
    "repositories",
    "targets",
    "id",
)


class AuditRecorder:
    def __init__(self, store: EventsStore, cfg: EventsSettings, metrics: EventMetrics) -> None:
        self.store = store
        self.cfg = cfg
        self.metrics = metrics
        self._buffer: list[AuditEntry] = []
        #: first-seen keys (a pull's: a tuple, a login's: its dedupe key) -> end of their window
        self._seen: dict[object, float] = {}
        self._dropped = 0

    # -- registry events ------------------------------------------------------------------
    @property
    def wants_pulls(self) -> bool:
        return self.cfg.audit_pulls != "none"

    def entry_for_event(self, event: RegistryEvent) -> AuditEntry | None:
        """The audit entry of an event, or None if it is not one (or was recorded this window)."""
        if event.action == "pull":
            return self.entry_for_pull(Pull.of(event))
        if event.kind == "blob" and event.action != "delete":
            return None
        if event.action == "mount":
            return None
        a = event.actor
        return {
            "time": event.timestamp.timestamp(),
            "actor": a.name,
            # A repository delete is named as the admin API always named it.
            "action": f"repository.{event.action}" if event.kind == "repository" else event.action,
            "repository": event.repository,
            "target": event.digest or event.tag,
            "client_ip": a.addr,
            "user_agent": a.user_agent,
            "detail": {
                k: v
                for k, v in (
                    ("kind", event.kind),
                    ("tag", event.tag),
                    ("digest", event.digest),
                    ("media_type", event.media_type),
                    ("size", event.size),
                    ("request_id", a.request_id or None),
                    ("face", event.face),
                    ("event_id", event.id),
                )
                if v is not None
            },
        }

    def entry_for_pull(self, pull: Pull) -> AuditEntry | None:
        """The audit entry of a pull: a manifest's, the first of its (actor, repository, digest)
        in its window with ``aggregate``, every one with ``all``.  The check comes before
        anything is built (pulls are many): a repeated pull costs a tuple and a dict lookup."""
        if pull.kind != "manifest":  # a layer pull is part of its manifest's
            return None
        mode = self.cfg.audit_pulls
        if mode == "none":
            return None
        key = None
        if mode == "aggregate":
            span = self.cfg.audit_pull_window
            window = int(pull.time // span)
            if not self._first((pull.user, pull.repository, pull.digest, window), (window + 1) * span, pull.time):
                return None
            key = f"pull|{pull.user or ''}|{pull.repository}|{pull.digest}|{window}"
        a = pull.actor
        entry: AuditEntry = {
            "time": pull.time,
            "actor": a.name,
            "action": "pull",
            "repository": pull.repository,
            "target": pull.digest or pull.tag,
            "client_ip": a.addr,
            "user_agent": a.user_agent,
            "detail": {
                k: v
                for k, v in (
                    ("kind", pull.kind),
                    ("tag", pull.tag),
                    ("digest", pull.digest),
                    ("media_type", pull.media_type),
                    ("size", pull.size),
                    ("request_id", a.request_id or None),
                )
                if v is not None
            },
        }
        if key is not None:
            entry["dedupe_key"] = key
        return entry

    def count_pull(self, pull: Pull) -> None:
        """The bus's pull counter (registered when pulls are audited): the entry, if the pull
        makes one, is buffered for the housekeeping flush -- no write on the request path."""
        entry = self.entry_for_pull(pull)
        if entry is not None:
            self.buffer(entry)

    def _first(self, key: object, until: float, now: float | None = None) -> bool:
        """True the first time this process sees ``key`` (before ``until``)."""
        if now is None:
            now = time.time()
        seen = self._seen.get(key)
        if seen is not None and seen > now:
            return False
        if len(self._seen) > _SEEN_LIMIT:
            self._seen = {k: v for k, v in self._seen.items() if v > now}
            if len(self._seen) > _SEEN_LIMIT:
                self._seen.clear()
        self._seen[key] = until
        return True

    # -- buffered entries -----------------------------------------------------------------
    def buffer(self, entry: AuditEntry) -> None:
        if len(self._buffer) >= MAX_BUFFER:
            self._dropped += 1
            return
        self._buffer.append(entry)

    async def flush(self) -> None:
        if self._dropped:
            log.warning("audit: %d buffered entries dropped (database too slow or away)", self._dropped)
            self._dropped = 0
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        try:
            await self.store.audit(rows)
        except Exception:  # noqa: BLE001 - keep them for the next flush
            self._buffer = rows + self._buffer
            del self._buffer[MAX_BUFFER:]
            raise
        self.metrics.audit_entries.inc(len(rows))

    async def write(self, rows: list[AuditEntry]) -> None:
        await self.store.audit(rows)
        self.metrics.audit_entries.inc(len(rows))

    # -- logins ---------------------------------------------------------------------------
    def login(self, request: web.Request, username: str, ok: bool, reason: str = "") -> None:
        now = time.time()
        addr = request.remote or ""
        entry: AuditEntry = {
            "time": now,
            "actor": username[:255],
            "action": "login" if ok else "login.failed",
            "repository": None,
            "target": request.path[:300],
            "client_ip": addr,
            "user_agent": request.headers.get("User-Agent", "")[:300],
            "detail": {"reason": reason} if reason else None,
        }
        if ok:
            window = int(now // self.cfg.audit_login_window)
            key = f"login|{username[:200]}|{addr}|{window}"
            if not self._first(key, (window + 1) * self.cfg.audit_login_window):
                return
            entry["dedupe_key"] = key
        else:
            self.metrics.login_failures.labels(reason or "invalid").inc()
        self.buffer(entry)


def wrap_logins(state: Any, recorder: AuditRecorder) -> None:
    """Record the outcome of the auth module's password/token checks.

    Wraps the two login methods of the auth state instance (``login`` for token mode and the
    admin API, ``htpasswd_login`` for htpasswd mode) so the auth module itself needs no change.
    """
    from .. import errors

    def wrapped(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def login(request: web.Request, username: str, *args: Any, **kwargs: Any) -> Any:
            try:
                result = await fn(request, username, *args, **kwargs)
            except errors.TooManyRequests:
                recorder.login(request, username, False, "rate_limited")
                raise
            except errors.RegistryError:
                recorder.login(request, username, False, "invalid_credentials")
                raise
            recorder.login(request, username, True)
            return result

        return login

    found = 0
    for name in ("login", "htpasswd_login"):
        fn = getattr(state, name, None)
        if fn is not None:
            setattr(state, name, wrapped(fn))
            found += 1
    if not found:
        log.warning("audit: the auth module has no login method to observe; logins are not audited")


def _safe_detail(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        return {}
    out: dict[str, Any] = {}
    for k in SAFE_FIELDS:
        v = data.get(k)
        if isinstance(v, (str, bool, int, float)) or (isinstance(v, list) and all(isinstance(i, str) for i in v)):
            out[k] = v[:300] if isinstance(v, str) else v
    if isinstance(out.get("url"), str):
        out["url"] = _without_credentials(out["url"])
    return out


def _without_credentials(url: str) -> str:
    """``http://user:pw@host/x`` -> ``http://host/x`` (and the query string dropped: tokens live there too)."""
    try:
        u = URL(url)
        return str(u.with_user(None).with_query(None)) if u.host else ""
    except (ValueError, TypeError):
        return ""


def audited_route(route: str) -> bool:
    """Whether the admin middleware records changes made through this route (the ``/api/v1``
    routes whose service does not audit them itself)."""
    return route not in SERVICE_AUDITED and (route in ROUTE_ACTIONS or route.startswith("api_v1_"))


def admin_middleware(recorder: AuditRecorder) -> Middleware:
    """Record every successful change made through ``/api/v1`` (and this package's routes)."""

    @web.middleware
    async def audit_admin(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        route = getattr(request.match_info.route, "name", None) or ""
        if request.method in ("GET", "HEAD", "OPTIONS") or not audited_route(route):
            return await handler(request)
        body: dict[str, Any] = {}
        if request.method in ("POST", "PUT") and request.content_length and request.content_length <= 64 * 1024:
            raw = await request.read()  # cached by aiohttp: the handler reads the same bytes
            try:
                body = loads_untrusted(raw or b"{}")
            except UntrustedJSONError:
                body = {}
        response = await handler(request)
        if response.status < 400:
            action = ROUTE_ACTIONS.get(route) or _action_of(route)
            detail = {**_safe_detail(body), **_safe_detail(dict(request.match_info)), **_safe_detail(dict(request.query))}
            repository = detail.get("repository") if isinstance(detail.get("repository"), str) else None
            target = next((str(detail[k]) for k in ("pattern", "name", "user", "namespace", "id") if k in detail), None)
            recorder.buffer(
                {
                    "time": time.time(),
                    "actor": request.get("user"),
                    "action": action,
                    "repository": repository,
                    "target": target,
                    "client_ip": request.remote or "",
                    "user_agent": request.headers.get("User-Agent", "")[:300],
                    "detail": detail or None,
                    "face": "api",
                    "outcome": "ok",
                }
            )
        return response

    return audit_admin


_OWN_ACTIONS = {"webhook_add": "webhook.add", "webhook_delete": "webhook.delete", "webhook_retry": "webhook.retry"}


def _action_of(route: str) -> str:
    if route.startswith("api_v1_"):  # one name per route whatever auth.mode (moorage.api.routing)
        route = route[len("api_v1_") :]
    return _OWN_ACTIONS.get(route) or "api." + route
