"""Image search by advisory id *or alias*: the CLI's ``image-search --advisory`` and the API's
``?advisory=`` share it.

Why: users search by the id they read in the news (``CVE-2024-3094``) while the matched OSV
advisory is often a distribution's (``DSA-5649-1``, ``ALPINE-CVE-...``) or a GHSA that lists the
CVE among its ``aliases``.  Each result names the advisory it matched.
"""

from __future__ import annotations

from typing import Any

#: Longest advisory id or alias accepted (longer input matches nothing).
MAX_ADVISORY = 255


async def search_advisory(insight: Any, text: str) -> list[dict[str, Any]]:
    """Images affected by the advisory ``text`` or by any advisory listing ``text`` as an alias."""
    text = text.strip()
    if not text or len(text) > MAX_ADVISORY:
        return []
    ids = [text, *(i for i in await insight.store.advisory_ids_by_alias(text) if i != text)]
    out: list[dict[str, Any]] = []
    for advisory_id in ids:
        out.extend({**item, "advisory": advisory_id} for item in await insight.search_advisory(advisory_id))
    return out
