"""The policy hooks the core consults: immutable tags inside the tag-move transaction, storage
quotas before an upload is committed (for sizes known only then: chunked bodies)."""

from __future__ import annotations

from ..components import Policies
from ..metadata.db import Database
from . import quotas
from .immutable import check_tag_move
from .quotas import QUOTA_APPLIES


def policy_hooks(database: Database) -> Policies:
    async def quota_guard(repository: str, digest: str, size: int) -> None:
        await quotas.check_push(database, repository, size, digest)

    async def quota_headroom(repository: str, digest: str | None) -> int | None:
        if QUOTA_APPLIES.get() is False:  # the quota middleware just looked: no quota here
            return None
        return await quotas.headroom(database, repository, digest)

    return Policies(tag_guards=[check_tag_move], commit_guard=quota_guard, upload_limit=quota_headroom)
