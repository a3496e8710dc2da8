"""Registry events: what happened (push, pull, delete, mount), to whom, by whom.

Changes (push, tag, delete, mount, repository delete) are announced by the registry service
(:mod:`.service`), whichever face asked: the durable part -- the audit entry and the webhook
outbox rows -- is written by the bus's :class:`ChangeRecorder` inside the change's own database
transaction (so a crash can never keep the change and lose its event), and every event carries
a stable ``id`` the outbox rows and the audit entry share, which receivers deduplicate on.
Pulls are not changes: the HTTP layer publishes them, and their audit entries stay buffered.
After the commit the event is also handed to the bus's listeners; extensions (webhooks, audit log, UI activity charts, image insight, cache statistics)
subscribe to the :class:`EventBus` they are handed.  Listeners run after the response's
work is done and must be quick (record a row, bump a counter, queue a job): anything slow
belongs on a background job that the listener only enqueues.  A failing listener is logged
and never fails the request that caused the event.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

log = logging.getLogger("moorage.events")

#: ``scan``: an image's vulnerability findings changed (image insight).
Action = Literal["push", "pull", "delete", "mount", "scan"]
Kind = Literal["manifest", "blob", "tag", "repository"]


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
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: The face the change came through (``v2``, ``api``, ``ui``, ``cli``, ``proxy`` ...).
    face: str = "v2"
    #: True when the recorder already wrote its audit entry / outbox rows in the change's
    #: transaction (listeners that persist events skip it).
    durable: bool = False
    #: The id given at construction ("": made on first use, see :attr:`id`).
    event_id: str = field(default="", repr=False, compare=False)

    @property
    def id(self) -> str:
        """Stable identity: the same in every outbox row, every redelivery and the audit entry.

        Made when first asked for: a pull (every manifest GET publishes one) usually never
        needs one, and a random UUID costs a system call."""
        if not self.event_id:
            object.__setattr__(self, "event_id", str(uuid.uuid4()))
        return self.event_id


Listener = Callable[[RegistryEvent], Awaitable[None]]
#: Which actions a listener wants (``None``: all); asked per event, so it may follow configuration
#: that changes at run time (webhook endpoints added through the API).
Interest = Callable[[Action], bool]
#: A synchronous writer run inside the change's write transaction (SQLAlchemy Core connection).
InTransaction = Callable[[Any], None]


class ChangeRecorder(Protocol):
    """Makes the durable record of a change (audit entry, webhook outbox rows)."""

    def in_transaction(self, event: RegistryEvent) -> InTransaction | None:
        """What to write in the change's transaction; None when nothing is (no webhook
        endpoint wants the event and it is not audited): the hot path then writes nothing extra."""
        ...

    def committed(self, event: RegistryEvent) -> None:
        """The change (with what :meth:`in_transaction` wrote) committed: start deliveries."""
        ...


class EventBus:
    """Fan-out of registry events to the listeners extensions subscribe."""

    def __init__(self) -> None:
        self._listeners: list[tuple[Listener, Interest | None]] = []
        #: Set by the events extension; None: no audit log or webhooks (nothing durable to write).
        self.recorder: ChangeRecorder | None = None

    def subscribe(self, listener: Listener, wants: Interest | None = None) -> None:
        """Call ``listener`` with every event whose action ``wants`` accepts (all without it)."""
        self._listeners.append((listener, wants))

    @property
    def active(self) -> bool:
        """False when nobody listens: publishers may skip building the event."""
        return bool(self._listeners)

    def wants(self, action: Action) -> bool:
        """Whether any listener wants an event of ``action`` now: a pull (every manifest GET) is
        built only when one does."""
        return any(wants is None or wants(action) for _, wants in self._listeners)

    @property
    def wants_changes(self) -> bool:
        """False when neither a recorder nor a listener exists: the service builds no event."""
        return bool(self._listeners) or self.recorder is not None

    async def publish(self, event: RegistryEvent) -> None:
        for listener, wants in self._listeners:
            if wants is not None and not wants(event.action):
                continue
            try:
                await listener(event)
            except Exception:  # a listener's failure must never fail the request
                log.exception("event listener %r failed for %s %s", listener, event.action, event.repository)
