"""SQL of the image-insight extension: advisories, image inventories and findings, pull policies."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update

from ..metadata.db import Database
from ..metadata.tables import (
    insight_advisories,
    insight_affected,
    insight_allowlist,
    insight_image_packages,
    insight_images,
    insight_policies,
    insight_state,
)

if TYPE_CHECKING:  # (sqlalchemy.ext.asyncio loads the ORM: not at the server's start)
    from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True)
class AffectedRow:
    advisory_id: str
    ecosystem: str
    family: str
    package: str
    spec: dict[str, Any]


@dataclass(frozen=True)
class ImageRow:
    digest: str
    repository: str
    os: str
    platform: str
    package_count: int
    packages: list[dict[str, str]]
    skipped: list[dict[str, str]]
    sboms: dict[str, str]
    scanned_at: float
    findings: list[dict[str, Any]]
    counts: dict[str, int]
    worst: str
    matched_generation: int


#: What an advisory id or alias looks like (CVE-2024-1234, GHSA-xxxx-xxxx-xxxx, DSA-5678-1, PYSEC-2021-1).
_ADVISORY_ID = re.compile(r"^[A-Z0-9][A-Z0-9._:-]{0,254}$")


def _image(row: Any) -> ImageRow:
    return ImageRow(
        row.digest,
        row.repository,
        row.os,
        row.platform,
        row.package_count,
        json.loads(row.packages),
        json.loads(row.skipped),
        json.loads(row.sboms),
        row.scanned_at,
        json.loads(row.findings),
        json.loads(row.counts),
        row.worst,
        row.matched_generation,
    )


class InsightStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------------ advisories
    async def advisory_versions(self, ids: Iterable[str]) -> dict[str, str]:
        ids = list(ids)
        out: dict[str, str] = {}
        async with self.db.read() as conn:
            for i in range(0, len(ids), 500):
                rows = await conn.execute(
                    select(insight_advisories.c.id, insight_advisories.c.modified).where(
                        insight_advisories.c.id.in_(ids[i : i + 500])
                    )
                )
                out.update({r.id: r.modified for r in rows})
        return out

    async def put_advisories(self, advisories: list[Any], source: str) -> None:
        """Insert or replace advisories (``osv.Advisory``) and their affected rows, in one transaction."""
        if not advisories:
            return
        now = time.time()
        ids = [a.id for a in advisories]
        async with self.db.write() as conn:
            await conn.execute(delete(insight_affected).where(insight_affected.c.advisory_id.in_(ids)))
            await conn.execute(delete(insight_advisories).where(insight_advisories.c.id.in_(ids)))
            await conn.execute(
                insight_advisories.insert(),
                [
                    {
                        "id": a.id,
                        "modified": a.modified,
                        "summary": a.summary,
                        "severity": a.severity,
                        "score": a.score,
                        "aliases": json.dumps(a.aliases),
                        "source": source[:1024],
                        "imported_at": now,
                    }
                    for a in advisories
                ],
            )
            rows = [
                {"advisory_id": a.id, "ecosystem": eco, "family": fam, "package": pkg, "spec": json.dumps(spec)}
                for a in advisories
                for eco, fam, pkg, spec in a.affected
            ]
            if rows:
                await conn.execute(insight_affected.insert(), rows)

    async def affected_for(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], list[AffectedRow]]:
        """Affected entries for (family, package) keys, batched."""
        out: dict[tuple[str, str], list[AffectedRow]] = {}
        by_family: dict[str, list[str]] = {}
        for fam, pkg in keys:
            by_family.setdefault(fam, []).append(pkg)
        async with self.db.read() as conn:
            for fam, names in by_family.items():
                for i in range(0, len(names), 500):
                    rows = await conn.execute(
                        select(insight_affected).where(
                            insight_affected.c.family == fam, insight_affected.c.package.in_(names[i : i + 500])
                        )
                    )
                    for r in rows:
                        out.setdefault((r.family, r.package), []).append(
                            AffectedRow(r.advisory_id, r.ecosystem, r.family, r.package, json.loads(r.spec))
                        )
        return out

    async def advisories(self, ids: Iterable[str]) -> dict[str, Any]:
        ids = list(ids)
        out: dict[str, Any] = {}
        async with self.db.read() as conn:
            for i in range(0, len(ids), 500):
                rows = await conn.execute(select(insight_advisories).where(insight_advisories.c.id.in_(ids[i : i + 500])))
                out.update({r.id: r for r in rows})
        return out

    async def advisory_count(self) -> int:
        async with self.db.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(insight_advisories))).scalar_one())

    async def vulndb_state(self) -> tuple[int, str | None, str | None]:
        """(advisories loaded, newest ``modified`` among them, the ``last_import`` state JSON),
        in one read: what every place showing findings says about the database behind them."""
        async with self.db.read() as conn:
            n, newest = (
                await conn.execute(select(func.count(), func.max(insight_advisories.c.modified)).select_from(insight_advisories))
            ).one()
            last = (await conn.execute(select(insight_state.c.value).where(insight_state.c.key == "last_import"))).scalar()
        return int(n or 0), newest or None, last

    async def advisory_ids_by_alias(self, alias: str, limit: int = 100) -> list[str]:
        """Ids of the advisories listing ``alias`` (e.g. a CVE id under a Debian DSA) among
        their aliases; exact match, case-insensitive."""
        needle = alias.strip().upper()
        if not _ADVISORY_ID.match(needle):
            return []
        pattern = '%"' + needle.replace("_", "\\_") + '"%'  # the JSON list holds it quoted
        q = (
            select(insight_advisories.c.id, insight_advisories.c.aliases)
            .where(func.upper(insight_advisories.c.aliases).like(pattern, escape="\\"))
            .order_by(insight_advisories.c.id)
            .limit(limit * 4)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(q)).all()
        out = []
        for r in rows:
            try:
                aliases = json.loads(r.aliases or "[]")
            except ValueError:
                continue
            if any(isinstance(a, str) and a.upper() == needle for a in aliases):
                out.append(r.id)
        return out[:limit]

    # ----------------------------------------------------------------------------- state
    async def get_state(self, key: str) -> str | None:
        async with self.db.read() as conn:
            value: str | None = (await conn.execute(select(insight_state.c.value).where(insight_state.c.key == key))).scalar()
            return value

    async def set_state(self, key: str, value: str) -> None:
        async with self.db.write() as conn:
            stmt = self.db.insert(insight_state).values(key=key, value=value)
            await conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": value}))

    async def generation(self) -> int:
        return int(await self.get_state("generation") or 0)

    async def bump_generation(self) -> int:
        async with self.db.write() as conn:
            cur = (await conn.execute(select(insight_state.c.value).where(insight_state.c.key == "generation"))).scalar()
            new = int(cur or 0) + 1
            stmt = self.db.insert(insight_state).values(key="generation", value=str(new))
            await conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": str(new)}))
        return new

    # ---------------------------------------------------------------------------- images
    async def put_image(
        self,
        digest: str,
        repository: str,
        os_name: str,
        platform: str,
        packages: list[dict[str, str]],
        skipped: list[dict[str, str]],
        sboms: dict[str, str],
    ) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(insight_image_packages).where(insight_image_packages.c.digest == digest))
            await conn.execute(delete(insight_images).where(insight_images.c.digest == digest))
            await conn.execute(
                insight_images.insert().values(
                    digest=digest,
                    repository=repository,
                    os=os_name,
                    platform=platform,
                    package_count=len(packages),
                    packages=json.dumps(packages, separators=(",", ":")),
                    skipped=json.dumps(skipped),
                    sboms=json.dumps(sboms),
                    scanned_at=time.time(),
                    findings="[]",
                    counts="{}",
                    worst="",
                    matched_generation=-1,
                )
            )
            rows = [{"digest": digest, "ecosystem": p["ecosystem"], "name": p["name"], "version": p["version"]} for p in packages]
            for i in range(0, len(rows), 1000):
                await conn.execute(insight_image_packages.insert(), rows[i : i + 1000])

    async def get_image(self, digest: str) -> ImageRow | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(insight_images).where(insight_images.c.digest == digest))).first()
        return _image(row) if row else None

    async def image_digests(self) -> list[str]:
        async with self.db.read() as conn:
            return list((await conn.execute(select(insight_images.c.digest).order_by(insight_images.c.digest))).scalars())

    async def set_findings(
        self, digest: str, findings: list[dict[str, Any]], counts: dict[str, int], worst: str, generation: int
    ) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(insight_images)
                .where(insight_images.c.digest == digest)
                .values(
                    findings=json.dumps(findings, separators=(",", ":")),
                    counts=json.dumps(counts),
                    worst=worst,
                    matched_generation=generation,
                )
            )

    async def worst_of(self, digest: str) -> tuple[str, list[dict[str, Any]]] | None:
        """(worst severity, findings) of a scanned image; None if never scanned."""
        async with self.db.read(snapshot=False) as conn:
            row = (
                await conn.execute(
                    select(insight_images.c.worst, insight_images.c.findings).where(insight_images.c.digest == digest)
                )
            ).first()
        return (row.worst, json.loads(row.findings)) if row else None

    async def summaries(self, digests: list[str]) -> dict[str, tuple[str, dict[str, int]]]:
        """(worst severity, counts by severity) of the scanned images among ``digests``."""
        out: dict[str, tuple[str, dict[str, int]]] = {}
        async with self.db.read(snapshot=False) as conn:
            for i in range(0, len(digests), 500):
                rows = await conn.execute(
                    select(insight_images.c.digest, insight_images.c.worst, insight_images.c.counts).where(
                        insight_images.c.digest.in_(digests[i : i + 500])
                    )
                )
                out.update({r.digest: (r.worst, json.loads(r.counts)) for r in rows})
        return out

    async def images_with_package(self, name: str, limit: int = 1000) -> list[tuple[str, str, str, str]]:
        """(digest, repository, ecosystem, version) of images holding a package called ``name``."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(
                    insight_image_packages.c.digest,
                    insight_images.c.repository,
                    insight_image_packages.c.ecosystem,
                    insight_image_packages.c.version,
                )
                .join(insight_images, insight_images.c.digest == insight_image_packages.c.digest)
                .where(insight_image_packages.c.name == name)
                .limit(limit)
            )
            return [tuple(r) for r in rows]

    async def images(self) -> list[ImageRow]:
        async with self.db.read() as conn:
            return [_image(r) for r in await conn.execute(select(insight_images))]

    # -------------------------------------------------------------------------- policies
    async def policies(self) -> dict[str, str]:
        async with self.db.read(snapshot=False) as conn:
            rows = await conn.execute(select(insight_policies.c.namespace, insight_policies.c.block_severity))
            return {r.namespace: r.block_severity for r in rows}

    async def set_policy(self, namespace: str, block_severity: str | None, *, conn: AsyncConnection) -> bool:
        """Set (or with None remove) the policy of ``namespace`` on the caller's transaction;
        whether one was there before."""
        res = await conn.execute(delete(insight_policies).where(insight_policies.c.namespace == namespace))
        if block_severity:
            await conn.execute(
                insight_policies.insert().values(namespace=namespace, block_severity=block_severity, updated_at=time.time())
            )
        return bool(res.rowcount)

    async def allowlist(self, namespace: str) -> dict[str, float | None]:
        async with self.db.read(snapshot=False) as conn:
            rows = await conn.execute(
                select(insight_allowlist.c.advisory_id, insight_allowlist.c.expires_at).where(
                    insight_allowlist.c.namespace == namespace
                )
            )
            return {r.advisory_id: r.expires_at for r in rows}

    async def allow(
        self, namespace: str, advisory_id: str, expires_at: float | None, reason: str, *, conn: AsyncConnection
    ) -> None:
        stmt = self.db.insert(insight_allowlist).values(
            namespace=namespace, advisory_id=advisory_id, expires_at=expires_at, reason=reason, created_at=time.time()
        )
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["namespace", "advisory_id"], set_={"expires_at": expires_at, "reason": reason}
            )
        )

    async def disallow(self, namespace: str, advisory_id: str, *, conn: AsyncConnection) -> bool:
        res = await conn.execute(
            delete(insight_allowlist).where(
                insight_allowlist.c.namespace == namespace, insight_allowlist.c.advisory_id == advisory_id
            )
        )
        return bool(res.rowcount)
