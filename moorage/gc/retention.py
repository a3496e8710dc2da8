"""Retention policies per repository or namespace pattern, applied by ``moorage gc``.

A policy may set up to three rules; a tag is **removed** only if every rule that is set
agrees:

* ``keep_last N`` — the tag is not among the repository's N most recently pushed tags;
* ``expire_days D`` — the tag was pushed (or last moved) more than D days ago;
* ``keep_regex R`` — the tag does not match R (a full match keeps it, always).

So ``keep_last 10`` alone keeps the ten newest tags; ``expire_days 30`` alone drops tags older
than 30 days; both together keep the ten newest *and* everything younger than 30 days;
``keep_regex`` alone keeps only the matching tags.  When several policies match one
repository, a tag goes only if every one of them would remove it (the most conservative
reading).  Removing a tag deletes only the tag; the manifest becomes untagged and its blobs
go with ``moorage gc --delete-untagged``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Sequence

from sqlalchemy import and_, delete, select

from ..metadata.db import Database
from ..metadata.tables import repositories, retention_policies, tags
from .patterns import compile_regex, repo_matches


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    pattern: str
    keep_last: int | None = None
    keep_regex: str | None = None
    expire_days: float | None = None

    def describe(self) -> str:
        parts = []
        if self.keep_last is not None:
            parts.append(f"keep last {self.keep_last}")
        if self.expire_days is not None:
            parts.append(f"expire after {self.expire_days:g} days")
        if self.keep_regex is not None:
            parts.append(f"keep tags matching {self.keep_regex!r}")
        return ", ".join(parts) or "(no rule)"


@dataclass(frozen=True, slots=True)
class TagInfo:
    repository_id: int
    repository: str
    name: str
    manifest_id: int
    updated_at: float


async def set_policy(db: Database, policy: RetentionPolicy) -> None:
    if policy.keep_last is None and policy.keep_regex is None and policy.expire_days is None:
        raise ValueError("a retention policy needs at least one of --keep-last, --keep-regex, --expire-days")
    if policy.keep_last is not None and policy.keep_last < 0:
        raise ValueError("--keep-last must be >= 0")
    if policy.expire_days is not None and policy.expire_days < 0:
        raise ValueError("--expire-days must be >= 0")
    if policy.keep_regex is not None:
        compile_regex(policy.keep_regex)
    values = {"keep_last": policy.keep_last, "keep_regex": policy.keep_regex, "expire_days": policy.expire_days}
    async with db.write() as conn:
        await conn.execute(db.insert(retention_policies).values(pattern=policy.pattern, created_at=time.time(), **values)
                           .on_conflict_do_update(index_elements=["pattern"], set_=values))


async def list_policies(db: Database) -> list[RetentionPolicy]:
    async with db.read() as conn:
        rows = (await conn.execute(select(retention_policies).order_by(retention_policies.c.pattern))).all()
    return [RetentionPolicy(r.pattern, r.keep_last, r.keep_regex, r.expire_days) for r in rows]


async def remove_policy(db: Database, pattern: str) -> bool:
    async with db.write() as conn:
        res = await conn.execute(delete(retention_policies).where(retention_policies.c.pattern == pattern))
    return bool(res.rowcount)


def _removed_by(policy: RetentionPolicy, ordered: Sequence[TagInfo], now: float) -> set[tuple[int, str]]:
    regex = compile_regex(policy.keep_regex) if policy.keep_regex is not None else None
    out: set[tuple[int, str]] = set()
    for rank, tag in enumerate(ordered):
        if regex is not None and regex.fullmatch(tag.name):
            continue
        if policy.keep_last is not None and rank < policy.keep_last:
            continue
        if policy.expire_days is not None and tag.updated_at >= now - policy.expire_days * 86400:
            continue
        out.add((tag.repository_id, tag.name))
    return out


def plan(policies: Sequence[RetentionPolicy], all_tags: Iterable[TagInfo], now: float | None = None) -> list[TagInfo]:
    """The tags the policies remove (pure function; newest-first ranking by push time)."""
    now = time.time() if now is None else now
    by_repo: dict[str, list[TagInfo]] = {}
    for t in all_tags:
        by_repo.setdefault(t.repository, []).append(t)
    doomed: list[TagInfo] = []
    for repo, repo_tags in sorted(by_repo.items()):
        matching = [p for p in policies if repo_matches(p.pattern, repo)]
        if not matching:
            continue
        ordered = sorted(repo_tags, key=lambda t: (-t.updated_at, t.name))
        removed = set.intersection(*(_removed_by(p, ordered, now) for p in matching))
        doomed.extend(t for t in ordered if (t.repository_id, t.name) in removed)
    return doomed


async def load_tags(db: Database, repository: str | None = None) -> list[TagInfo]:
    q = (select(tags.c.repository_id, repositories.c.name.label("repository"), tags.c.name, tags.c.manifest_id, tags.c.updated_at)
         .select_from(tags.join(repositories, repositories.c.id == tags.c.repository_id)))
    if repository is not None:
        q = q.where(repositories.c.name == repository)
    async with db.read() as conn:
        rows = (await conn.execute(q)).all()
    return [TagInfo(int(r.repository_id), r.repository, r.name, int(r.manifest_id), float(r.updated_at)) for r in rows]


async def remove_tags(db: Database, doomed: Sequence[TagInfo], batch: int = 200) -> int:
    """Delete the planned tags, each only if it still points where it did (a re-push wins)."""
    removed = 0
    for i in range(0, len(doomed), batch):
        async with db.write() as conn:
            for t in doomed[i:i + batch]:
                res = await conn.execute(delete(tags).where(and_(
                    tags.c.repository_id == t.repository_id, tags.c.name == t.name,
                    tags.c.manifest_id == t.manifest_id, tags.c.updated_at == t.updated_at,
                )))
                removed += int(res.rowcount or 0)
    return removed
