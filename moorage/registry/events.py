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

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from .principal import Principal

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

    @classmethod
    def of(cls, by: Principal) -> Actor:
        """The actor of an event made by ``by`` -- a change's principal, or a pull's caller as
        :func:`moorage.api.common.request_principal` reads it: one source of request details."""
        return cls(by.name, by.address or "", by.user_agent, by.request_id, by.host, by.method)


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


class Pull:
    """A pull as the counters take it (:meth:`EventBus.count_pulls`): every manifest GET makes
    one, so it is a few slots and a float clock -- no event, no :class:`Actor`, no datetime,
    no id.  Who pulled is read from the request only when a counter asks (:attr:`actor`: the
    audit log's first pull of a window); :meth:`event` is the :class:`RegistryEvent` the
    listeners that want pulls get, with the same content as one published directly."""

    __slots__ = ("kind", "repository", "digest", "media_type", "size", "tag", "user", "time", "_actor", "_actor_of", "_source")

    def __init__(
        self,
        kind: Kind,
        repository: str,
        *,
        digest: str | None = None,
        media_type: str | None = None,
        size: int | None = None,
        tag: str | None = None,
        user: str | None = None,
        actor: Actor | None = None,
        actor_of: Callable[[Any], Actor] | None = None,
        source: Any = None,
        at: float | None = None,
    ) -> None:
        self.kind = kind
        self.repository = repository
        self.digest = digest
        self.media_type = media_type
        self.size = size
        self.tag = tag
        #: The caller's name (``actor.name``), known without building the actor.
        self.user = user if actor is None else actor.name
        self.time = time.time() if at is None else at
        self._actor = actor
        self._actor_of = actor_of
        self._source = source

    @classmethod
    def of(cls, event: RegistryEvent) -> Pull:
        """The pull an already built event describes."""
        return cls(
            event.kind,
            event.repository,
            digest=event.digest,
            media_type=event.media_type,
            size=event.size,
            tag=event.tag,
            actor=event.actor,
            at=event.timestamp.timestamp(),
        )

    @property
    def actor(self) -> Actor:
        """Who pulled: ``actor_of(source)`` on first use (the request's details), then kept."""
        if self._actor is None:
            self._actor = self._actor_of(self._source) if self._actor_of is not None else Actor(name=self.user)
        return self._actor

    def event(self) -> RegistryEvent:
        return RegistryEvent(
            "pull",
            self.kind,
            self.repository,
            digest=self.digest,
            media_type=self.media_type,
            size=self.size,
            tag=self.tag,
            actor=self.actor,
            timestamp=datetime.fromtimestamp(self.time, UTC),
        )


Listener = Callable[[RegistryEvent], Awaitable[None]]
#: A synchronous, in-memory counter of pulls (the UI's activity counts, the pull audit): it
#: adds the pull to what it aggregates and returns; a background job of its own writes it out.
PullCounter = Callable[[Pull], None]
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

    def in_transaction_many(self, events: list[RegistryEvent]) -> InTransaction | None:
        """:meth:`in_transaction` for a batch of changes committed together (a collector's or a
        retention run's deletes): one write of all their audit entries and outbox rows."""
        ...

    def committed(self, event: RegistryEvent) -> None:
        """The change (with what :meth:`in_transaction` wrote) committed: start deliveries."""
        ...


