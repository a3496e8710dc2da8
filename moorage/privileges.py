"""Started as root in the container image: prepare Moorage's own files for its user, then drop root.

Why: ``registry:2`` runs as root, so the volume it wrote (``/var/lib/registry``) is root's.  The
Moorage image serves as an unprivileged user (uid 10001) and could not create its database
there.  So the image starts as root with ``MOORAGE_RUN_AS=10001:10001``, and every ``moorage``
command, once its settings are read and before it touches the data, does two things here:

1. :func:`prepare`: gives uid 10001 what Moorage itself creates and writes -- the data
   directory itself (owner only, its mode is left as it is), ``moorage.db`` and its
   ``-wal``/``-shm``/lock files, ``storage/`` (or the configured blob store), ``auth/``,
   ``claims/`` -- creating the missing ones.  Nothing else is touched: registry:2's own tree
   (``docker/registry/v2``) keeps its owner, modes and bytes, so a rollback to ``registry:2``
   finds it as it was (the import only reads it).
2. :func:`drop`: ``setgroups([])``, ``setgid``, ``setuid`` to that user, checked (root cannot be
   regained).  The serving process, its workers and a ``docker exec registry moorage ...``
   (which runs as root too) then make files the server can manage.

Started as any other user (``docker run --user ...``, or outside a container), or with
``MOORAGE_RUN_AS`` unset, empty or ``0``: nothing happens here.

The walk that changes owners runs as root in a directory an unprivileged process could write to
before: it never follows a symbolic link (``os.fwalk`` checks each directory it enters is the
one it listed), changes a file only through a descriptor opened without following links, and
leaves alone any file with more than one hard link -- such a file may be registry:2's own (a
blob linked into ``storage/`` by an import that ran as root) or anything else on the
filesystem, and giving it away would change a file that is not Moorage's.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Settings

#: What :func:`prepare` changed and who this process became, for the log once it is set up
#: (settings are read, and this runs, before the command configures logging).
NOTES: list[tuple[int, str]] = []

#: The variable the image sets (``uid[:gid]``).
ENV = "MOORAGE_RUN_AS"
#: Directories in the data directory that are Moorage's (the blob store's default place,
#: the token signing key, the upload claims' lock files).
OWN_DIRS = ("storage", "auth", "claims")
#: A registry:2 tree inside a directory Moorage walks: never entered.
DISTRIBUTION = ("docker", "registry", "v2")


class PrivilegeError(RuntimeError):
    """``MOORAGE_RUN_AS`` is malformed, or the switch to that user did not take."""


@dataclass(frozen=True)
class Target:
    uid: int
    gid: int


def target_from_env(environ: dict[str, str] | os._Environ[str] = os.environ) -> Target | None:
    """The user to become (None: stay who we are).  ``uid`` or ``uid:gid``, numbers only (the
    image has no name service worth trusting with this), each in 1..2**31-1."""
    raw = environ.get(ENV, "").strip()
    if raw in ("", "0", "0:0", "root"):
        return None
    parts = raw.split(":")
    if len(parts) > 2 or not all(p.isdigit() and len(p) <= 10 for p in parts):
        raise PrivilegeError(f"{ENV}={raw!r}: expected UID or UID:GID (numbers)")
    uid = int(parts[0])
    gid = int(parts[1]) if len(parts) == 2 else uid
    if not (0 < uid < 2**31 and 0 < gid < 2**31):
        raise PrivilegeError(f"{ENV}={raw!r}: expected UID or UID:GID between 1 and 2147483647")
    return Target(uid, gid)


def drop_root(settings: Settings | None, *, prepare_data: bool = True) -> Target | None:
    """Prepare (unless ``prepare_data`` is false) and drop to ``MOORAGE_RUN_AS`` if we are root;
    returns the user now run as, or None when nothing was to be done."""
    if os.getuid() != 0 and os.geteuid() != 0:
        return None  # started as a user (docker run --user ...): honoured as it is
    target = target_from_env()
    if target is None:
        return None
    if settings is not None and prepare_data:
        prepare(settings, target)
    drop(target)
    NOTES.append((logging.INFO, f"started as root: running as uid {target.uid}, gid {target.gid} ({ENV})"))
    return target


def drop(target: Target) -> None:
    """Become ``target`` for good: supplementary groups, group, then user (in that order: once
    the uid is dropped, the others can no longer be changed)."""
    os.setgroups([])
    os.setgid(target.gid)
    os.setuid(target.uid)  # as root: sets the real, effective and saved ids
    if (
        os.getuid() != target.uid
        or os.geteuid() != target.uid
        or os.getgid() != target.gid
        or os.getgroups() not in ([], [target.gid])
    ):
        raise PrivilegeError(f"could not switch to uid {target.uid}, gid {target.gid}")
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise PrivilegeError("root could be regained after dropping privileges")
    home = _home_of(target.uid)
    if home and os.environ.get("HOME") in (None, "", "/root"):
        os.environ["HOME"] = home  # as if started as that user (~/.aws lookups and the like)


def _home_of(uid: int) -> str | None:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_dir
    except (KeyError, ImportError):
        return None


# -- preparing Moorage's own files -----------------------------------------------------------
def prepare(settings: Settings, target: Target) -> None:
    """Give ``target`` the data directory's Moorage parts (see the module doc); create the
    missing directories.  One note per place changed.  A place that cannot be changed (a
    read-only mount, NFS with root squashed) is a warning, not a stop: the command goes on as
    ``target``, and if that user cannot use the place either, the command's own check says so
    in one line."""
    data = settings.data
    _step(data, _make_dir if not data.exists() else _own_top, target)
    own = list(OWN_DIRS)
    if settings.storage.driver == "filesystem" and settings.storage.filesystem.root is not None:
        own.remove("storage")
        root = settings.storage.filesystem.root
        _step(root, _make_dir if not root.exists() else _own_tree, target)
    for name in own:
        _step(data / name, _own_tree, target)
    if settings.is_sqlite:
        db = _sqlite_path(settings)
        if db is not None:
            if not db.parent.exists():
                _step(db.parent, _make_dir, target)  # (an existing directory elsewhere stays its owner's)
            _step(db, lambda p, t: _own_files_named(p.parent, p.name, t), target)


def _step(path: Path, action: Callable[[Path, Target], None], target: Target) -> None:
    try:
        action(path, target)
    except OSError as exc:
        NOTES.append((logging.WARNING, f"could not give {path} to uid {target.uid}: {exc.strerror or exc}"))


def _sqlite_path(settings: Settings) -> Path | None:
    target = settings.database_url.split(":///", 1)[1].split("?", 1)[0]
    if target in ("", ":memory:") or target.startswith("file:"):
        return None
    return Path(target)


def _make_dir(path: Path, target: Target) -> None:
    """Create ``path`` (parents as root's, 0755 by the umask) private to ``target``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchown(fd, target.uid, target.gid)
    finally:
        os.close(fd)


def _own_top(path: Path, target: Target) -> None:
    """The data directory itself: its owner (not its mode: registry:2's volume keeps its 0755)."""
    st = os.stat(path)
    if (st.st_uid, st.st_gid) == (target.uid, target.gid):
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fchown(fd, target.uid, target.gid)
    finally:
        os.close(fd)
    NOTES.append(
        (logging.INFO, f"gave {path} (uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o} left as it is) to uid {target.uid}")
    )


def _own_files_named(directory: Path, name: str, target: Target) -> None:
    """``name`` and its companions (``name-wal``, ``name.leader`` ...) directly in ``directory``."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for entry in os.listdir(dfd):
            ours = entry == name or entry.startswith((name + "-", name + "."))
            if ours and _own_file(dfd, entry, target) == LINKED:
                NOTES.append((logging.INFO, f"left {directory / entry} as it is: it has more than one hard link"))
    finally:
        os.close(dfd)


#: :func:`_own_file`'s answers.
CHANGED, KEPT, LINKED = "changed", "kept", "linked"


def _own_file(dfd: int, name: str, target: Target) -> str:
    """One regular file with a single link, through a descriptor opened without following a
    link: CHANGED, LINKED (more than one hard link: left as it is) or KEPT (nothing to do)."""
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return KEPT
    if not stat.S_ISREG(st.st_mode) or (st.st_uid, st.st_gid) == (target.uid, target.gid):
        return KEPT
    if st.st_nlink != 1:
        return LINKED
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dfd)
    except OSError:
        return KEPT
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return KEPT
        if st.st_nlink != 1:
            return LINKED
        os.fchown(fd, target.uid, target.gid)
    finally:
        os.close(fd)
    return CHANGED


def _own_tree(top: Path, target: Target) -> None:
    """``top`` and everything below it (directories, single-link regular files) to ``target``,
    when ``top`` itself is not ``target``'s yet (a tree Moorage made as root: a ``--user 0``
    run, an earlier image).  Symbolic links are neither followed nor changed; a registry:2
    tree inside is not entered."""
    try:
        st = os.stat(top, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode):
        _own_files_named(top.parent, top.name, target)
        return
    if not stat.S_ISDIR(st.st_mode) or (st.st_uid, st.st_gid) == (target.uid, target.gid):
        return
    changed = linked = 0
    for dirpath, dirnames, filenames, dfd in os.fwalk(top, follow_symlinks=False):
        if "docker" in dirnames and (Path(dirpath).joinpath(*DISTRIBUTION)).is_dir():
            dirnames.remove("docker")  # a registry:2 tree is registry:2's
        dst = os.fstat(dfd)
        if (dst.st_uid, dst.st_gid) != (target.uid, target.gid):
            os.fchown(dfd, target.uid, target.gid)  # the very directory fwalk checked and entered
            changed += 1
        for name in filenames:
            outcome = _own_file(dfd, name, target)
            changed += outcome == CHANGED
            linked += outcome == LINKED
    NOTES.append(
        (
            logging.INFO,
            f"gave {top} to uid {target.uid} ({changed} entries were uid {st.st_uid}'s"
            + (f"; {linked} files with several hard links, such as registry:2's blobs, left as they are)" if linked else ")"),
        )
    )
