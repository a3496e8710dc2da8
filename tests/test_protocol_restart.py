"""Durability: uploads resume after a restart; a kill -9 mid-upload leaves no visible partial blob."""

from __future__ import annotations

import os
import signal
import threading
import time

from tests.support.http import Client, sha256


def test_upload_resumes_after_restart(fresh_moorage) -> None:  # noqa: ANN001
    c = Client(fresh_moorage.url)
    data = os.urandom(3_000_000)
    loc = c.req("POST", "/v2/resume/app/blobs/uploads/").headers["Location"]
    r = c.req("PATCH", loc, data=data[:1_000_000], headers={"Content-Range": "0-999999"})
    assert r.status_code == 202
    fresh_moorage.stop()
    fresh_moorage.start()  # new process (new port), same data
    c = Client(fresh_moorage.url)
    st = c.req("GET", loc)
    assert st.status_code == 204 and st.headers["Range"] == "0-999999"
    # the new process has no in-memory hash state: it must re-hash what storage holds
    r = c.req("PATCH", loc, data=data[1_000_000:], headers={"Content-Range": f"1000000-{len(data) - 1}"})
    assert r.status_code == 202
    r = c.req("PUT", loc, params={"digest": sha256(data)})
    assert r.status_code == 201, r.text
    assert c.req("GET", f"/v2/resume/app/blobs/{sha256(data)}").content == data


def test_kill_during_upload_leaves_no_blob(fresh_moorage) -> None:  # noqa: ANN001
    c = Client(fresh_moorage.url)
    data = os.urandom(8 << 20)
    digest = sha256(data)
    loc = c.req("POST", "/v2/crash/app/blobs/uploads/").headers["Location"]
    sent = threading.Event()

    def slow_body():  # noqa: ANN202
        for i in range(0, len(data), 1 << 20):
            yield data[i : i + (1 << 20)]
            if i >= 2 << 20:
                sent.set()
                time.sleep(0.5)

    def patch() -> None:
        try:
            c.req("PUT", loc, params={"digest": digest}, data=slow_body(), timeout=30)
        except Exception:  # the server dies under us: expected
            pass

    t = threading.Thread(target=patch)
    t.start()
    assert sent.wait(30)
    os.kill(fresh_moorage.proc.pid, signal.SIGKILL)
    t.join(30)
    fresh_moorage.proc.wait(10)
    fresh_moorage.start()
    c = Client(fresh_moorage.url)
    assert c.req("HEAD", f"/v2/crash/app/blobs/{digest}").status_code == 404
    if fresh_moorage.backend == "fs-sqlite":
        blob_file = fresh_moorage.data_dir / "storage" / "blobs" / "sha256" / digest[7:9] / digest[7:]
        assert not blob_file.exists()
    # the session is still there and consistent: it restarts from what was recorded
    st = c.req("GET", loc)
    assert st.status_code == 204
    end = int(st.headers["Range"].split("-")[1])
    offset = 0 if end == 0 else end + 1
    r = c.req("PATCH", loc, data=data[offset:], headers={"Content-Range": f"{offset}-{len(data) - 1}"})
    assert r.status_code == 202, r.text
    r = c.req("PUT", loc, params={"digest": digest})
    assert r.status_code == 201, r.text
    assert c.req("GET", f"/v2/crash/app/blobs/{digest}").content == data
