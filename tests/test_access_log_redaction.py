"""The access log line skips the redaction filter only when the filter would leave it as it is.

:class:`moorage.api.logging.JsonAccessLogger` remembers, per (method, path, User-Agent, user,
address), whether the line needs the filter's passes, and marks a clean line so the filter does
not look at it again (issue 20: ~8 us per request).  The property: whatever the client-chosen
values -- credentials, trigger words split by JSON escapes (``\\n`` + ``egotiate``, ``\\u00ea`` +
``uth``), the letters ``(?i)`` folds (İ, ı, ſ, K) -- the message that leaves the filter is the
full redaction of the line, exactly as before the shortcut.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from moorage.api import logging as access_logging
from moorage.api.common import BODY_BYTES
from moorage.api.log_redaction import RedactCredentials, _redact_all

PARTS = [
    "Authorization: Basic YWxpY2U6cHc=",
    "AUTHORIZATION",
    "Bearer abc.def",
    "eyJhbGciOiJI.eyJzdWIiOi.sig",
    "moor_0a1b_secretpart",
    "token=t",
    "passwd=q",
    "/v2/app/manifests/v1",
    "egotiate x",
    "uthorization: x",
    "\n",
    "\u00ea",
    '"',
    "\\",
    " ",
    "ſecret=z",
    "Tokın=x",
    "K",
]
values = st.lists(st.sampled_from(PARTS), max_size=6).map("".join) | st.text(max_size=30)


class _Headers(dict[str, str]):
    pass


class _Request:
    def __init__(self, method: str, path: str, ua: str, user: str | None, remote: str) -> None:
        self.method, self.path, self.remote = method, path, remote
        self.headers = _Headers({"User-Agent": ua})
        self._user = user

    def get(self, key: str, default: Any = None) -> Any:
        return self._user if key == "user" else default


class _Response(dict[str, Any]):
    status = 200


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _log_line(method: str, path: str, ua: str, user: str | None, remote: str) -> tuple[logging.LogRecord, str]:
    logger = logging.getLogger("test.access-redaction")
    logger.propagate = False
    capture = _Capture()
    logger.handlers[:] = [capture]
    logger.setLevel(logging.INFO)
    response = _Response({BODY_BYTES: 10})
    access_logging.JsonAccessLogger(logger, "").log(_Request(method, path, ua, user, remote), response, 0.001)  # type: ignore[arg-type]
    (record,) = capture.records
    line = record.getMessage()  # as logged, before any filter ran
    RedactCredentials().filter(record)
    return record, line


@settings(max_examples=300, deadline=None)
@given(values, values, values, st.none() | values, st.sampled_from(["127.0.0.1", "::1", "10.0.0.7"]))
def test_what_leaves_the_filter_is_the_full_redaction_of_the_line(
    path: str, ua: str, user: str | None, method: str, remote: str
) -> None:
    for _ in range(2):  # the first time the answer is worked out, the second it is remembered
        record, line = _log_line(method or "GET", path, ua, user, remote)
        assert record.getMessage() == _redact_all(line)
        assert json.loads(line)["path"] == path[:512]


def test_a_usual_line_is_passed_as_it_is_and_a_credential_still_redacted() -> None:
    record, line = _log_line("GET", "/v2/team/app/manifests/1.0", "containerd/1.7", "alice", "10.0.0.7")
    assert getattr(record, "_moorage_redacted", False) and record.getMessage() == line
    record, line = _log_line("GET", "/v2/team/app/manifests/1.0", "curl Bearer eyJhbGciOiJI.eyJzdWIiOi.sig", None, "10.0.0.7")
    assert "eyJzdWIiOi" in line and "eyJzdWIiOi" not in record.getMessage()
    # a JSON escape that makes a trigger word only in the line: "\n" + "egotiate"
    record, line = _log_line("GET", "/v2/x\negotiate abc", "ua", None, "10.0.0.7")
    assert record.getMessage() == _redact_all(line) != line