class EventBus:
    """Fan-out of registry events to the listeners extensions subscribe."""

    def __init__(self) -> None:
        self._listeners: list[tuple[Listener, Interest | None]] = []
        self._pull_counters: list[PullCounter] = []
        #: Set by the events extension; None: no audit log or webhooks (nothing durable to write).
        self.recorder: ChangeRecorder | None = None

    def subscribe(self, listener: Listener, wants: Interest | None = None) -> None:
        """Call ``listener`` with every event whose action ``wants`` accepts (all without it)."""
        self._listeners.append((listener, wants))

    def count_pulls(self, counter: PullCounter) -> None:
        """Hand every pull to ``counter`` (synchronously, before any listener): for features that
        only aggregate pulls in memory, so a pull costs them a dict update, not an event."""
        self._pull_counters.append(counter)

    def wants(self, action: Action) -> bool:
        """Whether any listener wants an event of ``action`` now: a pull (every manifest GET) is
        built as an event only when one does (counters take a :class:`Pull`)."""
        for _, wants in self._listeners:  # noqa: SIM110 - no generator per pull
            if wants is None or wants(action):
                return True
        return False

    @property
    def wants_pulls(self) -> bool:
        """Whether a pull is worth a :class:`Pull` at all (a counter or a listener takes it)."""
        return bool(self._pull_counters) or self.wants("pull")

    async def pulled(self, pull: Pull) -> None:
        """A pull happened: the counters count it; the listeners that want pulls (webhooks
        listening to pulls, tests) get it as an event."""
        for counter in self._pull_counters:
            try:
                counter(pull)
            except Exception:  # like a listener's: never the request's failure
                log.exception("pull counter %r failed for %s", counter, pull.repository)
        if self.wants("pull"):
            await self.publish(pull.event())

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

    async def announce(self, events: list[RegistryEvent]) -> None:
        """After the commit of a batch of changes: start the deliveries of the durable ones,
        then tell the listeners of each."""
        if self.recorder is not None:
            for event in events:
                if event.durable:
                    self.recorder.committed(event)
        for event in events:
            await self.publish(event)


class ThreadBridge(EventBus):
    """The server's bus as seen from a job on a thread with its own event loop (the scheduled
    collector, a GC started in the web UI).

    What is written in the job's transactions comes from the server's recorder (synchronous and
    in memory, so it may run on the job's thread); what happens after a commit -- waking the
    delivery worker, the listeners -- is handed to the server's loop, one hand-over per batch,
    without waiting for it (the delivery worker polls the outbox anyway)."""

    def __init__(self, bus: EventBus, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._bus = bus
        self._loop = loop
        self.recorder = _BridgedRecorder(bus.recorder, loop) if bus.recorder is not None else None

    @property
    def wants_changes(self) -> bool:
        return self._bus.wants_changes

    def subscribe(self, listener: Listener, wants: Interest | None = None) -> None:
        raise TypeError("subscribe to the server's bus, not to a job's view of it")

    def count_pulls(self, counter: PullCounter) -> None:
        raise TypeError("count pulls on the server's bus, not on a job's view of it")

    @property
    def wants_pulls(self) -> bool:
        return self._bus.wants_pulls

    async def pulled(self, pull: Pull) -> None:
        # Counters are the server loop's (unlocked dicts); jobs serve no pulls.
        raise TypeError("pulls are counted on the server's loop, not from a job's thread")

    def wants(self, action: Action) -> bool:
        return self._bus.wants(action)

    async def publish(self, event: RegistryEvent) -> None:
        await self.announce([event])

    async def announce(self, events: list[RegistryEvent]) -> None:
        if not events:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._bus.announce(events), self._loop)
        except RuntimeError:  # the server's loop is closed (shutting down): the outbox has them
            log.debug("events: server loop closed, %d committed event(s) left to the outbox poll", len(events))


class _BridgedRecorder:
    """A recorder whose transaction writes run on the caller's thread and whose ``committed``
    runs on the server's loop."""

    def __init__(self, inner: ChangeRecorder, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._loop = loop

    def in_transaction(self, event: RegistryEvent) -> InTransaction | None:
        return self._inner.in_transaction(event)

    def in_transaction_many(self, events: list[RegistryEvent]) -> InTransaction | None:
        return self._inner.in_transaction_many(events)

    def committed(self, event: RegistryEvent) -> None:
        try:
            self._loop.call_soon_threadsafe(self._inner.committed, event)
        except RuntimeError:
            pass
