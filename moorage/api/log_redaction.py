"""No log line may carry a credential: a filter that redacts them from every record.

Where they came from: aiohttp's server logs a request head it cannot parse with the raw
offending line (``BadHttpMessage: Invalid header value char: b'Authorization: Basic
YWxpY2U6...\\x01'``), at ERROR, with a traceback.  Our own code never logs headers, but a
library might, so the filter sits on the loggers aiohttp writes to *and* on the root
handlers (records of any logger reach those), and it rewrites the message and the formatted
traceback alike.

What is redacted: the value of any credential-bearing header (``Authorization``,
``Proxy-Authorization``, ``Cookie``, ``Set-Cookie``, ``X-Registry-Auth``, ``X-Auth-Token``)
however it is spelled or separated; whatever follows ``Basic``/``Bearer``/``Digest``; JWTs;
Moorage access tokens (``moor_<id>_<secret>``); and ``token=``/``password=``-style query or
form parameters.  Over-redacting a line of a 400's traceback costs nothing.
"""

from __future__ import annotations

import logging
import re

REDACTED = "<redacted>"

_HEADER = re.compile(r"(?i)((?:proxy-)?authorization|(?:set-)?cookie|x-registry-auth|x-auth-token)(\s*[:=]?\s*)[^\r\n'\"]*")
_SCHEME = re.compile(r"(?i)\b(basic|bearer|digest|negotiate)(\s+)[^\s'\"]+")
_JWT = re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*")
_PAT = re.compile(r"moor_[0-9a-fA-F]{4,}_[^\s'\"&]*")
_PARAM = re.compile(r"(?i)\b((?:access_|refresh_|id_)?token|password|secret|passwd)=[^\s&'\"]*")
#: In aiohttp's parse errors only: a base64-looking run (mixed case and digits, 16+), in case
#: the excerpt of a long line starts past the header's name.
_B64 = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")


def _random_looking(m: re.Match[str]) -> str:
    s = m.group(0)
    mixed = any(c.isupper() for c in s) and any(c.islower() for c in s) and any(c.isdigit() for c in s)
    return REDACTED if mixed else s


#: Every pattern above needs one of these words (lower-cased): a line without any of them -- the
#: access log's usual line -- is returned as it is, for a few microseconds instead of five
#: regular-expression passes (about 80 us: a seventh of a manifest GET's CPU at 1,800 req/s).
_TRIGGERS = ("auth", "cookie", "basic", "bearer", "digest", "negotiate", "eyj", "moor_", "token", "password", "secret", "passwd")


#: Letters the patterns' case-insensitive matching takes for i or s that ``lower()`` leaves as
#: they are (İ, ı, ſ): a line with one of them always gets the full passes.
_ODD_CASE = ("\u0130", "\u0131", "\u017f")


def needs_redaction(text: str) -> bool:
    """Whether :func:`redact` would run its passes on ``text`` (False: it returns ``text`` as it is)."""
    lowered = text.lower()
    return any(word in lowered for word in _TRIGGERS) or any(c in text for c in _ODD_CASE)


def redact(text: str) -> str:
    """``text`` with every credential-looking part replaced by ``<redacted>``."""
    if not needs_redaction(text):
        return text
    return _redact_all(text)


def _redact_all(text: str) -> str:
    """The five passes, ungated (:func:`redact` skips them when no trigger word occurs)."""
    text = _HEADER.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    text = _SCHEME.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    text = _JWT.sub(REDACTED, text)
    text = _PAT.sub(REDACTED, text)
    return _PARAM.sub(lambda m: m.group(1) + "=" + REDACTED, text)


def redact_parse_error(text: str) -> str:
    """:func:`redact`, plus any random-looking run (for aiohttp's raw request excerpts)."""
    return _B64.sub(_random_looking, redact(text))


class RedactCredentials(logging.Filter):
    """Rewrites a record in place: message (arguments merged in) and traceback, redacted."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        # The logger's filter did it (not again at the handler), or the access logger found its
        # line clean (:mod:`moorage.api.logging`).
        if getattr(record, "_moorage_redacted", False):
            return True
        record._moorage_redacted = True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep the template only
            message = str(record.msg)
        clean = redact_parse_error if record.name.startswith("aiohttp") else redact
        record.msg, record.args = clean(message), None
        if record.exc_info:
            record.exc_text = clean(self._formatter.formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = clean(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


#: Loggers whose records may hold request heads (their records are filtered where they are
#: made, whatever handlers are attached later).
LOGGERS = ("aiohttp.server", "aiohttp.access", "aiohttp.web", "aiohttp.internal", "aiohttp.client", "moorage.access", "moorage")


def install() -> None:
    """Filter every record of :data:`LOGGERS` and everything reaching the root handlers."""
    f = RedactCredentials()
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(x, RedactCredentials) for x in logger.filters):
            logger.addFilter(f)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(x, RedactCredentials) for x in handler.filters):
            handler.addFilter(f)
