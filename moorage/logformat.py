"""The server's log on standard error: readable text on a terminal, one JSON object per line
for a log collector.

Why two: a person watching ``moorage serve`` in a terminal reads ``GET /v2/ 200``, not a JSON
object; systemd, Docker and Kubernetes hand the stream to collectors that want one object per
line.  ``auto`` (the default) tells them apart by whether standard error is a terminal.

Access records carry their fields in ``record.access`` (:class:`moorage.api.logging.JsonAccessLogger`)
and their JSON object as the message, so a handler set up elsewhere still writes the object.
Every formatter runs after :class:`moorage.api.log_redaction.RedactCredentials`; the text form
of an access record is built from the fields and redacted again here.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

from .api.log_redaction import redact

FORMATS = ("auto", "text", "json")


def resolve(fmt: str, stream: IO[str]) -> str:
    """``text`` or ``json``: ``auto`` is ``text`` on a terminal, ``json`` anywhere else."""
    if fmt != "auto":
        return fmt
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # a closed or odd stream: a collector's format
        return "json"


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


class TextFormatter(logging.Formatter):
    """``2026-01-02 03:04:05 INFO  message``; a request as ``GET /v2/ 200 0 B 1.2 ms 10.0.0.1 alice``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            parts = [
                str(access.get("method", "-")),
                str(access.get("path", "-")),
                str(access.get("status", "-")),
                _size(access.get("bytes")),
                f"{access.get('ms', '-')} ms",
                str(access.get("remote") or "-"),
            ]
            if access.get("user"):
                parts.append(str(access["user"]))
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
            return redact(f"{stamp} {record.levelname:<7} " + " ".join(parts))
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: a request's own object (``ts``, ``method``, ``path``, ``status``
    ...), any other record as ``{"ts", "level", "logger", "message"[, "exc"]}``."""

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(getattr(record, "access", None), dict):
            return record.getMessage()  # the access object, as redacted by the filter
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def configure(level: str, fmt: str, stream: IO[str] | None = None) -> str:
    """Send the root logger to ``stream`` (standard error) in ``fmt``; returns the format used."""
    stream = stream or sys.stderr
    used = resolve(fmt, stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter() if used == "text" else JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return used
