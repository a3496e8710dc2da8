"""Scheduled replication rules (``proxy.mirror_rules``): ``moorage mirror`` runs inside the server.

Each rule is a leader-only job of the scheduler (:mod:`moorage.scheduler`, named ``mirror:<rule>``):
it runs shortly after this process becomes leader and then ``interval`` seconds after its previous
run ended; the outcome of the last run (summary or error) is kept for ``GET /api/v1/mirror``, and
``POST /api/v1/mirror/{name}/run`` starts a run now.  Of several workers or replicas sharing the
database only the leader runs the rules (the others report that, and refuse a manual run).
Rules live in the configuration; the admin API reads and triggers them but does not add rules
(that would need a table: not done).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..api import apidoc as oa
from ..api import routes as route_names
from ..api.extension import ExtensionContext
from ..api.routes import Rule
from ..api.routing import RouteTable, add_routes
from ..config import MirrorRule, Settings
from ..registry.references import RegistryRef
from ..scheduler import Job, Scheduler
from .client import RegistryClient
from .mirror import Mirror

log = logging.getLogger("moorage.proxy.mirror")
_FIRST_RUN_DELAY = 2.0

# -- OpenAPI operations of the routes this module declares (moorage.api.routing, .apidoc) --
_RULE = oa.obj(
    ["name", "src", "dst", "interval", "runs", "running", "last_start", "last_end", "last_status", "last_error", "last_summary"],
    name=oa.STRING,
    src=oa.STRING,
    dst=oa.STRING,
    interval=oa.INTEGER,
    tags=oa.nullable(oa.STRING),
    platforms={"type": "array", "items": oa.STRING},
    runs=oa.INTEGER,
    running=oa.BOOLEAN,
    last_start=oa.nullable(oa.NUMBER),
    last_end=oa.nullable(oa.NUMBER),
    last_status=oa.nullable({"type": "string", "enum": ["ok", "error"]}),
    last_error=oa.nullable(oa.STRING),
    last_summary=oa.nullable({"type": "object", "additionalProperties": {"type": "integer"}}),
)
MIRROR_STATUS_DOC = oa.op(
    "proxy",
    "mirrorStatus",
    "Scheduled mirror rules and their last runs",
    {
        "200": oa.json_body(
            oa.obj(
                ["runner", "rules"],
                runner={"type": "boolean", "description": "Whether this process runs the rules."},
                rules={"type": "array", "items": _RULE},
            ),
            "Rules.",
        )
    },
    description="Only when ``proxy.mirror_rules`` is configured (404 otherwise). " + oa.ADMIN_NOTE,
    errors=(401, 403, 404, 429, 503),
)
MIRROR_RUN_DOC = oa.op(
    "proxy",
    "runMirrorRule",
    "Run a mirror rule now",
    {"202": oa.json_body(_RULE, "Woken up; the run proceeds in the background.")},
    description="503 when another worker or replica is the scheduler's leader (it runs the rules). " + oa.ADMIN_NOTE,
    parameters=[oa.param("rule", "path", {"type": "string"}, "Rule name.")],
    errors=(401, 403, 404, 429, 503),
)


@dataclass
class RuleState:
    rule: MirrorRule
    runs: int = 0
    running: bool = False
    last_start: float | None = None
    last_end: float | None = None
    last_status: str | None = None  # "ok" | "error"
    last_error: str | None = None
    last_summary: dict[str, int] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def as_dict(self) -> dict[str, Any]:
        r = self.rule
        return {
            "name": r.name,
            "src": r.src,
            "dst": r.dst,
            "interval": r.interval,
            "tags": r.tags,
            "platforms": r.platforms,
            "runs": self.runs,
            "running": self.running,
            "last_start": self.last_start,
            "last_end": self.last_end,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "last_summary": self.last_summary,
        }


def _password(env: str | None, rule: str) -> str | None:
    if env is None:
        return None
    value = os.environ.get(env)
    if value is None:
        raise ValueError(f"mirror rule {rule!r}: environment variable {env} is not set")
    return value


class MirrorScheduler:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rules: dict[str, RuleState] = {}
        for rule in settings.proxy.mirror_rules:
            if rule.name in self.rules:
                raise ValueError(f"two mirror rules are named {rule.name!r}")
            RegistryRef.parse(rule.src)
            RegistryRef.parse(rule.dst)
            _password(rule.src_password_env, rule.name)
            _password(rule.dest_password_env, rule.name)
            self.rules[rule.name] = RuleState(rule)
        self.scheduler: Scheduler | None = None

    @property
    def active(self) -> bool:
        """This process is the leader and runs the rules."""
        return self.scheduler is not None and self.scheduler.is_leader

    async def run_rule(self, state: RuleState) -> None:
        rule = state.rule
        state.running, state.last_start = True, time.time()
        src, dst = RegistryRef.parse(rule.src), RegistryRef.parse(rule.dst)
        sc = RegistryClient(
            src.base_url,
            username=rule.src_username,
            password=_password(rule.src_password_env, rule.name),
            tls_verify=rule.src_tls_verify,
            user_agent="moorage-mirror",
        )
        dc = RegistryClient(
            dst.base_url,
            username=rule.dest_username,
            password=_password(rule.dest_password_env, rule.name),
            tls_verify=rule.dest_tls_verify,
            user_agent="moorage-mirror",
        )
        try:
            report = await Mirror(src, dst, src_client=sc, dst_client=dc, tags=rule.tags, platforms=rule.platforms).run()
            summary = report.summary()
            state.last_status, state.last_error = "ok", None
            state.last_summary = {k: int(v) for k, v in (p.split("=") for p in summary.split())}
            log.info("mirror rule %s: %s", rule.name, summary)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed run is reported, the schedule goes on
            state.last_status, state.last_error = "error", f"{exc.__class__.__name__}: {exc}"[:500]
            log.warning("mirror rule %s failed: %s", rule.name, state.last_error)
        finally:
            state.runs += 1
            state.running, state.last_end = False, time.time()
            await sc.close()
            await dc.close()

    def jobs(self) -> list[Job]:
        """One leader-only job per rule; the first run waits until the server listens (a rule may
        read or write this registry)."""
        return [
            Job(
                f"mirror:{name}",
                functools.partial(self.run_rule, state),
                interval=float(state.rule.interval),
                leader_only=True,
                first_delay=_FIRST_RUN_DELAY,
                trigger=state.wake,
            )
            for name, state in self.rules.items()
        ]


def setup_mirror_rules(ctx: ExtensionContext, token_mode: bool) -> None:
    """Background runs of ``proxy.mirror_rules`` and ``/api/v1/mirror`` (called by setup_proxy)."""
    app, settings = ctx.app, ctx.settings
    scheduler = MirrorScheduler(settings)
    scheduler.scheduler = ctx.scheduler
    for job in scheduler.jobs():
        ctx.scheduler.register(job)

    async def admin(request: web.Request) -> None:
        if token_mode:
            from ..auth.credentials import require_admin

            await require_admin(request)

    async def status(request: web.Request) -> web.Response:
        await admin(request)
        return web.json_response({"runner": scheduler.active, "rules": [s.as_dict() for s in scheduler.rules.values()]})

    async def trigger(request: web.Request) -> web.Response:
        await admin(request)
        from .. import errors

        state = scheduler.rules.get(request.match_info["rule"])
        if state is None:
            raise errors.NotFound("no such mirror rule", detail={"rule": request.match_info["rule"][:100]})
        if not scheduler.active:
            raise errors.Unavailable("another worker runs the mirror rules; retry", headers={"Retry-After": "1"})
        state.wake.set()
        return web.json_response(state.as_dict(), status=202)

    table = RouteTable()
    table.add_route("GET", "/api/v1/mirror", status, name=route_names.MIRROR_STATUS, rule=Rule.ADMIN, doc=MIRROR_STATUS_DOC)
    table.add_route(
        "POST", "/api/v1/mirror/{rule}/run", trigger, name=route_names.MIRROR_RUN, rule=Rule.ADMIN, doc=MIRROR_RUN_DOC
    )
    add_routes(app, table)
