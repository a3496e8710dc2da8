"""Retention policies, immutable tags and quotas, managed with the CLI against a live server."""

from __future__ import annotations

import time

import requests

from tests.gc_push import (
    blob_bytes,
    gc,
    make_image,
    pull_image,
    push_blob,
    push_image,
    push_manifest,
    sha,
    stored,
    sub_cli,
)
from tests.support.refusal import assert_refused


# ------------------------------------------------------------------------------ retention
def test_retention_keep_last_and_regex(fresh_moorage):
    url = fresh_moorage.url
    images = {}
    for tag in ("release-1", "b1", "b2", "b3", "b4"):
        images[tag] = make_image(f"ret-{tag}", [blob_bytes("ret-base")], unique=1)
        push_image(url, "ret/app", tag, images[tag])
        time.sleep(0.01)  # distinct push times
    other = make_image("ret-other", unique=1)
    push_image(url, "elsewhere/app", "b0", other)

    sub_cli(fresh_moorage, "retention", "set", "ret", "--keep-last", "2", "--keep-regex", "release-.*")
    assert "keep last 2" in sub_cli(fresh_moorage, "retention", "list").stdout
    dry = sub_cli(fresh_moorage, "retention", "apply", "--dry-run").stdout
    assert "would remove ret/app:b1" in dry and "would remove ret/app:b2" in dry
    assert "b3" not in dry and "b4" not in dry and "release-1" not in dry and "elsewhere" not in dry
    assert requests.get(f"{url}/v2/ret/app/tags/list").json()["tags"] == ["b1", "b2", "b3", "b4", "release-1"]

    summary = gc(fresh_moorage, "--grace", "0", "--delete-untagged")
    assert summary["tags_removed"] == 2 and summary["manifests_removed"] == 2
    assert requests.get(f"{url}/v2/ret/app/tags/list").json()["tags"] == ["b3", "b4", "release-1"]
    for tag in ("release-1", "b3", "b4"):
        pull_image(url, "ret/app", tag, images[tag])
    pull_image(url, "elsewhere/app", "b0", other)
    gone = [sha(images[t].layers[1]) for t in ("b1", "b2")]
    assert not any(stored(fresh_moorage, gone).values())
    assert stored(fresh_moorage, [sha(blob_bytes("ret-base"))])[sha(blob_bytes("ret-base"))]

    sub_cli(fresh_moorage, "retention", "rm", "ret")
    assert "no retention policies" in sub_cli(fresh_moorage, "retention", "list").stdout
    assert_refused(sub_cli(fresh_moorage, "retention", "rm", "ret", check=False), "no retention policy for 'ret'")


def test_retention_expire_days_and_apply(fresh_moorage):
    url = fresh_moorage.url
    for tag in ("old1", "old2", "keep-me"):
        push_image(url, "exp/app", tag, make_image(f"exp-{tag}", unique=1))
    # 0 days: everything pushed before now is expired, except what the regex keeps
    sub_cli(fresh_moorage, "retention", "set", "exp/*", "--expire-days", "0", "--keep-regex", "keep-.*")
    # and a policy that keeps everything younger than a year: tags go only if *every* policy agrees
    sub_cli(fresh_moorage, "retention", "set", "exp/app", "--expire-days", "365")
    assert "0 tag(s) would be removed" in sub_cli(fresh_moorage, "retention", "apply", "--dry-run").stdout
    sub_cli(fresh_moorage, "retention", "rm", "exp/app")
    out = sub_cli(fresh_moorage, "retention", "apply").stdout
    assert "removed exp/app:old1" in out and "removed exp/app:old2" in out
    assert requests.get(f"{url}/v2/exp/app/tags/list").json()["tags"] == ["keep-me"]
    # a policy needs a rule; a bad regex is refused
    assert_refused(
        sub_cli(fresh_moorage, "retention", "set", "x", check=False),
        "needs at least one of --keep-last, --keep-regex, --expire-days",
    )
    assert_refused(
        sub_cli(fresh_moorage, "retention", "set", "x", "--keep-regex", "(", check=False), "invalid regular expression '('"
    )


def test_retention_plan_unit():
    from moorage.gc.retention import RetentionPolicy, TagInfo, plan

    now = 1_000_000.0
    tags = [TagInfo(1, "a/b", f"t{i}", i, now - i * 86400) for i in range(6)]  # t0 newest
    names = lambda ps: sorted(t.name for t in plan(ps, tags, now))  # noqa: E731
    assert names([RetentionPolicy("a/b", keep_last=4)]) == ["t4", "t5"]
    assert names([RetentionPolicy("a/*", expire_days=2.5)]) == ["t3", "t4", "t5"]
    assert names([RetentionPolicy("a", keep_last=4, expire_days=2.5)]) == ["t4", "t5"]
    assert names([RetentionPolicy("a", keep_regex="t[0-4]")]) == ["t5"]
    assert names([RetentionPolicy("other", keep_last=0)]) == []
    assert names([RetentionPolicy("*", keep_last=1), RetentionPolicy("a/b", keep_last=3)]) == ["t3", "t4", "t5"]


