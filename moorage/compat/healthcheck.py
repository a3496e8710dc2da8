"""The container image's ``HEALTHCHECK``: ``python3 -m moorage.compat.healthcheck``.

Why not a fixed ``curl http://127.0.0.1:5000/``: the image is configured like ``registry:2``
(``http.addr``, ``http.tls`` in config.yml, ``REGISTRY_*``/``MOORAGE_*`` variables), so the
check reads the same settings the server does and asks ``/healthz`` on the configured port,
over TLS when TLS is on (without verifying the certificate: the name is 127.0.0.1).  Exit 0 =
healthy, 1 = not (the reason on stderr, as Docker's health log shows it).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

DEFAULT_CONFIG = "/etc/docker/registry/config.yml"


def main() -> int:
    from ..config import load_settings

    config = os.environ.get("MOORAGE_CONFIG") or (DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None)
    try:
        settings = load_settings(config)
    except Exception as exc:  # noqa: BLE001 - any config problem means unhealthy
        print(f"unhealthy: configuration: {exc}", file=sys.stderr)
        return 1
    host = settings.host
    if host in {"0.0.0.0", "::", ""}:
        host = "127.0.0.1" if host != "::" else "::1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if settings.tls.certificate else "http"
    ctx = None
    if scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    url = f"{scheme}://{host}:{settings.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
            return 0 if resp.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(f"unhealthy: {url} answered {exc.code}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
