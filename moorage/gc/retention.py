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
from collections.abc import AsyncIterator, Iterable, Sequence

from ..metadata.db import Database
from ..metadata.policy_store import PolicyStore
from ..metadata.records import RetentionPolicy, TagInfo
from ..registry.principal import Principal
from ..registry.service import RETENTION, RegistryService
from .patterns import compile_regex, repo_matches

__all__ = [
    "RetentionPolicy",
    "TagInfo",
    "list_policies",
    "load_tags",
    "plan",
    "plan_all",
    "plan_repository",
    "plan_repository_batches",
    "remove_tags",
]


async def list_policies(db: Database) -> list[RetentionPolicy]:
    return await PolicyStore(db).list_retention()


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


#: Tags a batch of :func:`plan_repository_batches` reads (one walk of ``ix_tags_updated``).
PLAN_BATCH = 1000


async def plan_repository_batches(
    db: Database, policies: Sequence[RetentionPolicy], repository: str, now: float | None = None, batch: int = PLAN_BATCH
) -> AsyncIterator[list[TagInfo]]:
    """:func:`plan` for one repository, newest first, ``batch`` tags at a time, with the
    ranking and age rules run by the database (only the tags every rule removes come back;
    ``keep_regex`` is then applied here).  Each batch continues from the last one's key, so
    a plan of 99,990 tags is a hundred bounded reads, removable as they come (issue 24)."""
    now = time.time() if now is None else now
    matching = [p for p in policies if repo_matches(p.pattern, repository)]
    if not matching:
        return
    rules = [(p.keep_last, None if p.expire_days is None else now - p.expire_days * 86400) for p in matching]
    regexes = [compile_regex(p.keep_regex) for p in matching if p.keep_regex is not None]
    store = PolicyStore(db)
    after: tuple[float, str] | None = None
    while True:
        found = await store.retention_candidates(repository, rules, limit=batch, after=after)
        if not found:
            return
        after = (found[-1].updated_at, found[-1].name)
        kept = [t for t in found if not any(r.fullmatch(t.name) for r in regexes)]
        if kept:
            yield kept
        if len(found) < batch:
            return


async def plan_repository(
    db: Database, policies: Sequence[RetentionPolicy], repository: str, now: float | None = None
) -> list[TagInfo]:
    """:func:`plan` for one repository, all at once (:func:`plan_repository_batches`)."""
    return [t async for part in plan_repository_batches(db, policies, repository, now, batch=10_000) for t in part]


#: A repository with more tags than this is ranked by the database (:func:`plan_repository`);
#: smaller ones are planned here, their tags read a batch of repositories at a time.
RANKED_IN_DB = 1000
#: Repositories whose tags one read of :func:`plan_all` loads together.
PLAN_BATCH = 500


async def plan_all(db: Database, policies: Sequence[RetentionPolicy], now: float | None = None) -> list[TagInfo]:
    """:func:`plan` over every repository, without loading every tag (issue 24: 25 s and every
    tag in memory at 1M repositories).  The database names the repositories where some rule
    can remove anything (:meth:`PolicyStore.retention_repositories`); of those, the big ones
    are ranked by the database and the others planned a batch at a time.  Same result, in
    the same order (repository name, then newest first)."""
    now = time.time() if now is None else now
    if not policies:
        return []
    store = PolicyStore(db)
    rules = [(p.keep_last, None if p.expire_days is None else now - p.expire_days * 86400) for p in policies]
    found = await store.retention_repositories(rules)
    found = sorted((r for r in found if any(repo_matches(p.pattern, r[1]) for p in policies)), key=lambda r: r[1])
    doomed: list[TagInfo] = []
    batch: list[int] = []

    async def plan_batch() -> None:
        if batch:
            doomed.extend(plan(policies, await store.load_tags_of(batch), now))
            batch.clear()

    for repo_id, name, count in found:
        if count > RANKED_IN_DB:
            await plan_batch()  # (keeps the name order)
            doomed.extend(await plan_repository(db, policies, name, now))
        else:
            batch.append(repo_id)
            if len(batch) >= PLAN_BATCH:
                await plan_batch()
    await plan_batch()
    return doomed


async def load_tags(db: Database, repository: str | None = None) -> list[TagInfo]:
    return await PolicyStore(db).load_tags(repository)


async def remove_tags(registry: RegistryService, doomed: Sequence[TagInfo], by: Principal = RETENTION, batch: int = 200) -> int:
    """Delete the planned tags, each only if it still points where it did (a re-push wins):
    a registry change, audited and announced as ``delete tag`` by ``by`` (actor ``retention``)."""
    return await registry.expire_tags(doomed, by, batch=batch)
