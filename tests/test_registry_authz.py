"""Authorization is the registry service's first step, whichever face calls it.

Every state-changing operation asks ``Principal.require(action, repository)`` before it
validates or changes anything: what the caller's credentials allow travels with the principal
(``Principal.may``: a bearer token's verified ``access`` claims, a web session's rights), so a
face that forgot a check -- or a new face -- cannot push, delete or mount past them.  Driven
here on the service itself (in process, filesystem + SQLite), as a face would call it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from moorage import errors
from moorage.api.common import EVENTS, SERVICE
from moorage.auth.state import _claims_allow
from moorage.composition import build_app
from moorage.config import Settings
from moorage.registry.events import RegistryEvent
from moorage.registry.principal import Principal
from moorage.registry.service import RegistryService

CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _sha(CONFIG), "size": len(CONFIG)},
        "layers": [],
    }
).encode()


def token(*entries: tuple[str, str]) -> Principal:
    """A caller with a bearer token whose access claims are ``entries`` (repository, actions)."""
    access = [{"type": "repository", "name": repo, "actions": actions.split(",")} for repo, actions in entries]
    return Principal("dora", "v2", may=_claims_allow(access))


async def _one(chunks: bytes) -> object:
    yield chunks


@pytest.fixture()
async def registry(tmp_path: Path):  # type: ignore[no-untyped-def]
    app = build_app(Settings(data=tmp_path, addr="127.0.0.1:5999", metrics_enabled=False))
    seen: list[RegistryEvent] = []

    async def record(event: RegistryEvent) -> None:
        seen.append(event)

    app[EVENTS].subscribe(record)
    async with TestClient(TestServer(app)):
        svc: RegistryService = app[SERVICE]
        svc.seen = seen  # type: ignore[attr-defined]
        yield svc


async def test_push_needs_push_on_that_repository(registry: RegistryService) -> None:
    pull_only = token(("team/app", "pull"))
    with pytest.raises(errors.Denied):
        await registry.put_blob("team/app", _sha(CONFIG), _one(CONFIG), by=pull_only)  # type: ignore[arg-type]
    other_repo = token(("team/other", "pull,push"))
    with pytest.raises(errors.Denied):
        await registry.put_manifest("team/app", "v1", MANIFEST, None, by=other_repo)
    assert registry.seen == []  # type: ignore[attr-defined]
    assert await registry.store.blob_size_in_repository("team/app", _sha(CONFIG)) is None
    # the same calls with push on the repository go through
    pusher = token(("team/app", "pull,push"))
    await registry.put_blob("team/app", _sha(CONFIG), _one(CONFIG), by=pusher)  # type: ignore[arg-type]
    await registry.put_manifest("team/app", "v1", MANIFEST, None, by=pusher)
    assert (await registry.get_manifest("team/app", "v1")).digest == _sha(MANIFEST)
    assert [e.action for e in registry.seen] == ["push", "push"]  # type: ignore[attr-defined]


async def test_delete_needs_delete_and_changes_nothing_when_refused(registry: RegistryService) -> None:
    operator = Principal.operator()
    await registry.put_blob("team/app", _sha(CONFIG), _one(CONFIG), by=operator)  # type: ignore[arg-type]
    await registry.put_manifest("team/app", "v1", MANIFEST, None, by=operator)
    before = len(registry.seen)  # type: ignore[attr-defined]
    pusher = token(("team/app", "pull,push"))
    for call in (
        registry.delete_manifest("team/app", "v1", by=pusher),
        registry.delete_manifest("team/app", _sha(MANIFEST), by=pusher),
        registry.delete_blob("team/app", _sha(CONFIG), by=pusher),
        registry.delete_repository("team/app", by=pusher),
    ):
        with pytest.raises(errors.Denied):
            await call
    assert len(registry.seen) == before  # type: ignore[attr-defined]
    assert (await registry.get_manifest("team/app", "v1")).digest == _sha(MANIFEST)
    await registry.delete_manifest("team/app", "v1", by=token(("team/app", "delete")))
    with pytest.raises(errors.ManifestUnknown):
        await registry.get_manifest("team/app", "v1")


async def test_a_mount_needs_pull_on_its_source(registry: RegistryService) -> None:
    await registry.put_blob("team/src", _sha(CONFIG), _one(CONFIG), by=Principal.operator())  # type: ignore[arg-type]
    blind = token(("team/dst", "pull,push"))  # push here, nothing on the source
    assert await registry.mount_blob("team/dst", _sha(CONFIG), "team/src", by=blind) is False
    assert await registry.store.blob_size_in_repository("team/dst", _sha(CONFIG)) is None
    with pytest.raises(errors.Denied):  # and no push on the target: refused outright
        await registry.mount_blob("team/dst", _sha(CONFIG), "team/src", by=token(("team/src", "pull")))
    both = token(("team/dst", "push"), ("team/src", "pull"))
    assert await registry.mount_blob("team/dst", _sha(CONFIG), "team/src", by=both) is True


async def test_a_wildcard_claim_and_the_operator_may_everything(registry: RegistryService) -> None:
    star = token(("team/app", "*"))
    await registry.put_blob("team/app", _sha(CONFIG), _one(CONFIG), by=star)  # type: ignore[arg-type]
    await registry.put_manifest("team/app", "v1", MANIFEST, None, by=star)
    await registry.delete_manifest("team/app", "v1", by=star)
    await registry.put_manifest("team/app", "v2", MANIFEST, None, by=Principal.operator("job"))
    assert (await registry.get_manifest("team/app", "v2")).digest == _sha(MANIFEST)


async def test_the_catalog_filter_holds_without_a_page_size(registry: RegistryService) -> None:
    """A caller's pull filter applies however the catalog is asked for: with ``n``, without a
    page size (every name), and ``n = 0`` is no names -- never the unfiltered list."""
    operator = Principal.operator()
    for repo in ("team/app", "team/secret", "other/x"):
        await registry.put_blob(repo, _sha(CONFIG), _one(CONFIG), by=operator)  # type: ignore[arg-type]
        await registry.put_manifest(repo, "v1", MANIFEST, None, by=operator)

    async def only_team_app(names: list[str]) -> list[str]:
        return [n for n in names if n == "team/app"]

    assert await registry.catalog(None, None) == ["other/x", "team/app", "team/secret"]
    assert await registry.catalog(10, None, only_team_app) == ["team/app"]
    assert await registry.catalog(None, None, only_team_app) == ["team/app"]
    assert await registry.catalog(0, None, only_team_app) == []


async def test_reads_need_pull_on_that_repository(registry: RegistryService) -> None:
    """The reads a ``/v2`` face serves -- manifest GET and HEAD, blob HEAD/GET, tags list,
    referrers -- ask the same ``require`` first: a token for another repository reads nothing,
    not even whether the repository exists (DENIED, not NAME_UNKNOWN)."""
    operator = Principal.operator()
    await registry.put_blob("team/app", _sha(CONFIG), _one(CONFIG), by=operator)  # type: ignore[arg-type]
    await registry.put_manifest("team/app", "v1", MANIFEST, None, by=operator)
    for caller in (token(("team/other", "pull,push")), token(("team/app", "push")), token(("team/app", "delete"))):
        for repo in ("team/app", "team/none"):
            for call in (
                registry.serve_manifest(repo, "v1", caller),
                registry.get_manifest(repo, _sha(MANIFEST), caller),
                registry.blob_size(repo, _sha(CONFIG), caller),
                registry.list_tags(repo, None, None, caller),
                registry.referrers(repo, _sha(MANIFEST), None, caller),
            ):
                with pytest.raises(errors.Denied):
                    await call
    reader = token(("team/app", "pull"))
    assert (await registry.serve_manifest("team/app", "v1", reader)).digest == _sha(MANIFEST)
    assert await registry.blob_size("team/app", _sha(CONFIG), reader) == len(CONFIG)
    assert await registry.list_tags("team/app", None, None, reader) == ["v1"]
    assert await registry.referrers("team/app", _sha(MANIFEST), None, reader) == []
