"""Read rules: which repositories are *listed*, to anyone.

A repository is listed -- in ``/v2/_catalog``, the web UI's repository list and namespace
filter -- when it holds at least one manifest: a repository with only blobs (an interrupted
push) or whose manifests were all deleted has nothing to pull, and every list must agree on
that (the UI once listed such repositories while the catalog hid them).  *To whom* it is
listed is the other half of the rule, the principal's pull right (``moorage.registry.access_rules``),
applied by ``RegistryService.catalog`` to the names this condition selects, and by the UI as
the same rule in SQL.

Kept apart from the listing queries themselves (which may be rewritten per database) so that
the rule has one definition.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, exists

from .tables import manifests, repositories


def listed() -> ColumnElement[bool]:
    """SQL condition on ``repositories``: the repository is listed (holds a manifest)."""
    return exists().where(manifests.c.repository_id == repositories.c.id)
