"""Started as root with ``MOORAGE_RUN_AS`` (the container image): Moorage's own files are given
to that user, nothing else is, and root is dropped for good (moorage/privileges.py).

Runs as root (the image's case); the end-to-end check with the image, a root-owned registry:2
volume and the serving process's ids is tests/test_image.py.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from moorage.config_load import load_settings
from moorage.privileges import ENV, NOTES, PrivilegeError, Target, drop, prepare, target_from_env

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root"),
]

USER = Target(10001, 10001)


def _owner(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def _registry2_volume(tmp_path: Path) -> Path:
    """A root-owned data directory as registry:2 leaves it, plus what an earlier Moorage run as
    root made (storage/ with a blob hard-linked from registry:2's tree), and a planted link."""
    vol = tmp_path / "vol"
    blobs = vol / "docker/registry/v2/blobs/sha256/ab/abcd"
    blobs.mkdir(parents=True)
    (vol / "docker/registry/v2/repositories").mkdir()
    (blobs / "data").write_bytes(b"layer")
    vol.chmod(0o755)
    stored = vol / "storage/blobs/sha256/ab"
    stored.mkdir(parents=True)
    os.link(blobs / "data", stored / "abcd")  # an import run as root linked it
    (stored / "efgh").write_bytes(b"copied")
    (vol / "storage/evil").symlink_to("/etc/passwd")  # never followed
    (vol / "moorage.db").write_bytes(b"")
    (vol / "moorage.db-wal").write_bytes(b"")
    (vol / "unrelated").write_bytes(b"not Moorage's")
    return vol


def test_prepare_gives_only_moorages_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vol = _registry2_volume(tmp_path)
    monkeypatch.delenv("MOORAGE_CONFIG", raising=False)
    settings = load_settings(None, data=str(vol))
    passwd = os.lstat("/etc/passwd")
    NOTES.clear()
    prepare(settings, USER)

    assert _owner(vol) == (10001, 10001) and stat.S_IMODE(vol.stat().st_mode) == 0o755  # owner, not mode
    for path in (
        "storage",
        "storage/blobs/sha256/ab",
        "storage/blobs/sha256/ab/efgh",
        "moorage.db",
        "moorage.db-wal",
    ):
        assert _owner(vol / path) == (10001, 10001), path
    # registry:2's tree, the blob linked from it, the planted link and its target, a stranger: unchanged
    for path in (
        "docker",
        "docker/registry/v2/blobs/sha256/ab/abcd/data",
        "storage/blobs/sha256/ab/abcd",
        "storage/evil",
        "unrelated",
    ):
        assert _owner(vol / path) == (0, 0), path
    assert (os.lstat("/etc/passwd").st_uid, os.lstat("/etc/passwd").st_mode) == (passwd.st_uid, passwd.st_mode)
    assert any("several hard links" in n for _, n in NOTES), NOTES

    NOTES.clear()
    prepare(settings, USER)  # a second start: nothing to do, nothing said
    assert NOTES == []


def test_prepare_creates_a_missing_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOORAGE_CONFIG", raising=False)
    data = tmp_path / "new" / "data"
    prepare(load_settings(None, data=str(data)), USER)
    assert _owner(data) == (10001, 10001) and stat.S_IMODE(data.stat().st_mode) == 0o700
    assert _owner(data.parent) == (0, 0)


def test_prepare_does_not_enter_a_registry2_tree_in_the_blob_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """storage.filesystem.root pointed at a registry:2 volume by mistake: its docker/ stays root's."""
    vol = _registry2_volume(tmp_path)
    monkeypatch.delenv("MOORAGE_CONFIG", raising=False)
    monkeypatch.setenv("MOORAGE_STORAGE__FILESYSTEM__ROOT", str(vol))
    prepare(load_settings(None, data=str(tmp_path / "data")), USER)
    assert _owner(vol) == (10001, 10001)
    assert _owner(vol / "docker") == (0, 0)
    assert _owner(vol / "docker/registry/v2/blobs/sha256/ab/abcd/data") == (0, 0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", None), ("0", None), ("root", None), ("10001", Target(10001, 10001)), ("10001:10002", Target(10001, 10002))],
)
def test_target_from_env(value: str, expected: Target | None) -> None:
    assert target_from_env({ENV: value}) == expected


@pytest.mark.parametrize("value", ["moorage", "10001:", "-1", "1:2:3", "99999999999", "4294967295", "0:5"])
def test_target_from_env_refuses(value: str) -> None:
    with pytest.raises(PrivilegeError):
        target_from_env({ENV: value})


def test_drop_is_for_good() -> None:
    """In a child: ids, groups and no way back to root."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            drop(Target(10001, 10002))
            try:
                os.setuid(0)
                regained = "yes"
            except PermissionError:
                regained = "no"
            report = f"{os.getresuid()} {os.getresgid()} {os.getgroups()} {regained}"
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            report = repr(exc)
        os.write(write_fd, report.encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        report = pipe.read().decode()
    os.waitpid(pid, 0)
    assert report == "(10001, 10001, 10001) (10002, 10002, 10002) [] no", report


def test_a_place_that_cannot_be_changed_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An immutable data directory (as a read-only mount or NFS with root squashed): noted as a
    warning, the rest is still prepared, and the command goes on (its own checks then speak)."""
    import logging
    import subprocess

    vol = _registry2_volume(tmp_path)
    if subprocess.run(["chattr", "+i", str(vol)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        monkeypatch.delenv("MOORAGE_CONFIG", raising=False)
        NOTES.clear()
        prepare(load_settings(None, data=str(vol)), USER)
    finally:
        subprocess.run(["chattr", "-i", str(vol)], check=True)
    assert (logging.WARNING, f"could not give {vol} to uid 10001: Operation not permitted") in NOTES, NOTES
    assert _owner(vol) == (0, 0) and _owner(vol / "storage") == (10001, 10001)
