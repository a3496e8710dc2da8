"""``moorage healthcheck``, and the container image's ``HEALTHCHECK``: ``python3 -m moorage.compat.healthcheck``.

Why not a fixed ``curl http://127.0.0.1:5000/``: the image is configured like ``registry:2``
(``http.addr``, ``http.tls`` in config.yml, ``REGISTRY_*``/``MOORAGE_*`` variables), so the
check reads the same settings the server does and asks ``/healthz`` on the configured port,
over TLS when TLS is on (without verifying the certificate: the name is 127.0.0.1).  Exit 0 =
healthy, 1 = not (the reason on stderr, as Docker's health log shows it).
"""

from __future__ import annotations

import os
import sys

import click

from ..cli_common import data_options, settings_from

DEFAULT_CONFIG = "/etc/docker/registry/config.yml"


@click.command()
@data_options
@click.option("--addr", help="HOST:PORT the server listens on (default: the configured addr).")
@click.option("--ready", is_flag=True, help="Check /readyz (database and storage) instead of /healthz.")
@click.option("--timeout", type=float, default=3.0, show_default=True, help="Seconds to wait for the answer.")
def healthcheck(config: str | None, data: str | None, addr: str | None, ready: bool, timeout: float) -> None:
    """Exit 0 if the local server answers /healthz (or /readyz) with 200; for container health checks.

    Follows the configured address and TLS (``https`` when ``tls.certificate`` is set; the
    certificate is not verified, as it names the public host, not 127.0.0.1).
    """
    import ssl
    import urllib.error
    import urllib.request

    from ..config import split_addr

    # (--data: as every command takes it; the data directory is the server's business, not prepared here)
    settings = settings_from(config, data, require_registry=False, prepare_data=False, addr=addr)
    host, port = split_addr(settings.addr)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    scheme = "https" if settings.tls.certificate else "http"
    url = f"{scheme}://{netloc}/{'readyz' if ready else 'healthz'}"
    ctx = ssl._create_unverified_context() if scheme == "https" else None  # noqa: S323 - local probe
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:  # noqa: S310
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, urllib.error.URLError) as exc:
        raise click.ClickException(f"{url}: {getattr(exc, 'reason', exc)}") from None
    if status != 200:
        raise click.ClickException(f"{url}: HTTP {status}")
    click.echo(f"{url}: ok")


commands = [healthcheck]


def main() -> int:
    """``moorage healthcheck`` with the registry:2 image's default config file when none is set."""
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
