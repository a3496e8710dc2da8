"""Prometheus metrics reflect the requests the registry answered."""

from __future__ import annotations

import re

from tests.support.http import Client


def _value(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_by_route(moorage) -> None:  # noqa: ANN001
    c = Client(moorage.url)
    before = c.req("GET", "/metrics").text
    digest, _ = c.push_image("metrics/app", "v1")
    for _ in range(3):
        assert c.req("GET", "/v2/metrics/app/manifests/v1").status_code == 200
    assert c.req("GET", "/v2/metrics/app/manifests/nope").status_code == 404
    r = c.req("GET", "/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    after = r.text
    ok = dict(method="GET", route="manifest_get", status="200")
    assert _value(after, "moorage_http_requests_total", **ok) - _value(before, "moorage_http_requests_total", **ok) == 3
    miss = dict(method="GET", route="manifest_get", status="404")
    assert _value(after, "moorage_http_requests_total", **miss) - _value(before, "moorage_http_requests_total", **miss) == 1
    assert _value(after, "moorage_http_request_duration_seconds_count", route="manifest_get") >= 4
    # labels never carry repository names
    assert "metrics/app" not in after


def test_invented_methods_cannot_grow_the_label_set(moorage) -> None:  # noqa: ANN001
    """Methods outside the registry's own (the HTTP parser knows some 35: WebDAV, CalDAV, ...)
    are counted under ``other``: they add one label value, not a time series each, kept for the
    life of the process.  (A method the parser does not know is a 400 before any middleware.)"""
    c = Client(moorage.url)
    probes = ("PROPFIND", "MKCOL", "LOCK", "UNLOCK", "SEARCH", "PURGE", "REPORT", "COPY", "MOVE", "MKCALENDAR")
    for method in probes:
        assert c.req(method, "/v2/").status_code in (400, 405, 501)
    text = c.req("GET", "/metrics").text
    methods = {
        dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])).get("method")
        for line in text.splitlines()
        if line.startswith("moorage_http_requests_total{")
    }
    assert "other" in methods
    assert not methods & set(probes), methods
    assert _value(text, "moorage_http_requests_total", method="other") >= 1
