"""The scanner's resource bounds without a server: whiteouts through an index (work grows with the
input, not with input x kept files), the time budget over the whole image (whiteouts included),
what a scan keeps under its byte budget, streamed package databases, a hostile layer rolled back,
and the fair queue and memory budget shared between users."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import tarfile
import time
from pathlib import Path

import pytest

from moorage.insight.fairness import ByteBudget, FairQueue
from moorage.insight.layers import ImageWalker, Inventory, Limits
from moorage.insight.packages import DEBIAN, NPM, iter_lines, parse_dpkg_status
from tests.support.insight_images import gz, tar_bytes

FILES, WHITEOUTS = 2_000, 100_000


@functools.cache  # the 100,000-entry tars are built once for the tests that share them
def npm_layer(n: int) -> bytes:
    return tar_bytes(
        {f"srv/app/node_modules/p{i}/package.json": json.dumps({"name": f"p{i}", "version": "1.0.0"}).encode() for i in range(n)}
    )


@functools.cache
def whiteout_layer(n: int, *, whiteouts: bool = True) -> bytes:
    """``n`` whiteouts of paths that are not there (spread over directories), or ``n`` plain files
    at the same paths (the baseline: the same tar, with nothing to remove)."""
    prefix = ".wh." if whiteouts else "f"
    return tar_bytes({f"srv/app/node_modules/p{i % FILES}/{prefix}x{i}": b"" for i in range(n)})


def walker_for(layers: list[bytes], limits: Limits = Limits(), **kw: object) -> tuple[ImageWalker, Inventory]:
    walker = ImageWalker(limits, **kw)  # type: ignore[arg-type]
    for i, layer in enumerate(layers):
        walker.add_layer(f"sha256:{i:064x}", io.BytesIO(layer))
    return walker, walker.inventory()


def test_whiteouts_cost_lookups_not_scans_of_everything_kept() -> None:
    """Issue 21 item 2: 100,000 ``.wh.*`` entries over 2,000 kept files took 44 s of CPU (every
    whiteout scanned every kept file).  Now a whiteout is an index lookup: the CPU time of the
    whiteout layer is about that of the same tar of plain files (compared with each other on this
    machine, never with a number of seconds), and the walker's operation count is linear."""
    base = npm_layer(FILES)
    bomb, plain = whiteout_layer(WHITEOUTS), whiteout_layer(WHITEOUTS, whiteouts=False)

    def cpu(layers: list[bytes]) -> tuple[float, ImageWalker, Inventory]:
        start = time.process_time()
        walker, inv = walker_for(layers)
        return time.process_time() - start, walker, inv

    cpu_plain, _, inv_plain = cpu([base, plain])
    cpu_bomb, walker, inv = cpu([base, bomb])
    assert inv.layers_read == 2 and not inv.skipped
    assert len([p for p in inv.packages if p.ecosystem == NPM]) == FILES  # nothing matched: all kept
    assert cpu_bomb < 4 * cpu_plain + 0.5, (cpu_bomb, cpu_plain)
    members = FILES + WHITEOUTS
    assert walker.work < 20 * members, (walker.work, members)


def test_a_whiteout_removes_through_the_index() -> None:
    layer2 = tar_bytes({"srv/app/node_modules/p7/.wh.package.json": b"", "srv/app/node_modules/.wh.p8": b""})
    layer3 = tar_bytes(
        {"srv/app/node_modules/.wh..wh..opq": b"", "srv/app/node_modules/p9/package.json": b'{"name":"p9","version":"2"}'}
    )
    _, inv = walker_for([npm_layer(20), layer2])
    names = {p.name for p in inv.packages}
    assert len(names) == 18 and not {"p7", "p8"} & names
    _, inv = walker_for([npm_layer(20), layer2, layer3])
    assert [(p.name, p.version) for p in inv.packages] == [("p9", "2")]  # the opaque dir spares its own layer


