"""Immutable tags under concurrency: the FIRST push of an immutable tag, twice at once.

docs (moorage/gc/immutable.py): two concurrent pushes of one immutable tag cannot both win --
the tag row is claimed with ``INSERT ... ON CONFLICT DO NOTHING`` and re-read ``FOR UPDATE``
inside the manifest PUT's transaction.  Exactly one PUT gets 201; the other gets 403 DENIED
(the spec's code for "the operation is not allowed"), its manifest rolled back.

* ``test_parallel_first_push_*`` fires two PUTs of different manifests at one new tag at the
  same moment, several rounds, on every backend.
* ``test_first_push_race_forced_on_postgres`` makes the race certain on PostgreSQL (where the
  writers really run in parallel; SQLite serialises writers with ``BEGIN IMMEDIATE``): the test
  holds an uncommitted row for the tag in its own transaction, waits until BOTH server
  transactions are blocked behind it, then rolls back -- so both decide at the same instant.
  Without the atomic claim both would overwrite the tag and both get 201.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import requests

from tests.gc_push import make_image, push_blob, push_image, push_manifest, sha, sub_cli

REPO = "imm/race"


def _setup_rule(proc) -> None:  # noqa: ANN001
    sub_cli(proc, "immutable", "set", "imm/*", r"v\d+")


def _images(round_: int) -> tuple:
    shared = []
    return (make_image(f"imm-race-a-{round_}", shared, unique=1), make_image(f"imm-race-b-{round_}", shared, unique=1))


def _put_both(url: str, tag: str, a, b) -> list[requests.Response]:  # noqa: ANN001
    """PUT a and b to ``tag`` from two threads released by one barrier."""
    barrier = threading.Barrier(2)
    out: list[requests.Response | BaseException | None] = [None, None]

    def put(i: int, img) -> None:  # noqa: ANN001
        s = requests.Session()
        try:
            barrier.wait(timeout=30)
            out[i] = push_manifest(url, REPO, tag, img.manifest, session=s)
        except BaseException as e:  # noqa: BLE001
            out[i] = e

    threads = [threading.Thread(target=put, args=(i, img)) for i, img in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(isinstance(r, requests.Response) for r in out), out
    return out  # type: ignore[return-value]


def _assert_one_winner(url: str, tag: str, a, b, rs: list[requests.Response]) -> None:  # noqa: ANN001
    statuses = sorted(r.status_code for r in rs)
    assert statuses == [201, 403], [(r.status_code, r.text) for r in rs]
    win, lose = (0, 1) if rs[0].status_code == 201 else (1, 0)
    winner, loser = (a, b)[win], (a, b)[lose]
    err = rs[lose].json()["errors"]
    assert len(err) == 1 and err[0]["code"] == "DENIED", err
    assert "immutable" in err[0]["message"] and err[0]["detail"]["digest"] == winner.digest, err
    assert rs[win].headers["Docker-Content-Digest"] == winner.digest
    got = requests.get(
        f"{url}/v2/{REPO}/manifests/{tag}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=30
    )
    assert got.status_code == 200 and got.content == winner.manifest
    # the loser's transaction was rolled back whole: not even its manifest is stored
    r = requests.get(f"{url}/v2/{REPO}/manifests/{loser.digest}", timeout=30)
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    # and the tag stays where it is
    again = push_manifest(url, REPO, tag, loser.manifest)
    assert again.status_code == 403 and again.json()["errors"][0]["code"] == "DENIED"


def test_parallel_first_push_of_an_immutable_tag_one_wins(fresh_moorage):
    url = fresh_moorage.url
    _setup_rule(fresh_moorage)
    for i in range(6):
        a, b = _images(i)
        for blob in a.blobs + b.blobs:
            push_blob(url, REPO, blob)
        _assert_one_winner(url, f"v{i}", a, b, _put_both(url, f"v{i}", a, b))
    # a tag the rule does not cover: both may win (last writer), no DENIED
    a, b = _images(99)
    for blob in a.blobs + b.blobs:
        push_blob(url, REPO, blob)
    assert sorted(r.status_code for r in _put_both(url, "latest", a, b)) == [201, 201]


def _pg_dsn(proc) -> str:  # noqa: ANN001
    return proc.backend_env["MOORAGE_DATABASE__URL"].replace("postgresql+asyncpg://", "postgresql://", 1)


def test_first_push_race_forced_on_postgres(fresh_moorage):
    if fresh_moorage.backend != "s3-postgres":
        pytest.skip("SQLite serialises writers (BEGIN IMMEDIATE): the race cannot be forced there")
    import asyncpg

    url = fresh_moorage.url
    _setup_rule(fresh_moorage)
    placeholder = make_image("imm-race-placeholder", unique=1)
    push_image(url, REPO, placeholder.digest, placeholder)  # by digest: a manifest for our blocking row
    a, b = _images(0)
    for blob in a.blobs + b.blobs:
        push_blob(url, REPO, blob)

    async def scenario() -> list[requests.Response]:
        conn = await asyncpg.connect(_pg_dsn(fresh_moorage))
        watch = await asyncpg.connect(_pg_dsn(fresh_moorage))
        try:
            repo_id = await conn.fetchval("SELECT id FROM repositories WHERE name = $1", REPO)
            mid = await conn.fetchval(
                "SELECT id FROM manifests WHERE repository_id = $1 AND digest = $2", repo_id, placeholder.digest
            )
            tx = conn.transaction()
            await tx.start()
            await conn.execute(
                "INSERT INTO tags (repository_id, name, manifest_id, updated_at) VALUES ($1, 'v1', $2, $3)",
                repo_id,
                mid,
                time.time(),
            )
            puts = asyncio.ensure_future(asyncio.to_thread(_put_both, url, "v1", a, b))
            # both server transactions must be blocked behind our row before we let them go
            deadline = time.monotonic() + 60
            waiting = 0
            while time.monotonic() < deadline and not puts.done():
                waiting = await watch.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
                if waiting >= 2:
                    break
                await asyncio.sleep(0.02)
            assert waiting >= 2, f"only {waiting} server transaction(s) reached the tag (done: {puts.done()})"
            await tx.rollback()
            return await asyncio.wait_for(puts, 120)
        finally:
            await conn.close()
            await watch.close()

    rs = asyncio.run(scenario())
    _assert_one_winner(url, "v1", a, b, rs)
    assert sha(a.manifest) != sha(b.manifest)
