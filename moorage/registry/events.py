"""Registry events: what happened (push, pull, delete, mount), to whom, by whom.

The HTTP layer publishes one :class:`RegistryEvent` after each successful content operation;
extensions (webhooks, audit log, UI activity charts, image insight, cache statistics)
subscribe to the :class:`EventBus` they are handed.  Listeners run after the response's
work is done and must be quick (record a row, bump a counter, queue a job): anything slow
belongs on a background job that the listener only enqueues.  A failing listener is logged
and never fails the request that caused the event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Awaitable, Callable, Literal

log = logging.getLogger("moorage.events")

#: ``scan``: an image's vulnerability findings changed (image insight).
Action = Literal["push", "pull", "delete", "mount", "scan"]
Kind = Literal["manifest", "blob", "tag"]


@dataclass(frozen=True)
class Actor:
    """Who asked, and from where (``name`` is None for anonymous callers)."""

    name: str | None = None
    addr: str = ""
    user_agent: str = ""
    request_id: str = ""
    host: str = ""
    method: str = ""


@dataclass(frozen=True)
class RegistryEvent:
    action: Action
    kind: Kind
    repository: str
    digest: str | None = None
    media_type: str | None = None
    size: int | None = None
    tag: str | None = None
    actor: Actor = field(default_factory=Actor)
    timestamp: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


Listener = Callable[[RegistryEvent], Awaitable[None]]


class EventBus:
    """Fan-out of registry events to the listeners extensions subscribe."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @property
    def active(self) -> bool:
        """False when nobody listens: publishers may skip building the event."""
        return bool(self._listeners)

    async def publish(self, event: RegistryEvent) -> None:
        for listener in self._listeners:
            try:
                await listener(event)
            except Exception:  # a listener's failure must never fail the request
                log.exception("event listener %r failed for %s %s", listener, event.action, event.repository)
