"""One line per audit entry, for people: what the ``moorage audit`` table, the API's
``summary`` field and the web UI's audit page show.

The entry's columns say who and when; this says *what*, from the entry's ``detail``: the tag of a
push (``alpine:3.20`` rather than three identical ``alpine`` rows), whose access token was made
or revoked, what a garbage collection removed.  Rendering only: it never invents a fact the
entry does not hold (an entry without a tag shows the digest).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Longest summary (the CLI table and the UI cut nothing shorter than this themselves).
MAX_SUMMARY = 300


def _short(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else digest[:24]


def _size(n: Any) -> str:
    if not isinstance(n, int) or isinstance(n, bool):
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def _tag_of(detail: Mapping[str, Any]) -> str | None:
    """The tag an entry names: ``detail.tag``, or the first of ``detail.tags``."""
    tag = detail.get("tag")
    if isinstance(tag, str) and tag:
        return tag
    tags = detail.get("tags")
    if isinstance(tags, list) and tags and all(isinstance(t, str) for t in tags):
        return ",".join(tags[:5]) + ("…" if len(tags) > 5 else "")
    return None


def _registry(e: Mapping[str, Any], detail: Mapping[str, Any]) -> str:
    repo = e.get("repository") or "?"
    tag = _tag_of(detail)
    digest = detail.get("digest") if isinstance(detail.get("digest"), str) else None
    target = e.get("target") if isinstance(e.get("target"), str) else None
    if digest is None and target and target.startswith(("sha256:", "sha512:")):
        digest = target
    kind = detail.get("kind")
    noun = "blob " if kind == "blob" else ""
    if tag and digest:
        return f"{noun}{repo}:{tag} ({_short(digest)})"
    if tag:
        return f"{noun}{repo}:{tag}"
    if digest:
        return f"{noun}{repo}@{_short(digest)}"
    return f"{noun}{repo}"


def _token(e: Mapping[str, Any], detail: Mapping[str, Any]) -> str:
    tid = e.get("target") or "?"
    owner = detail.get("user")
    name = detail.get("name")
    text = f"token {tid}"
    if isinstance(name, str) and name:
        text += f" ({name})"
    if isinstance(owner, str) and owner:
        text += f" of {owner}"
    revoked = detail.get("revoked")
    if isinstance(revoked, int) and revoked > 1:
        text += f", with {revoked - 1} token(s) made with it"
    return text


def _gc(detail: Mapping[str, Any]) -> str:
    dry = bool(detail.get("dry_run"))
    verb = "would remove" if dry else "removed"
    parts = [
        f"{detail.get('tags_removed', 0)} tag(s)",
        f"{detail.get('manifests_removed', 0)} manifest(s)",
        f"{detail.get('blobs_removed', 0)} blob(s), {_size(detail.get('bytes_removed', 0))}",
    ]
    text = ("GC dry run: " if dry else "GC: ") + verb + " " + ", ".join(parts)
    if detail.get("delete_untagged"):
        text += " (untagged manifests too)"
    return text


def summary(e: Mapping[str, Any]) -> str:
    """What the entry ``e`` (a row of the audit log) records, in one line."""
    raw = e.get("detail")
    detail: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    action = str(e.get("action") or "")
    target = e.get("target")
    if action in ("push", "pull", "delete", "tag", "untag"):
        text = _registry(e, detail)
    elif action.startswith("token."):
        text = _token(e, detail)
    elif action == "gc.run":
        text = _gc(detail)
    elif action.startswith("webhook."):
        text = f"webhook {target or '?'}"
        if action == "webhook.retry" and detail.get("delivery") is not None:
            text += f", delivery {detail['delivery']}"
        if isinstance(detail.get("url"), str):
            text += f" -> {detail['url']}"
    elif action.startswith("grant."):
        text = f"{detail.get('user', '?')} on {target or '?'}"
        if isinstance(detail.get("actions"), list):
            text += ": " + ",".join(str(a) for a in detail["actions"])
    elif action.startswith("login"):
        text = str(detail.get("reason") or "")
    else:
        text = str(target or e.get("repository") or "")
    if e.get("outcome") == "denied":
        reason = detail.get("reason")
        text = (text + " " if text and text != reason else "") + f"[denied: {reason or 'not allowed'}]"
    return text[:MAX_SUMMARY]
