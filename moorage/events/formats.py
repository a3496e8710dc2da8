"""Payloads of webhook deliveries, and their signature.

* ``distribution``: CNCF Distribution's notification envelope
  (``application/vnd.docker.distribution.events.v1+json``), one event per envelope, so that
  receivers written for ``registry:2`` work unchanged;
* ``cloudevents``: CloudEvents 1.0 in structured JSON mode (``application/cloudevents+json``),
  ``type`` ``dev.moorage.<image|tag|blob>.<pushed|pulled|deleted|mounted>``.

The body is rendered once, when the event is put in the outbox, so every retry sends the very
same bytes (and the same event id); the signature is ``sha256=`` + hex HMAC-SHA256 of those
bytes with the endpoint's secret, in ``X-Moorage-Signature``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..registry.events import RegistryEvent

DISTRIBUTION_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
CLOUDEVENTS_MEDIA_TYPE = "application/cloudevents+json; charset=utf-8"
SIGNATURE_HEADER = "X-Moorage-Signature"
_PAST = {"push": "pushed", "pull": "pulled", "delete": "deleted", "mount": "mounted"}
_NOUN = {"manifest": "image", "tag": "tag", "blob": "blob", "repository": "repository"}


@dataclass(frozen=True)
class Source:
    """Where events come from: Distribution's ``source`` record, CloudEvents' ``source``."""

    addr: str
    instance_id: str
    scheme: str = "http"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _rfc3339(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _url(event: RegistryEvent, source: Source) -> str | None:
    host = event.actor.host or source.addr
    if event.kind == "blob" and event.digest:
        return f"{source.scheme}://{host}/v2/{event.repository}/blobs/{event.digest}"
    ref = event.digest or event.tag
    return f"{source.scheme}://{host}/v2/{event.repository}/manifests/{ref}" if ref else None


def _target(event: RegistryEvent, source: Source) -> dict[str, Any]:
    media_type = event.media_type or ("application/octet-stream" if event.kind == "blob" else None)
    target: dict[str, Any] = {
        "mediaType": media_type,
        "size": event.size,
        "digest": event.digest,
        "length": event.size,
        "repository": event.repository,
        "url": _url(event, source),
        "tag": event.tag,
    }
    return {k: v for k, v in target.items() if v is not None}  # Go's omitempty


def distribution(event: RegistryEvent, event_id: str, source: Source) -> bytes:
    a = event.actor
    record = {
        "id": event_id,
        "timestamp": _rfc3339(event.timestamp),
        "action": event.action,
        "target": _target(event, source),
        "request": {"id": a.request_id, "addr": a.addr, "host": a.host, "method": a.method, "useragent": a.user_agent},
        "actor": {"name": a.name} if a.name else {},
        "source": {"addr": source.addr, "instanceID": source.instance_id},
    }
    return json.dumps({"events": [record]}, separators=(",", ":")).encode()


def cloudevent_type(event: RegistryEvent) -> str:
    return f"dev.moorage.{_NOUN[event.kind]}.{_PAST[event.action]}"


def cloudevent(event: RegistryEvent, event_id: str, source: Source) -> bytes:
    a = event.actor
    subject = event.repository + (f":{event.tag}" if event.tag else "") + (f"@{event.digest}" if event.digest else "")
    data = {
        **_target(event, source),
        "action": event.action,
        "kind": event.kind,
        "actor": a.name,
        "face": event.face,
        "request": {"id": a.request_id, "addr": a.addr, "host": a.host, "method": a.method, "useragent": a.user_agent},
    }
    doc = {
        "specversion": "1.0",
        "id": event_id,
        "source": f"/moorage/{source.addr}",
        "type": cloudevent_type(event),
        "time": _rfc3339(event.timestamp),
        "subject": subject,
        "datacontenttype": "application/json",
        "data": data,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def render(fmt: str, event: RegistryEvent, event_id: str, source: Source) -> tuple[str, bytes]:
    """(Content-Type, body) of one delivery."""
    if fmt == "cloudevents":
        return CLOUDEVENTS_MEDIA_TYPE, cloudevent(event, event_id, source)
    return DISTRIBUTION_MEDIA_TYPE, distribution(event, event_id, source)
