"""Jinja2 environment (autoescaped) and the context every page gets."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from . import format as fmt

TEMPLATES = web.AppKey("ui_templates", jinja2.Environment)
TEMPLATE_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"


def setup_templates(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(
        app, app_key=TEMPLATES, loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        trim_blocks=True, lstrip_blocks=True, auto_reload=False,
        undefined=jinja2.StrictUndefined,
    )
    versions = {}
    for f in STATIC_DIR.iterdir():
        if f.is_file():
            versions[f.name] = hashlib.sha256(f.read_bytes()).hexdigest()[:12]

    def static(name: str) -> str:
        """URL of a vendored static file, versioned by content (safe to cache forever)."""
        return f"/static/{name}?v={versions.get(name, '0')}"

    env.globals["static"] = static
    env.filters.update(size=fmt.human_size, ago=fmt.relative_time, iso=fmt.iso_time, short=fmt.short_digest)


def render(name: str, request: web.Request, ctx: dict[str, Any], status: int = 200) -> web.Response:
    from .session import VIEWER

    viewer = request.get(VIEWER)
    full = {"viewer": viewer, "csrf": viewer.csrf if viewer else "", "path": request.path,
            "mode": viewer.mode if viewer else "none", **ctx}
    full.setdefault("title", "Moorage")
    resp = aiohttp_jinja2.render_template(name, request, full, app_key=TEMPLATES, status=status)
    return resp
