"""Jinja2 environment (autoescaped) and the context every page gets.

Jinja2 is imported when the first page is rendered, not when the server starts: a registry
whose UI nobody opens does not carry the template engine (~2 MiB).
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import format as fmt

if TYPE_CHECKING:
    import jinja2

TEMPLATE_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"


class Templates:
    """The app's template environment, built on first use."""

    def __init__(self) -> None:
        self._env: jinja2.Environment | None = None
        self._lock = threading.Lock()
        self.versions = {f.name: hashlib.sha256(f.read_bytes()).hexdigest()[:12] for f in STATIC_DIR.iterdir() if f.is_file()}

    def static(self, name: str) -> str:
        """URL of a vendored static file, versioned by content (safe to cache forever)."""
        return f"/static/{name}?v={self.versions.get(name, '0')}"

    @property
    def env(self) -> jinja2.Environment:
        if self._env is None:
            with self._lock:
                if self._env is None:
                    self._env = self._build()
        return self._env

    def _build(self) -> jinja2.Environment:
        import jinja2

        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
            autoescape=jinja2.select_autoescape(["html"], default=True),
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
            undefined=jinja2.StrictUndefined,
        )
        env.globals["static"] = self.static
        env.filters.update(size=fmt.human_size, ago=fmt.relative_time, iso=fmt.iso_time, short=fmt.short_digest)
        return env


TEMPLATES = web.AppKey("ui_templates", Templates)


def setup_templates(app: web.Application) -> None:
    app[TEMPLATES] = Templates()


def render(name: str, request: web.Request, ctx: dict[str, Any], status: int = 200) -> web.Response:
    from ..api.health import notices
    from .session import VIEWER

    viewer = request.get(VIEWER)
    full = {
        "viewer": viewer,
        "csrf": viewer.csrf if viewer else "",
        "path": request.path,
        "mode": viewer.mode if viewer else "none",
        "sso_name": _sso_name(request),
        "notices": notices(request.config_dict),
        **ctx,
    }
    full.setdefault("title", "Moorage")
    text = request.config_dict[TEMPLATES].env.get_template(name).render(full)
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _sso_name(request: web.Request) -> str | None:
    """``auth.oidc.display_name`` when OpenID Connect sign-in is on (the sign-in page's button)."""
    from ..api.common import SETTINGS

    auth = request.app[SETTINGS].auth
    return auth.oidc.display_name if auth.mode == "token" and auth.oidc is not None else None
