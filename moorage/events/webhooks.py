"""The webhook service: creating and deleting webhook endpoints (``/api/v1/webhooks``).

Same shape as the accounts service (:mod:`moorage.accounts`): the caller is an explicit
:class:`~moorage.registry.principal.Principal`, and each operation authorizes, validates,
changes and writes its audit entry (``webhook.add``, ``webhook.delete``) in the change's
transaction.

Who may (docs/events.md):

* administrators create webhooks for any repositories, to any URL -- they are trusted with
  the registry's network position;
* namespace administrators (``admin`` on ``NS/*``, or a user in their own namespace) only
  where ``events.webhooks.namespace_admins`` is true, for patterns inside one namespace they
  administer, and only to destinations outside loopback, link-local and private ranges
  unless ``events.webhooks.allowed_networks`` lists them -- checked here on the URL, and on
  every connection a delivery opens (:mod:`.netguard`);
* a namespace administrator deletes the webhooks of the namespaces they administer (also
  when creating is off: removing one is always safe), sends them a test event
  (``webhook.test``) and puts their dead deliveries back in the queue (``webhook.retry``) --
  like the webhook itself, invisible (404) to anyone else.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from .. import errors
from ..config import Settings, WebhookEndpoint
from ..metadata.db import Database
from ..metadata.events_store import DEAD, EventsStore, outbox_row
from ..registry.audit import AuditTrail, operation
from ..registry.events import Actor, RegistryEvent
from ..registry.principal import Principal
from .audit import _without_credentials
from .endpoints import Endpoint, EndpointSet
from .formats import Source, render
from .netguard import check_url, networks
from .patterns import valid_pattern

#: Fields a webhook made through the API may have (``headers`` and ``secret_env`` are config-file only).
API_FIELDS = frozenset({"name", "url", "secret", "format", "actions", "repositories", "targets", "timeout", "max_attempts"})


def _bad(message: str) -> errors.RegistryError:
    return errors.Unsupported(message[:300], status=400)


def namespace_of_patterns(patterns: Sequence[str], namespaces: Sequence[str]) -> str | None:
    """The one administered namespace holding every pattern, or None."""
    for ns in namespaces:
        if all(p == ns or p.startswith(ns + "/") for p in patterns):
            return ns
    return None


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err.get("loc", ()))
        return f"{where}: {err.get('msg', '')}"[:300]
    return str(exc)[:300]


class WebhookService:
    """Webhook endpoints made through the API (config-file ones are read-only)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        store: EventsStore,
        endpoints: EndpointSet,
        source: Source | None = None,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        #: Where test events say they come from, and the delivery worker's wake-up call.
        self.source = source or Source(addr=settings.addr, instance_id=str(uuid.uuid4()))
        self.wake = wake or (lambda: None)
        self.settings = settings
        self.store = store
        self.endpoints = endpoints
        self.rules = settings.events.webhooks
        self.allowed = networks(self.rules.allowed_networks)
        self.audit = AuditTrail(db, enabled=settings.events.enabled)

    async def _denied(self, p: Principal, action: str, target: str, reason: str) -> errors.RegistryError:
        await self.audit.denied(p, action, target=target[:64], reason=reason)
        return errors.Denied(reason)

    @operation("webhook.add")
    async def create(self, p: Principal, administers: Sequence[str], data: dict[str, Any]) -> dict[str, Any]:
        """A new endpoint from the API body ``data``; its public view (with the secret, once,
        if one was generated).  ``administers``: the namespaces ``p`` administers."""
        raw_name = data.get("name")
        name = raw_name[:64] if isinstance(raw_name, str) else ""
        if not p.admin and not self.rules.namespace_admins:
            raise await self._denied(p, "webhook.add", name, "webhooks are created by administrators")
        if not p.admin and not administers:
            raise await self._denied(p, "webhook.add", name, "administrator or namespace-administrator rights required")
        unknown = set(data) - API_FIELDS
        if unknown:
            raise _bad(f"unknown field(s): {', '.join(sorted(unknown))[:200]}")
        data = dict(data)
        generated = None
        if not data.get("secret"):
            data["secret"] = generated = secrets.token_urlsafe(32)
        try:
            cfg = WebhookEndpoint(**data)
        except (ValidationError, TypeError) as exc:
            raise _bad(f"invalid webhook: {_first_error(exc)}") from None
        for pattern in cfg.repositories:
            if not valid_pattern(pattern):
                raise _bad(f"invalid repository pattern {pattern[:100]!r}")
        if not cfg.actions or not cfg.targets or not cfg.repositories:
            raise _bad("actions, targets and repositories must not be empty")
        namespace = None
        if not p.admin:
            namespace = namespace_of_patterns(cfg.repositories, administers)
            if namespace is None:
                raise await self._denied(
                    p, "webhook.add", cfg.name, "every repository pattern must lie in one namespace you administer"
                )
            why = await check_url(cfg.url, self.allowed)
            if why is not None:
                raise _bad(f"webhook destination refused: {why}")
        if cfg.name in self.endpoints.configured:
            raise _bad(f"webhook {cfg.name!r} is defined in the config file")
        row = {
            "name": cfg.name,
            "url": cfg.url,
            "secret": cfg.secret_value(),
            "format": cfg.format,
            "actions": list(dict.fromkeys(cfg.actions)),
            "repositories": list(dict.fromkeys(cfg.repositories)),
            "targets": list(dict.fromkeys(cfg.targets)),
            "timeout": cfg.timeout,
            "max_attempts": cfg.max_attempts,
            "namespace": namespace,
            "created_by": p.name,
        }
        async with self.db.write() as conn:
            if not await self.store.create_webhook(row, conn=conn):
                raise _bad(f"webhook {cfg.name!r} exists already")
            await self.audit.record(
                conn,
                self.audit.entry(
                    p,
                    "webhook.add",
                    target=cfg.name,
                    detail={
                        "url": _without_credentials(cfg.url),
                        "namespace": namespace,
                        "repositories": row["repositories"],
                        "actions": row["actions"],
                    },
                ),
            )
        await self.endpoints.reload()
        ep = self.endpoints.get(cfg.name)
        body = ep.public_dict() if ep else {"name": cfg.name}
        if generated:
            body["secret"] = generated  # shown once
        return body

    @operation("webhook.delete")
    async def delete(self, p: Principal, administers: Sequence[str], name: str) -> None:
        """Delete an API-made endpoint ``p`` administers (404 for one they may not see)."""
        await self.endpoints.reload()
        ep = self.endpoints.get(name)
        if ep is None or not (p.admin or (ep.namespace is not None and ep.namespace in administers)):
            raise errors.NotFound(f"no webhook {name[:64]!r}")
        if ep.origin == "config":
            raise _bad(f"webhook {ep.name!r} is defined in the config file")
        async with self.db.write() as conn:
            if not await self.store.delete_webhook(ep.name, conn=conn):
                raise errors.NotFound(f"no webhook {ep.name!r}")
            await self.audit.record(
                conn, self.audit.entry(p, "webhook.delete", target=ep.name, detail={"namespace": ep.namespace})
            )
        await self.endpoints.reload()

    async def _visible(self, administers: Sequence[str], p: Principal, name: str) -> Endpoint:
        """The endpoint ``name`` if ``p`` administers it (config-file ones: administrators
        only); 404 otherwise, as for one that does not exist."""
        await self.endpoints.reload()
        ep = self.endpoints.get(name)
        if ep is None or not (p.admin or (ep.namespace is not None and ep.namespace in administers)):
            raise errors.NotFound(f"no webhook {name[:64]!r}")
        return ep

    @operation("webhook.retry")
    async def retry(self, p: Principal, administers: Sequence[str], name: str, delivery_id: int) -> None:
        """Put dead delivery ``delivery_id`` of ``name`` back in the queue."""
        ep = await self._visible(administers, p, name)
        async with self.db.write() as conn:
            if not await self.store.retry(delivery_id, ep.name, conn=conn):
                raise errors.NotFound("no such dead delivery")
            await self.audit.record(
                conn,
                self.audit.entry(p, "webhook.retry", target=ep.name, detail={"delivery": delivery_id, "status": DEAD}),
            )
        self.wake()

    @operation("webhook.test")
    async def send_test(self, p: Principal, administers: Sequence[str], name: str) -> str:
        """Queue a test event for ``name``: a manifest push to ``moorage-test/webhook`` (tag
        ``test``, no digest), rendered in the endpoint's format like any event, so a receiver
        sees exactly what a real push will look like.  Delivered by the delivery worker (the
        deliveries list shows the outcome); the outbox row and the audit entry commit together.
        Returns the event id."""
        ep = await self._visible(administers, p, name)
        event = RegistryEvent(
            action="push",
            kind="manifest",
            repository="moorage-test/webhook",
            media_type="application/vnd.oci.image.manifest.v1+json",
            size=0,
            tag="test",
            actor=Actor(name=p.name, addr=p.address or "", user_agent=(p.user_agent or "")[:300]),
            timestamp=datetime.now(UTC),
        )
        event_id = str(uuid.uuid4())
        content_type, body = render(ep.format, event, event_id, self.source)
        row = outbox_row(ep.name, event.repository, event_id, "test", content_type, body, time.time())
        async with self.db.write() as conn:
            await self.store.enqueue(conn, [row])
            await self.audit.record(conn, self.audit.entry(p, "webhook.test", target=ep.name, detail={"event_id": event_id}))
        self.wake()
        return event_id
