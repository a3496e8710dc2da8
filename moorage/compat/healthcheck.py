"""The container image's ``HEALTHCHECK``: ``python3 -m moorage.compat.healthcheck``.

Why not a fixed ``curl http://127.0.0.1:5000/``: the image is configured like ``registry:2``
(``http.addr``, ``http.tls`` in config.yml, ``REGISTRY_*``/``MOORAGE_*`` variables), so the
check reads the same settings the server does and asks ``/healthz`` on the configured port,
over TLS when TLS is on (without verifying the certificate: the name is 127.0.0.1).  Exit 0 =
healthy, 1 = not (the reason on stderr, as Docker's health log shows it).
"""

from __future__ import annotations

import os
import sys

DEFAULT_CONFIG = "/etc/docker/registry/config.yml"


def main() -> int:
    """``moorage healthcheck`` with the registry:2 image's default config file when none is set."""
    import click

    from ..cli import healthcheck

    config = os.environ.get("MOORAGE_CONFIG") or (DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None)
    try:
        healthcheck.main(args=["--config", config] if config else [], standalone_mode=False)
    except click.ClickException as exc:
        print(f"unhealthy: {exc.format_message()}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - any other problem also means unhealthy
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