def test_time_budget_covers_whiteouts_and_is_recorded() -> None:
    """A clock that advances one tick per look: the image's budget runs out inside the whiteout
    layer, which is then skipped with the reason (and rolled back), and later layers are not read."""
    ticks = iter(range(10**9))
    limits = Limits(max_seconds=(FILES + WHITEOUTS) // 2)
    walker, inv = walker_for(
        [npm_layer(FILES), whiteout_layer(WHITEOUTS), npm_layer(3)], limits, clock=lambda: float(next(ticks))
    )
    reasons = [s["reason"] for s in inv.skipped]
    assert len(reasons) == 2 and all("time budget" in r for r in reasons), reasons
    assert "layer not read" in reasons[1]
    assert inv.layers_read == 1 and len(inv.packages) == FILES


def test_a_hostile_layer_changes_nothing_even_after_its_whiteouts() -> None:
    """The opaque whiteout is applied as the layer streams; the layer then turns out truncated, and
    every removal is rolled back."""
    hostile = tar_bytes({"srv/app/node_modules/.wh..wh..opq": b"", "big": b"x" * 100_000})[:60_000]
    status = b"".join(b"Package: p%d\nStatus: install ok installed\nVersion: 1\n\n" % i for i in range(20_000))
    cut_in_a_database = tar_bytes({"srv/app/node_modules/.wh..wh..opq": b"", "var/lib/dpkg/status": status})[: len(status) // 2]
    for bad in (hostile, cut_in_a_database):
        walker, inv = walker_for([npm_layer(50), bad])
        assert len(inv.packages) == 50 and inv.layers_read == 1
        assert "layer skipped" in inv.skipped[0]["reason"]
        assert walker.kept == sum(e.cost for e in walker.files.values())  # nothing of the bad layer stays charged


def test_what_an_image_keeps_is_bounded_and_the_cut_recorded() -> None:
    """The per-image byte budget: a dpkg status of 5,000 packages is cut where the budget ends."""
    status = b"".join(
        b"Package: pkg%d\nStatus: install ok installed\nVersion: 1.%d\nDescription: x\n long text\n\n" % (i, i)
        for i in range(5000)
    )
    cap = 256 * 1024
    walker, inv = walker_for([gz(tar_bytes({"var/lib/dpkg/status": status}))], Limits(max_image_bytes=cap))
    assert 0 < len(inv.packages) < 5000
    assert walker.kept <= cap and inv.kept_bytes == walker.kept
    assert "cut after" in inv.skipped[0]["reason"] and "memory budget" in inv.skipped[0]["reason"]
    # and further metadata files are passed over, not held
    walker, inv = walker_for([gz(tar_bytes({"var/lib/dpkg/status": status})), npm_layer(3)], Limits(max_image_bytes=cap))
    assert not [p for p in inv.packages if p.ecosystem == NPM]
    assert sum("memory budget" in s["reason"] for s in inv.skipped) == 4


def test_json_files_over_the_buffered_limit_are_passed_over_unread() -> None:
    """The bomb's shape, small: package.json files of spaces over the per-file limit."""
    spaces = b" " * (2 << 20)
    layer = gz(tar_bytes({f"srv/node_modules/b{i}/package.json": spaces for i in range(5)}))
    walker, inv = walker_for([layer])
    assert not inv.packages and len(inv.skipped) == 5
    assert all("parsed whole" in s["reason"] for s in inv.skipped)
    assert walker.kept == 0


def test_dpkg_status_is_streamed_with_bounded_lines() -> None:
    """A status file with a 20 MiB line parses like one without it, and no line is held whole."""
    status = (
        b"Package: a\nStatus: install ok installed\nVersion: 1\nDescription: " + b"y" * (20 << 20) + b"\n\n"
        b"Package: b\nStatus: deinstall ok config-files\nVersion: 2\n\n"
        b"Package: c\nStatus: install ok installed\nVersion: 3\nSource: csrc (3a)\n"
    )
    chunks = [status[i : i + (1 << 16)] for i in range(0, len(status), 1 << 16)]
    assert max(len(line) for line in iter_lines(chunks)) <= 64 * 1024
    pkgs = parse_dpkg_status(status)
    assert [(p.name, p.version, p.source, p.source_version, p.ecosystem) for p in pkgs] == [
        ("a", "1", "a", "1", DEBIAN),
        ("c", "3", "csrc", "3a", DEBIAN),
    ]
    _, inv = walker_for([gz(tar_bytes({"var/lib/dpkg/status": status}))])
    assert [p.name for p in inv.packages] == ["a", "c"]


def test_a_huge_pax_header_is_refused_not_read() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("lib/apk/db/installed")
        info.pax_headers = {"comment": "z" * (2 << 20)}
        info.size = 0
        tar.addfile(info, io.BytesIO(b""))
    _, inv = walker_for([buf.getvalue()])
    assert inv.layers_read == 0 and "pax header" in inv.skipped[0]["reason"]


# ------------------------------------------------------------------------------ fairness
def test_fair_queue_serves_namespaces_in_turn() -> None:
    """User A queues 50 scans, then user B one: B's comes second, not 51st."""
    q = FairQueue(1000)
    for i in range(50):
        q.put_nowait((f"alice/app{i}", f"sha256:{i:064x}"))
    q.put_nowait(("bob/app", "sha256:" + "b" * 64))
    q.put_nowait(("alice/app0", f"sha256:{0:064x}"))  # already waiting: not queued twice
    order = [q.get_nowait()[0] for _ in range(q.qsize())]
    assert len(order) == 51 and order.index("bob/app") <= 1, order[:5]


def test_fair_queue_full_keeps_room_for_others() -> None:
    q = FairQueue(10)
    for i in range(10):
        assert q.put_nowait((f"alice/app{i}", f"sha256:{i:064x}")) is None
    with pytest.raises(asyncio.QueueFull):
        q.put_nowait(("alice/more", "sha256:" + "c" * 64))
    dropped = q.put_nowait(("bob/app", "sha256:" + "b" * 64))
    assert dropped == ("alice/app9", f"sha256:{9:064x}")
    assert [q.get_nowait()[0] for _ in range(2)] == ["alice/app0", "bob/app"]


def test_process_byte_budget_waits_in_turn_and_times_out() -> None:
    async def main() -> None:
        budget = ByteBudget(100)
        assert await budget.acquire(80, "alice", 1)
        granted: list[str] = []

        async def take(key: str, n: int) -> None:
            if await budget.acquire(n, key, 30):
                granted.append(key)

        tasks = [asyncio.create_task(take("alice", 50)) for _ in range(3)] + [asyncio.create_task(take("bob", 50))]
        await asyncio.sleep(0.05)
        assert not granted and budget.used == 80
        assert not await budget.acquire(50, "carol", 0.05)  # cut: the scan records the reason
        budget.release(80)
        await asyncio.sleep(0.05)
        assert granted == ["alice", "bob"]  # alice's first, then bob's before alice's others
        budget.release(50)
        budget.release(50)
        await asyncio.sleep(0.05)
        assert granted == ["alice", "bob", "alice", "alice"] and budget.used == 100
        await asyncio.gather(*tasks)

    asyncio.run(main())


def test_reasons_are_listed_up_to_a_bound_then_counted() -> None:
    """5,000 symlinks named package.json: 1,000 reasons listed, the rest counted in one line."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(5000):
            info = tarfile.TarInfo(f"srv/node_modules/l{i}/package.json")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    _, inv = walker_for([buf.getvalue()])
    assert len(inv.skipped) == 1001
    assert inv.skipped[-1]["reason"] == "4000 more entries passed over (not listed)"


def _rpm_header(name: bytes, version: bytes) -> bytes:
    import struct

    data, entries = b"", []
    for tag, value in ((1000, name), (1001, version), (1002, b"1.el9"), (1022, b"x86_64")):
        entries.append(struct.pack(">iiii", tag, 6, len(data), 1))
        data += value + b"\0"
    return struct.pack(">II", len(entries), len(data)) + b"".join(entries) + data


def _sqlite_file(tmp_path: Path, sql: str, rows: tuple[bytes, ...] = ()) -> bytes:
    import sqlite3

    db = tmp_path / f"rpmdb-{len(list(tmp_path.iterdir()))}.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(sql)
    if rows:
        conn.executemany("INSERT INTO Packages (blob) VALUES (?)", [(r,) for r in rows])
    conn.commit()
    conn.close()
    return db.read_bytes()


def test_rpmdb_is_read_from_disk_and_a_hostile_one_is_bounded(tmp_path: Path) -> None:
    good = _sqlite_file(tmp_path, "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB);", (_rpm_header(b"bash", b"5.1"),))
    hostile = _sqlite_file(
        tmp_path,
        "CREATE VIEW Packages AS WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT NULL AS blob FROM r;",
    )
    _, inv = walker_for(
        [tar_bytes({"var/lib/rpm/rpmdb.sqlite": good}), tar_bytes({"usr/lib/sysimage/rpm/rpmdb.sqlite": hostile})]
    )
    assert [(p.name, p.version) for p in inv.packages] == [("bash", "5.1-1.el9")]
    assert "SQLite steps" in inv.skipped[0]["reason"], inv.skipped


def test_buffered_limit_is_exact() -> None:
    """A package.json of exactly ``max_buffered_bytes`` is parsed; one byte more is passed over."""
    doc = b'{"name":"edge","version":"1.0.0"}'
    at, over = doc.ljust(1000), doc.ljust(1001)
    for data, parsed in ((at, True), (over, False)):
        _, inv = walker_for([tar_bytes({"srv/node_modules/edge/package.json": data})], Limits(max_buffered_bytes=1000))
        assert bool(inv.packages) is parsed and bool(inv.skipped) is not parsed, (len(data), inv.skipped)
