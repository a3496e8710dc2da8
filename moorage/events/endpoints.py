"""Webhook endpoints: those of the config file and those made through the admin API.

The event listener asks :meth:`EndpointSet.matching` for every event, so the set is kept in
memory: config endpoints are fixed at start, API-made ones are reloaded from the database
every few seconds (and at once after a change through this process's API), so replicas pick
up each other's changes within that delay.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..config import MAX_WEBHOOK_TIMEOUT, Settings, WebhookEndpoint
from ..metadata.events_store import EventsStore
from ..registry.events import RegistryEvent
from .patterns import glob_matches, valid_pattern

log = logging.getLogger("moorage.events")

FORMATS = ("distribution", "cloudevents")
ACTIONS = ("push", "pull", "delete", "mount")
TARGETS = ("manifest", "tag", "blob")


@dataclass(frozen=True)
class Endpoint:
    name: str
    url: str
    secret: str = field(repr=False)
    format: str
    actions: frozenset[str]
    repositories: tuple[str, ...]
    targets: frozenset[str]
    timeout: float
    max_attempts: int
    headers: tuple[tuple[str, str], ...] = ()
    #: ``config`` (read-only through the API) or ``api``.
    origin: str = "config"
    #: Set for API endpoints made by a namespace administrator.
    namespace: str | None = None
    created_by: str | None = None

    @property
    def owner(self) -> str:
        """Whose share of the delivery pool this endpoint uses: its namespace, else the user who
        made it (``htpasswd`` mode), else the operator's (config-file endpoints)."""
        if self.namespace:
            return f"ns:{self.namespace}"
        if self.created_by:
            return f"user:{self.created_by}"
        return ""

    def matches(self, event: RegistryEvent) -> bool:
        return (
            event.action in self.actions
            and event.kind in self.targets
            and any(glob_matches(p, event.repository) for p in self.repositories)
        )

    def public_dict(self) -> dict[str, Any]:
        """What the admin API shows (never the secret)."""
        return {
            "name": self.name,
            "url": self.url,
            "format": self.format,
            "actions": sorted(self.actions),
            "repositories": list(self.repositories),
            "targets": sorted(self.targets),
            "timeout": self.timeout,
            "max_attempts": self.max_attempts,
            "origin": self.origin,
            "namespace": self.namespace,
            "created_by": self.created_by,
            "secret_set": bool(self.secret),
        }


def from_config(cfg: WebhookEndpoint) -> Endpoint:
    """A config-file endpoint; raises ValueError (a start-up error) for what pydantic can't check."""
    secret = cfg.secret_value()
    if not secret:
        raise ValueError(f"webhook {cfg.name!r}: set secret (or secret_env): every delivery is signed")
    for p in cfg.repositories:
        if not valid_pattern(p):
            raise ValueError(f"webhook {cfg.name!r}: invalid repository pattern {p!r}")
    if not cfg.actions or not cfg.targets or not cfg.repositories:
        raise ValueError(f"webhook {cfg.name!r}: actions, targets and repositories must not be empty")
    return Endpoint(
        cfg.name,
        cfg.url,
        secret,
        cfg.format,
        frozenset(cfg.actions),
        tuple(cfg.repositories),
        frozenset(cfg.targets),
        float(cfg.timeout),
        int(cfg.max_attempts),
        tuple(sorted(cfg.headers.items())),
    )


def from_row(row: dict[str, Any]) -> Endpoint:
    return Endpoint(
        row["name"],
        row["url"],
        row["secret"],
        row["format"],
        frozenset(row["actions"]),
        tuple(row["repositories"]),
        frozenset(row["targets"]),
        # rows written before the bound keep working, at the bound
        min(float(row["timeout"]), MAX_WEBHOOK_TIMEOUT),
        int(row["max_attempts"]),
        (),
        "api",
        row.get("namespace"),
        row.get("created_by"),
    )


class EndpointSet:
    def __init__(self, settings: Settings, store: EventsStore) -> None:
        self.store = store
        configured = [from_config(c) for c in settings.webhooks]
        names = [e.name for e in configured]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"webhooks: duplicate endpoint name(s) {', '.join(sorted(dupes))}")
        self.configured: dict[str, Endpoint] = {e.name: e for e in configured}
        self._api: dict[str, Endpoint] = {}
        self._all: tuple[Endpoint, ...] = tuple(configured)
        self._wants_pull = any("pull" in e.actions for e in configured)

    @property
    def all(self) -> tuple[Endpoint, ...]:
        return self._all

    @property
    def wants_pull(self) -> bool:
        """False when no endpoint listens to pulls: the listener can skip pulls at once."""
        return self._wants_pull

    def get(self, name: str) -> Endpoint | None:
        return self.configured.get(name) or self._api.get(name)

    def matching(self, event: RegistryEvent) -> list[Endpoint]:
        return [e for e in self._all if e.matches(event)]

    def max_timeout(self) -> float:
        return max((e.timeout for e in self._all), default=5.0)

    def _set_api(self, endpoints: Iterable[Endpoint]) -> None:
        self._api = {e.name: e for e in endpoints if e.name not in self.configured}
        self._all = tuple(self.configured.values()) + tuple(self._api.values())
        self._wants_pull = any("pull" in e.actions for e in self._all)

    async def reload(self) -> None:
        """Re-read the API-made endpoints (a failed read keeps the previous set)."""
        try:
            rows = await self.store.list_webhooks()
        except Exception:  # noqa: BLE001 - the database may be briefly away; keep what we have
            log.warning("could not reload webhook endpoints", exc_info=True)
            return
        self._set_api(from_row(r) for r in rows)