# ------------------------------------------------------------------------------ immutable
def test_immutable_tags(fresh_moorage):
    url = fresh_moorage.url
    sub_cli(fresh_moorage, "immutable", "set", "imm/*", r"v\d+(\.\d+)*")
    assert "imm/*" in sub_cli(fresh_moorage, "immutable", "list").stdout
    one, two = make_image("imm-1", unique=1), make_image("imm-2", unique=1)
    push_image(url, "imm/app", "v1", one)
    push_image(url, "imm/app", "latest", one)
    # the identical manifest again: fine
    push_image(url, "imm/app", "v1", one)
    # moving it: DENIED, with a clear message
    for b in two.blobs:
        push_blob(url, "imm/app", b)
    r = push_manifest(url, "imm/app", "v1", two.manifest)
    assert r.status_code == 403, r.text
    err = r.json()["errors"][0]
    assert err["code"] == "DENIED" and "immutable" in err["message"] and one.digest in err["message"]
    pull_image(url, "imm/app", "v1", one)
    # tags not matching the regex, and other repositories, can move
    push_image(url, "imm/app", "latest", two)
    push_image(url, "imm/app", "v1-rc", two)
    push_image(url, "free/app", "v1", one)
    push_image(url, "free/app", "v1", two)
    # deleting the tag and pushing it anew is an explicit act: allowed
    assert requests.delete(f"{url}/v2/imm/app/manifests/v1").status_code == 202
    push_image(url, "imm/app", "v1", two)
    # rule removed: moves are allowed again
    sub_cli(fresh_moorage, "immutable", "rm", "imm/*")
    push_image(url, "imm/app", "v1", one)
    assert "no immutable-tag rules" in sub_cli(fresh_moorage, "immutable", "list").stdout


# --------------------------------------------------------------------------------- quotas
def _denied(r: requests.Response, limit: int) -> None:
    assert r.status_code == 403, (r.status_code, r.text)
    err = r.json()["errors"][0]
    assert err["code"] == "DENIED" and str(limit) in err["message"] and "quota" in err["message"]


def test_quota_refuses_pushes_over_the_limit(fresh_moorage):
    url = fresh_moorage.url
    limit = 20_000
    sub_cli(fresh_moorage, "quota", "set", "q", str(limit))
    a, b, c = blob_bytes("q-a", 8000), blob_bytes("q-b", 8000), blob_bytes("q-c", 8000)
    push_blob(url, "q/one", a)
    push_blob(url, "q/two", b)
    assert "16000/20000" in sub_cli(fresh_moorage, "quota", "list").stdout

    # monolithic POST with Content-Length: refused before a byte is stored
    r = requests.post(f"{url}/v2/q/one/blobs/uploads/", params={"digest": sha(c)}, data=c)
    _denied(r, limit)
    assert not stored(fresh_moorage, [sha(c)])[sha(c)]
    # a blob already in the namespace costs nothing
    push_blob(url, "q/three", a)
    # chunked: the PATCH that would cross the limit is refused
    r = requests.post(f"{url}/v2/q/one/blobs/uploads/")
    assert r.status_code == 202
    loc = url + r.headers["Location"]
    r = requests.patch(loc, data=c[:3000], headers={"Content-Range": "0-2999", "Content-Type": "application/octet-stream"})
    assert r.status_code == 202
    r = requests.patch(
        loc, data=c[3000:], headers={"Content-Range": f"3000-{len(c) - 1}", "Content-Type": "application/octet-stream"}
    )
    _denied(r, limit)
    # ... and so is completing an upload whose size only shows at the end
    r = requests.put(loc, params={"digest": sha(c[:3000])})
    assert r.status_code == 201  # 3000 bytes fit
    r = requests.post(f"{url}/v2/q/one/blobs/uploads/")
    loc = url + r.headers["Location"]
    r = requests.put(loc, params={"digest": sha(c)}, data=c)
    _denied(r, limit)

    # a monolithic POST without Content-Length (chunked): refused at completion, nothing kept
    def chunked():
        yield c[:4000]
        yield c[4000:]

    r = requests.post(f"{url}/v2/q/one/blobs/uploads/", params={"digest": sha(c)}, data=chunked())
    _denied(r, limit)
    assert not stored(fresh_moorage, [sha(c)])[sha(c)]
    # a mount from outside the namespace counts too
    outside = blob_bytes("q-outside", 5000)
    push_blob(url, "elsewhere/x", outside)
    r = requests.post(f"{url}/v2/q/one/blobs/uploads/", params={"mount": sha(outside), "from": "elsewhere/x"})
    _denied(r, limit)
    # other namespaces are not limited
    push_blob(url, "qq/one", c)
    # a manifest referencing blobs already counted is fine
    img = make_image("q-img", unique=0)
    img.layers.append(a)
    img.__post_init__()
    push_image(url, "q/one", "t", img)
    # raising the quota lets the push through
    sub_cli(fresh_moorage, "quota", "set", "q", "1M")
    push_blob(url, "q/one", c)
    sub_cli(fresh_moorage, "quota", "rm", "q")
    assert "no quotas" in sub_cli(fresh_moorage, "quota", "list").stdout
    assert_refused(sub_cli(fresh_moorage, "quota", "set", "q", "lots", check=False), "not a size: 'lots'")


def test_size_parsing():
    from moorage.gc.patterns import parse_size, repo_matches

    assert parse_size("1024") == 1024 and parse_size("10M") == 10 << 20 and parse_size("1.5GiB") == int(1.5 * (1 << 30))
    assert parse_size("2kb") == 2048
    assert repo_matches("team", "team/app") and repo_matches("team", "team") and not repo_matches("team", "teamx/app")
    assert repo_matches("team/*", "team/a/b") and not repo_matches("team/*", "team")
    assert repo_matches("*", "x")
