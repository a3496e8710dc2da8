"""The web UI: browse, inspect and manage the registry in a browser.

Server-rendered pages (Jinja2 via aiohttp-jinja2) with htmx for search-as-you-type and
Chart.js for the charts, both vendored under ``static/`` (no CDN, no build step).  Wired by
:func:`moorage.ui.setup.setup_ui`.
"""
