"""Turning registry data into what a person reads: sizes, ages, short digests, image configs."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from .queries import Row

INDEX_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)

IMAGE_CONFIG_TYPES = frozenset(
    {
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.docker.container.image.v1+json",
    }
)


_CONTROL = dict.fromkeys(list(range(0, 32)) + [127])


def clean(text: str, limit: int) -> str:
    """User input bound for SQL: no control characters (PostgreSQL refuses NUL in text and
    nobody means them), trimmed, at most ``limit`` characters."""
    return text.translate(_CONTROL).strip()[:limit]


def human_size(n: float | None) -> str:
    if n is None:
        return "–"
    # Binary units, as quotas are entered (``10GiB``) and as ``moorage gc`` prints them.
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def relative_time(ts: float | None, now: float | None = None) -> str:
    """``3 minutes ago``; the exact time goes into the ``<time>`` element's title."""
    if ts is None:
        return "never"
    delta = (now or time.time()) - float(ts)
    if delta < 0:
        delta = 0
    for limit, div, unit in (
        (60, 1, "second"),
        (3600, 60, "minute"),
        (86400, 3600, "hour"),
        (30 * 86400, 86400, "day"),
        (365 * 86400, 30 * 86400, "month"),
    ):
        if delta < limit:
            n = int(delta // div)
            if unit == "second" and n < 10:
                return "just now"
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    n = int(delta // (365 * 86400))
    return f"{n} year{'s' if n != 1 else ''} ago"


def iso_time(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def short_digest(digest: str | None) -> str:
    if not digest:
        return ""
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else digest[:19]


def parse_json(payload: bytes) -> Any:
    """The document, or None when it is not JSON -- including JSON nested deeper than the
    interpreter's recursion limit (``[[[[...`` 100,000 deep raises RecursionError, not ValueError)."""
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def pretty_json(payload: bytes, limit: int = 512 * 1024) -> str:
    doc = parse_json(payload[:limit] if len(payload) <= limit else b"")
    if doc is None:
        return payload[:limit].decode("utf-8", "replace")
    try:
        return json.dumps(doc, indent=2, ensure_ascii=False)
    except (RecursionError, ValueError):  # the indenting encoder recurses deeper than the parser did
        return payload[:limit].decode("utf-8", "replace")


def _text(value: Any, default: str) -> str:
    """A string field of a client's document; anything else (numbers, lists, objects) is not
    rendered as that field."""
    return value[:200] if isinstance(value, str) and value else default


def platform_label(p: Any) -> str:
    if not isinstance(p, dict):
        return "unknown"
    parts = [_text(p.get("os"), "?"), _text(p.get("architecture"), "?")]
    if _text(p.get("variant"), ""):
        parts.append(_text(p.get("variant"), ""))
    label = "/".join(parts)
    if _text(p.get("os.version"), ""):
        label += f" ({_text(p.get('os.version'), '')})"
    return label


def _object(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (documents come from clients)."""
    return value if isinstance(value, dict) else {}


def index_entries(doc: Any) -> list[Row]:
    """The per-platform manifests of an index (attestation entries marked as such)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
        return []
    out: list[Row] = []
    for m in doc["manifests"][:500]:
        if not isinstance(m, dict):
            continue
        ann = _object(m.get("annotations"))
        attestation = ann.get("vnd.docker.reference.type") == "attestation-manifest"
        out.append(
            Row(
                digest=_text(m.get("digest"), ""),
                media_type=_text(m.get("mediaType"), ""),
                size=m.get("size") if isinstance(m.get("size"), int) and not isinstance(m.get("size"), bool) else None,
                platform="attestation" if attestation else platform_label(m.get("platform")),
                attestation=attestation,
                artifact_type=_text(m.get("artifactType"), "") or None,
            )
        )
    return out


def platforms(media_type: str, payload: bytes) -> list[str]:
    if media_type not in INDEX_TYPES:
        return []
    return [e["platform"] for e in index_entries(parse_json(payload)) if not e["attestation"]]


def config_view(config: Any) -> Row:
    """The parts of an image config a person looks for, in display order (any field of any JSON
    type; a value nested too deep to turn into text leaves the view empty rather than failing)."""
    if not isinstance(config, dict):
        return Row()
    try:
        return _config_view(config)
    except RecursionError:
        return Row()


def _config_view(config: dict[str, Any]) -> Row:
    c = _object(config.get("config"))

    def words(v: Any) -> str | None:
        if isinstance(v, list):
            return " ".join(json.dumps(x) if (" " in str(x) or not str(x)) else str(x) for x in v)
        return None if v is None else str(v)

    history = []
    for h in config.get("history", [])[:500] if isinstance(config.get("history"), list) else []:
        if isinstance(h, dict):
            history.append(
                {
                    "created": str(h.get("created", "")),
                    "created_by": str(h.get("created_by", "")),
                    "empty_layer": bool(h.get("empty_layer")),
                    "comment": str(h.get("comment", "") or ""),
                }
            )
    env = [str(e) for e in c.get("Env", []) or [] if isinstance(e, str)][:500] if isinstance(c.get("Env"), list) else []
    labels = _object(c.get("Labels"))
    ports = sorted(str(p) for p in (c.get("ExposedPorts") or {})) if isinstance(c.get("ExposedPorts"), dict) else []
    volumes = sorted(str(p) for p in (c.get("Volumes") or {})) if isinstance(c.get("Volumes"), dict) else []
    plat = {k: config.get(k) for k in ("os", "architecture", "variant") if config.get(k)}
    return Row(
        {
            "platform": platform_label(plat) if plat else "",
            "created": str(config.get("created", "") or ""),
            "author": str(config.get("author", "") or ""),
            "entrypoint": words(c.get("Entrypoint")),
            "cmd": words(c.get("Cmd")),
            "workdir": str(c.get("WorkingDir") or ""),
            "user": str(c.get("User") or ""),
            "env": env,
            "labels": sorted((str(k), str(v)) for k, v in labels.items())[:500],
            "ports": ports,
            "volumes": volumes,
            "stop_signal": str(c.get("StopSignal") or ""),
            "history": [Row(h) for h in history],
        }
    )
