"""Pushes sharing layers while ``moorage gc --grace 0 --delete-untagged`` runs in a loop.

A soak test, not the proof: the GC-vs-manifest-PUT guarantee is proven deterministically in
tests/test_gc_race.py (pause hooks).  This one looks for what nobody thought of.  (It used to
include a skopeo client, which with grace 0 could be starved indefinitely -- every blob it
uploaded collected before its manifest PUT, legal with grace 0 -- and made the test flaky.)

Three raw-HTTP clients push tagged images that
share base layers, and push-then-delete throwaway images (garbage for the collector, sharing
the same layers).  Meanwhile the collector runs again and again as a separate process on the
live server's data.  With grace 0 a blob uploaded but not yet referenced may legally be
collected before the manifest PUT (the client then sees MANIFEST_BLOB_UNKNOWN and pushes it
again — what real clients do on retry); what must never happen is a manifest PUT that
*succeeds* and then misses a blob.  At the end every tagged image must pull byte-identical and
the index must match storage.  Bounded: the pushing phase stops after ~25 s (no
wall-clock assertion: on a loaded machine the whole test takes 60-90 s).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import requests

from tests.gc_push import (
    Image,
    blob_bytes,
    check,
    delete_ref,
    gc,
    make_image,
    pull_image,
    push_image,
    server_env,
    sha,
    stored,
)
from tests.support.registry_proc import REPO_ROOT

PUSH_SECONDS = 25.0
IMAGES_PER_CLIENT = 8
#: Seconds one back-to-back collector process runs.
LOOP_SECONDS = 2
#: Manifest PUT attempts per image: about 100 ms each, so a client outlasts a whole loop.
RETRIES = 100


def _gc_loop(proc, stop: threading.Event, runs: list[dict], errors: list[str]) -> None:
    env = server_env(proc)
    # One `moorage gc` process collecting back to back (--loop), restarted until the clients
    # are done; every second process is a plain single run, so startup/shutdown races too.
    # A back-to-back collector with grace 0 runs every ~15 ms on this small data set: it
    # takes a freshly uploaded blob before its manifest PUT nearly every time (legal with
    # grace 0), so a client can make progress only between loops.  The loops are short
    # (LOOP_SECONDS) and the clients retry for longer than one loop (RETRIES).
    n = 0
    while not stop.is_set():
        loop = ["--loop", str(LOOP_SECONDS)] if n % 2 == 0 else []
        n += 1
        argv = [
            sys.executable,
            "-m",
            "moorage.cli",
            "gc",
            "--data",
            str(proc.data_dir),
            "--grace",
            "0",
            "--delete-untagged",
            "--json",
            *loop,
        ]
        res = subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            errors.append(f"gc exited {res.returncode}: {res.stderr[-2000:]}")
            return
        if loop:
            runs.extend(json.loads(line) for line in res.stdout.splitlines() if line.strip())
        else:
            runs.append(json.loads(res.stdout))


def _http_client(
    url: str, n: int, base: list[bytes], deadline: float, pushed: list[tuple[str, str, Image]], errors: list[str]
) -> None:
    session = requests.Session()
    own = blob_bytes(f"client-{n}-shared", 8192)
    try:
        for j in range(IMAGES_PER_CLIENT):
            if time.monotonic() > deadline:
                break
            repo = f"stress/c{n}"
            img = make_image(f"c{n}-img{j}", [*base, own], unique=1, size=8192)
            push_image(url, repo, f"v{j}", img, session, tries=RETRIES)
            pushed.append((repo, f"v{j}", img))
            # garbage that shares every layer of the kept images
            junk = make_image(f"c{n}-junk{j}", [*base, own], unique=1, size=2048)
            push_image(url, repo, f"junk{j}", junk, session, tries=RETRIES)
            assert delete_ref(url, repo, f"junk{j}") == 202
            # and the same repository re-pushed in a second one (cross-repo sharing)
            if j % 3 == 0:
                push_image(url, f"stress/mirror{n}", f"v{j}", img, session, tries=RETRIES)
                pushed.append((f"stress/mirror{n}", f"v{j}", img))
    except Exception as exc:  # noqa: BLE001
        errors.append(f"client {n}: {exc!r}")


def test_pushes_while_gc_loops(fresh_moorage, tmp_path):
    url = fresh_moorage.url
    started = time.monotonic()
    base = [blob_bytes(f"stress-base-{i}", 16384) for i in range(3)]
    deadline = time.monotonic() + PUSH_SECONDS
    pushed: list[tuple[str, str, Image]] = []
    errors: list[str] = []
    stop = threading.Event()
    runs: list[dict] = []
    gc_thread = threading.Thread(target=_gc_loop, args=(fresh_moorage, stop, runs, errors), daemon=True)
    gc_thread.start()
    clients = [
        threading.Thread(target=_http_client, args=(url, n, base, deadline, pushed, errors), daemon=True) for n in range(3)
    ]
    for c in clients:
        c.start()
    for c in clients:
        c.join(timeout=max(1.0, deadline + 20 - time.monotonic()))
    stop.set()
    gc_thread.join(timeout=60)
    assert not errors, errors
    assert not any(c.is_alive() for c in clients), "a client hung"
    assert len(runs) >= 2, f"the collector ran only {len(runs)} time(s) during the pushes"
    assert sum(r["blobs_removed"] for r in runs) > 0, "the collector never collected anything"
    assert len(pushed) >= 6

    for repo, tag, img in pushed:
        pull_image(url, repo, tag, img)
    assert check(fresh_moorage) == []
    # one more collection when everything is quiet: still nothing tagged is lost
    final = gc(fresh_moorage, "--grace", "0", "--delete-untagged")
    for repo, tag, img in pushed:
        pull_image(url, repo, tag, img)
    assert check(fresh_moorage) == []
    kept = {sha(b) for _, _, img in pushed for b in img.blobs}
    assert all(stored(fresh_moorage, sorted(kept)).values())
    print(
        f"\nstress: {len(pushed)} images, {len(runs)} gc runs "
        f"({sum(r['blobs_removed'] for r in runs)} blobs, {sum(r['manifests_removed'] for r in runs)} manifests removed "
        f"concurrently, {sum(r['skipped_concurrent'] for r in runs)} candidates saved by the re-check), "
        f"final run {final}, {time.monotonic() - started:.1f}s"
    )
