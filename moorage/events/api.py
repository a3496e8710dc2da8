"""``/api/v1/webhooks`` and ``/api/v1/audit``.

::

    GET    /api/v1/webhooks                       POST /api/v1/webhooks {name, url, secret?, format?,
                                                       actions?, repositories, targets?, timeout?, max_attempts?}
    GET    /api/v1/webhooks/{name}                DELETE /api/v1/webhooks/{name}
    GET    /api/v1/webhooks/{name}/deliveries[?status=&limit=&before=]
    POST   /api/v1/webhooks/{name}/deliveries/{id}/retry      (a dead delivery back in the queue)
    GET    /api/v1/audit[?actor=&repository=&action=&since=&until=&limit=&before=]

Who may: with ``auth.mode: token`` administrators see and manage everything; a *namespace
administrator* -- a user with the ``admin`` action on ``NS/*`` (or any user for their own
namespace, ``alice/*``) -- sees and deletes webhooks whose every repository pattern lies in NS,
creates them only where ``events.webhooks.namespace_admins`` is true (and only to public
destinations: :mod:`.webhooks`), and reads the audit entries of NS's repositories plus their
own; anybody else reads only their own audit entries and no webhooks.  Creating and deleting
are operations of the :class:`~.webhooks.WebhookService` (it audits them).  A scoped access token administers nothing.  With ``htpasswd`` every
authenticated user is an administrator (as for the rest of the registry); with ``none``, anyone.
Config-file endpoints are visible to administrators only and can't be changed here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import errors
from ..api import apidoc as oa
from ..api import routes as route_names
from ..api.common import json_object
from ..api.routes import Rule
from ..api.routing import RouteTable
from ..config import Settings
from ..metadata.errors import storable
from ..metadata.events_store import DEAD, DELIVERED, DELIVERING, PENDING, AuditQuery, EventsStore
from ..registry.principal import Principal as ServicePrincipal
from .endpoints import Endpoint, EndpointSet
from .present import summary
from .query import iso, parse_time
from .webhooks import WebhookService

if TYPE_CHECKING:
    from ..registry.access_rules import Principal

MAX_LIMIT = 1000


def _time_q(key: str, text: str) -> dict[str, Any]:
    return oa.param(key, "query", {"type": "string"}, text)


# -- OpenAPI operations of the routes this module declares (moorage.api.routing, .apidoc) --
_HOOK = oa.param("name", "path", {"type": "string"}, "Webhook name.")
_WEBHOOK = oa.obj(
    [
        "name",
        "url",
        "format",
        "actions",
        "repositories",
        "targets",
        "timeout",
        "max_attempts",
        "origin",
        "namespace",
        "created_by",
        "secret_set",
    ],
    name=oa.STRING,
    url=oa.STRING,
    format={"type": "string", "enum": ["distribution", "cloudevents"]},
    actions={"type": "array", "items": oa.STRING},
    repositories={"type": "array", "items": oa.STRING},
    targets={"type": "array", "items": oa.STRING},
    timeout=oa.NUMBER,
    max_attempts=oa.INTEGER,
    origin={"type": "string", "description": "``config`` (config file, read-only) or ``api``."},
    namespace=oa.nullable(oa.STRING),
    created_by=oa.nullable(oa.STRING),
    secret_set=oa.BOOLEAN,
    secret={"type": "string", "description": "Only in the creation answer, when generated (shown once)."},
)
_WEBHOOK_BODY = {
    "type": "object",
    "required": ["name", "url"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"},
        "url": {"type": "string", "maxLength": 2048, "pattern": "^https?://[^\\s]+$"},
        "secret": {"type": "string", "description": "HMAC-SHA256 key of X-Moorage-Signature; absent = generated."},
        "format": {"type": "string", "enum": ["distribution", "cloudevents"]},
        "actions": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": ["push", "pull", "delete", "mount"]}},
        "repositories": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "maxLength": 255},
            "description": "Repository patterns (``*`` matches any run of characters).",
        },
        "targets": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": ["manifest", "tag", "blob"]}},
        "timeout": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 300},
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": 1000},
    },
}
_DELIVERY = oa.obj(
    [
        "id",
        "endpoint",
        "repository",
        "event_id",
        "action",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status",
        "last_error",
        "created_at",
        "finished_at",
    ],
    id=oa.INTEGER,
    endpoint=oa.STRING,
    repository=oa.STRING,
    event_id=oa.STRING,
    action=oa.STRING,
    status={"type": "string", "enum": ["pending", "delivering", "delivered", "dead"]},
    attempts=oa.INTEGER,
    next_attempt_at=oa.nullable(oa.NUMBER),
    last_status=oa.nullable(oa.INTEGER),
    last_error=oa.nullable(oa.STRING),
    created_at=oa.NUMBER,
    finished_at=oa.nullable(oa.NUMBER),
)
_AUDIT_ENTRY = oa.obj(
    ["id", "time", "timestamp", "actor", "action", "repository", "target", "client_ip", "user_agent", "detail"],
    id=oa.INTEGER,
    time={"type": "string", "description": "RFC 3339."},
    timestamp=oa.NUMBER,
    actor=oa.nullable(oa.STRING),
    action=oa.STRING,
    repository=oa.nullable(oa.STRING),
    target=oa.nullable(oa.STRING),
    client_ip=oa.nullable(oa.STRING),
    user_agent=oa.nullable(oa.STRING),
    detail={"nullable": True},
    face={**oa.nullable(oa.STRING), "description": "Through which face: api, ui, cli, v2 ... (null on older entries)."},
    outcome={**oa.nullable(oa.STRING), "description": "ok or denied (null on older entries)."},
    summary={
        **oa.STRING,
        "description": "What the entry records, in one line for people: a push's repo:tag and short digest, whose access token, what a garbage collection removed.",
    },
)
WEBHOOKS_DOC = oa.op(
    "events",
    "listWebhooks",
    "Webhooks the caller administers",
    {"200": oa.json_body(oa.obj(["webhooks"], webhooks={"type": "array", "items": _WEBHOOK}), "Webhooks.")},
    description="Administrators see all; namespace administrators those of their namespaces.",
)
WEBHOOK_ADD_DOC = oa.op(
    "events",
    "addWebhook",
    "Add a webhook",
    {"201": oa.json_body(_WEBHOOK, "Created (``secret`` when generated, shown once).")},
    description="A namespace administrator's repository patterns must all lie in one namespace they administer.",
    body=_WEBHOOK_BODY,
    errors=(400, 401, 403, 413, 429, 503),
)
WEBHOOK_GET_DOC = oa.op(
    "events",
    "getWebhook",
    "A webhook",
    {"200": oa.json_body(_WEBHOOK, "The webhook.")},
    parameters=[_HOOK],
    errors=(400, 401, 403, 404, 429, 503),
)
WEBHOOK_DELETE_DOC = oa.op(
    "events",
    "deleteWebhook",
    "Delete a webhook (not one from the config file: 400)",
    oa.NO_CONTENT,
    parameters=[_HOOK],
    errors=(400, 401, 403, 404, 429, 503),
)
WEBHOOK_DELIVERIES_DOC = oa.op(
    "events",
    "listDeliveries",
    "Deliveries of a webhook, newest first",
    {
        "200": oa.json_body(
            oa.obj(["webhook", "deliveries"], webhook=oa.STRING, deliveries={"type": "array", "items": _DELIVERY}), "Deliveries."
        )
    },
    parameters=[
        _HOOK,
        oa.param("status", "query", {"type": "string", "enum": ["pending", "delivering", "delivered", "dead"]}, "Only these."),
        oa.LIMIT,
        oa.BEFORE,
    ],
    errors=(400, 401, 403, 404, 429, 503),
)
WEBHOOK_RETRY_DOC = oa.op(
    "events",
    "retryDelivery",
    "Put a dead delivery back in the queue",
    {"202": oa.json_body(oa.obj(["id", "status"], id=oa.INTEGER, status={"type": "string", "enum": ["pending"]}), "Queued.")},
    parameters=[_HOOK, oa.param("id", "path", {"type": "string"}, "Delivery id.")],
    errors=(400, 401, 403, 404, 429, 503),
)
AUDIT_DOC = oa.op(
    "events",
    "queryAudit",
    "Audit log, newest first",
    {
        "200": oa.json_body(
            oa.obj(
                ["entries", "next"],
                entries={"type": "array", "items": _AUDIT_ENTRY},
                next={"type": "integer", "nullable": True, "description": "``before`` of the next page, or null."},
            ),
            "Entries.",
        )
    },
    description="Administrators read everything; namespace administrators their namespaces' entries and their own; other users their own.",
    parameters=[
        oa.param("actor", "query", {"type": "string", "maxLength": 255}, "User name."),
        oa.param("repository", "query", {"type": "string", "maxLength": 255}, "Exact name, or a prefix ending in ``*``."),
        oa.param("action", "query", {"type": "string", "maxLength": 255}, "Action."),
        _time_q("since", "RFC 3339 time or a duration back from now (e.g. ``1h``)."),
        _time_q("until", "RFC 3339 time or a duration back from now."),
        oa.LIMIT,
        oa.BEFORE,
    ],
)


@dataclass
class Caller:
    name: str | None
    admin: bool
    namespaces: list[str] = field(default_factory=list)

    def administers(self, namespace: str | None) -> bool:
        return self.admin or (namespace is not None and namespace in self.namespaces)


def _bad(message: str) -> errors.RegistryError:
    return errors.Unsupported(message, status=400)


def administered_namespaces(principal: Principal) -> list[str]:
    """Namespaces a (non-admin) principal administers: their own, and ``NS`` of every grant
    of ``admin`` on ``NS/*``."""
    from ..registry.access_rules import expand

    out: list[str] = []
    if principal.name and not principal.is_robot:
        out.append(principal.name)
    for g in principal.grants:
        p = g.pattern
        if "admin" in expand(g.actions) and p.endswith("/*") and "*" not in p[:-2] and p[:-2]:
            out.append(p[:-2])
    return sorted(set(out))


class EventsAPI:
    def __init__(self, settings: Settings, store: EventsStore, endpoints: EndpointSet, webhooks: WebhookService) -> None:
        self.settings = settings
        self.store = store
        self.endpoints = endpoints
        self.webhooks = webhooks
        self.token_mode = settings.auth.mode == "token"

    # -- who is asking --------------------------------------------------------------------
    async def caller(self, request: web.Request) -> Caller:
        mode = self.settings.auth.mode
        if mode == "none":
            return Caller(None, True)
        if mode != "token":  # htpasswd: the auth middleware has authenticated the caller
            return Caller(request.get("user"), True)
        from ..api.common import AUTHENTICATOR
        from ..auth.credentials import SCOPED, caller  # the auth module's credential check (basic or bearer)

        user, admin = await caller(request)
        if admin:
            return Caller(user.name, True)
        if request.get(SCOPED):
            return Caller(user.name, False)
        principal = await request.app[AUTHENTICATOR].principal(user, None)
        return Caller(user.name, False, administered_namespaces(principal))

    @staticmethod
    def principal(request: web.Request, caller: Caller) -> ServicePrincipal:
        """The caller as a service :class:`~moorage.registry.principal.Principal` (face ``api``)."""
        from ..api.common import request_principal

        return request_principal(request, "api", name=caller.name, admin=caller.admin)

    def _visible(self, caller: Caller, name: str) -> Endpoint:
        ep = self.endpoints.get(name)
        if ep is None or not caller.administers(ep.namespace):
            raise errors.NotFound(f"no webhook {name[:64]!r}")
        return ep

    # -- webhooks -------------------------------------------------------------------------
    async def list_webhooks(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        if not caller.admin and not caller.namespaces:
            raise errors.Denied("administrator or namespace-administrator rights required")
        await self.endpoints.reload()
        shown = [e.public_dict() for e in self.endpoints.all if caller.administers(e.namespace)]
        return web.json_response({"webhooks": shown})

    async def add_webhook(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        data = await json_object(request)
        body = await self.webhooks.create(self.principal(request, caller), caller.namespaces, data)
        return web.json_response(body, status=201)

    async def get_webhook(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        await self.endpoints.reload()
        return web.json_response(self._visible(caller, request.match_info["name"]).public_dict())

    async def delete_webhook(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        await self.webhooks.delete(self.principal(request, caller), caller.namespaces, request.match_info["name"])
        return web.Response(status=204)

    async def deliveries(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        await self.endpoints.reload()
        ep = self._visible(caller, request.match_info["name"])
        status = request.query.get("status") or None
        if status is not None and status not in (PENDING, DELIVERING, DELIVERED, DEAD):
            raise _bad("status must be one of pending, delivering, delivered, dead")
        rows = await self.store.deliveries(ep.name, status=status, limit=_limit(request), before_id=_int_param(request, "before"))
        return web.json_response({"webhook": ep.name, "deliveries": [d.public_dict() for d in rows]})

    async def retry(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        await self.endpoints.reload()
        ep = self._visible(caller, request.match_info["name"])
        raw = request.match_info["id"]
        if not _decimal(raw):
            raise errors.NotFound("no such delivery")
        await self.webhooks.retry(self.principal(request, caller), caller.namespaces, ep.name, int(raw))
        return web.json_response({"id": int(raw), "status": PENDING}, status=202)

    # -- audit ----------------------------------------------------------------------------
    async def audit(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        q = AuditQuery(limit=_limit(request), before_id=_int_param(request, "before"))
        for key in ("actor", "repository", "action"):
            value = request.query.get(key)
            if value is not None:
                if len(value) > 255:
                    raise _bad(f"{key} too long")
                if not storable(value):  # NUL: PostgreSQL would refuse the query (a 500)
                    raise _bad(f"{key} contains NUL or invalid Unicode")
                setattr(q, key, value)
        try:
            if request.query.get("since"):
                q.since = parse_time(request.query["since"])
            if request.query.get("until"):
                q.until = parse_time(request.query["until"])
        except ValueError as exc:
            raise _bad(str(exc)) from None
        restrict_audit(q, caller)
        entries = await self.store.query_audit(q)
        return web.json_response(
            {"entries": [public_entry(e) for e in entries], "next": entries[-1]["id"] if len(entries) == q.limit else None}
        )

    def routes(self) -> RouteTable:
        """AUTHENTICATED: namespace administrators see their own webhooks, so the handlers narrow
        what a signed-in user sees."""
        table = RouteTable()
        auth = Rule.AUTHENTICATED
        table.add_route("GET", "/api/v1/webhooks", self.list_webhooks, name=route_names.WEBHOOKS, rule=auth, doc=WEBHOOKS_DOC)
        table.add_route(
            "POST", "/api/v1/webhooks", self.add_webhook, name=route_names.WEBHOOK_ADD, rule=auth, doc=WEBHOOK_ADD_DOC
        )
        table.add_route(
            "GET", "/api/v1/webhooks/{name}", self.get_webhook, name=route_names.WEBHOOK_GET, rule=auth, doc=WEBHOOK_GET_DOC
        )
        table.add_route(
            "DELETE",
            "/api/v1/webhooks/{name}",
            self.delete_webhook,
            name=route_names.WEBHOOK_DELETE,
            rule=auth,
            doc=WEBHOOK_DELETE_DOC,
        )
        table.add_route(
            "GET",
            "/api/v1/webhooks/{name}/deliveries",
            self.deliveries,
            name=route_names.WEBHOOK_DELIVERIES,
            rule=auth,
            doc=WEBHOOK_DELIVERIES_DOC,
        )
        table.add_route(
            "POST",
            "/api/v1/webhooks/{name}/deliveries/{id}/retry",
            self.retry,
            name=route_names.WEBHOOK_RETRY,
            rule=auth,
            doc=WEBHOOK_RETRY_DOC,
        )
        table.add_route("GET", "/api/v1/audit", self.audit, name=route_names.AUDIT, rule=auth, doc=AUDIT_DOC)
        return table


def restrict_audit(q: AuditQuery, caller: Caller) -> None:
    """The audit read rule, for every face that lists entries (API, web UI): administrators
    read everything; anybody else the entries of the namespaces they administer, and their own."""
    if not caller.admin:
        q.namespaces = caller.namespaces
        q.own_actor = caller.name or ""


def public_entry(e: dict[str, Any]) -> dict[str, Any]:
    """An audit entry as the API and ``moorage audit --json`` show it; ``summary`` is the one
    line a person reads (:func:`.present.summary`: the tag of a push, whose token, who ran GC)."""
    return {
        "id": e["id"],
        "time": iso(e["time"]),
        "timestamp": e["time"],
        "actor": e["actor"],
        "action": e["action"],
        "repository": e["repository"],
        "target": e["target"],
        "client_ip": e["client_ip"],
        "user_agent": e["user_agent"],
        "detail": e["detail"],
        "face": e.get("face"),
        "outcome": e.get("outcome"),
        "summary": summary(e),
    }


def _decimal(raw: str) -> bool:
    """ASCII digits that fit a 64-bit id: ``str.isdigit()`` alone accepts '²' or '٣', which
    ``int()`` refuses (a 500), and ``int()`` refuses more than 4300 digits."""
    return raw.isascii() and raw.isdigit() and len(raw) <= 18


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "100")
    if not _decimal(raw) or not 0 < int(raw) <= MAX_LIMIT:
        raise errors.PaginationNumberInvalid(f"limit must be 1..{MAX_LIMIT}", detail={"limit": raw[:50]})
    return int(raw)


def _int_param(request: web.Request, key: str) -> int | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return None
    if not _decimal(raw):
        raise _bad(f"{key} must be a number")
    return int(raw)
