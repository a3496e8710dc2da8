"""Immutable tags: a (repository pattern, tag regex) rule forbids moving a matching tag.

The check runs inside :meth:`MetadataStore.put_manifest`'s write transaction
(:func:`check_tag_move`), so two concurrent pushes of one immutable tag cannot both win: the
tag row is inserted first with ``ON CONFLICT DO NOTHING`` (the second push waits for the first
to commit on PostgreSQL; SQLite serializes writers), then the existing row is compared.
Pushing the identical manifest to the same tag again is allowed (the digest does not change).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ..metadata.db import Database
from ..metadata.tables import immutable_tags, manifests, tags
from ..registry import errors
from .patterns import compile_regex, repo_matches


@dataclass(frozen=True, slots=True)
class ImmutableRule:
    repo_pattern: str
    tag_regex: str

    def matches(self, repository: str, tag: str) -> bool:
        return repo_matches(self.repo_pattern, repository) and compile_regex(self.tag_regex).fullmatch(tag) is not None


async def set_rule(db: Database, repo_pattern: str, tag_regex: str) -> None:
    compile_regex(tag_regex)
    async with db.write() as conn:
        await conn.execute(db.insert(immutable_tags).values(
            repo_pattern=repo_pattern, tag_regex=tag_regex, created_at=time.time()
        ).on_conflict_do_nothing(index_elements=["repo_pattern", "tag_regex"]))


async def list_rules(db: Database) -> list[ImmutableRule]:
    async with db.read() as conn:
        rows = (await conn.execute(select(immutable_tags).order_by(immutable_tags.c.repo_pattern, immutable_tags.c.tag_regex))).all()
    return [ImmutableRule(r.repo_pattern, r.tag_regex) for r in rows]


async def remove_rule(db: Database, repo_pattern: str, tag_regex: str | None = None) -> int:
    q = delete(immutable_tags).where(immutable_tags.c.repo_pattern == repo_pattern)
    if tag_regex is not None:
        q = q.where(immutable_tags.c.tag_regex == tag_regex)
    async with db.write() as conn:
        return int((await conn.execute(q)).rowcount or 0)


async def check_tag_move(conn: AsyncConnection, db: Any, repo_id: int, repository: str, tag: str, manifest_id: int) -> None:
    """Raise DENIED if ``tag`` is immutable and already points at another manifest.

    Called inside put_manifest's write transaction, before the tag is upserted.
    """
    rules = (await conn.execute(select(immutable_tags.c.repo_pattern, immutable_tags.c.tag_regex))).all()
    rule = next((ImmutableRule(r.repo_pattern, r.tag_regex) for r in rules
                 if _safe_match(ImmutableRule(r.repo_pattern, r.tag_regex), repository, tag)), None)
    if rule is None:
        return
    # Claim the tag for this manifest if nobody has it yet (atomic under concurrency) ...
    await conn.execute(db.insert(tags).values(
        repository_id=repo_id, name=tag, manifest_id=manifest_id, updated_at=time.time()
    ).on_conflict_do_nothing(index_elements=["repository_id", "name"]))
    # ... then whoever holds it must be this manifest.
    row = (await conn.execute(
        select(tags.c.manifest_id, manifests.c.digest)
        .select_from(tags.join(manifests, manifests.c.id == tags.c.manifest_id))
        .where(tags.c.repository_id == repo_id, tags.c.name == tag)
        .with_for_update(of=tags)
    )).first()
    if row is not None and int(row.manifest_id) != int(manifest_id):
        raise errors.Denied(
            f"tag {tag!r} of {repository} is immutable (rule: repositories {rule.repo_pattern!r}, "
            f"tags {rule.tag_regex!r}) and already points at {row.digest}; push under a new tag",
            detail={"tag": tag, "digest": row.digest, "rule": {"repository": rule.repo_pattern, "tag": rule.tag_regex}},
        )


def _safe_match(rule: ImmutableRule, repository: str, tag: str) -> bool:
    try:
        return rule.matches(repository, tag)
    except ValueError:  # a bad regex stored by hand: ignore it rather than break pushes
        return False
