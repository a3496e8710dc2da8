"""Immutable tags: a (repository pattern, tag regex) rule forbids moving a matching tag.

The check runs inside :meth:`MetadataStore.put_manifest`'s write transaction
(:func:`check_tag_move`), so two concurrent pushes of one immutable tag cannot both win: the
tag row is inserted first with ``ON CONFLICT DO NOTHING`` (the second push waits for the first
to commit on PostgreSQL; SQLite serializes writers), then the existing row is compared.
Pushing the identical manifest to the same tag again is allowed (the digest does not change).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import errors
from ..metadata.db import Database
from ..metadata.policy_store import PolicyStore, claim_tag, immutable_rules
from ..metadata.records import ImmutableRule
from .patterns import compile_regex, repo_matches

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["ImmutableRule", "check_tag_move", "list_rules", "rule_matches"]


def rule_matches(rule: ImmutableRule, repository: str, tag: str) -> bool:
    return repo_matches(rule.repo_pattern, repository) and compile_regex(rule.tag_regex).fullmatch(tag) is not None


async def list_rules(db: Database) -> list[ImmutableRule]:
    return await PolicyStore(db).list_immutable()


async def check_tag_move(conn: AsyncConnection, db: Any, repo_id: int, repository: str, tag: str, manifest_id: int) -> None:
    """Raise DENIED if ``tag`` is immutable and already points at another manifest.

    Called inside put_manifest's write transaction (``conn``), before the tag is upserted.
    """
    rule = next((r for r in await immutable_rules(conn) if _safe_match(r, repository, tag)), None)
    if rule is None:
        return
    # Claim the tag for this manifest if nobody has it yet (atomic under concurrency), then
    # whoever holds it must be this manifest.
    holder = await claim_tag(conn, db, repo_id, tag, manifest_id)
    if holder is not None and holder.manifest_id != int(manifest_id):
        raise errors.Denied(
            f"tag {tag!r} of {repository} is immutable (rule: repositories {rule.repo_pattern!r}, "
            f"tags {rule.tag_regex!r}) and already points at {holder.digest}; push under a new tag",
            detail={"tag": tag, "digest": holder.digest, "rule": {"repository": rule.repo_pattern, "tag": rule.tag_regex}},
        )


def _safe_match(rule: ImmutableRule, repository: str, tag: str) -> bool:
    try:
        return rule_matches(rule, repository, tag)
    except ValueError:  # a bad regex stored by hand: ignore it rather than break pushes
        return False
