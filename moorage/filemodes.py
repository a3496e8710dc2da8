"""Owner-only modes for the files that hold secrets: the data directory (0700), the SQLite
database with its ``-wal``/``-shm`` (0600) and the token signing key (0600).

The database holds the ES256 signing key and the bcrypt hashes, so anyone who can read it can
mint admin tokens.  New files are created with these modes (never "created, then chmod-ed":
there is no window in which they are readable); SQLite gives ``-wal``/``-shm`` the database
file's own mode, which is why the database file is made here, empty, before SQLite opens it.

Existing installs are *tightened*, not refused: before this, every data directory was 0755
with a 0644 database, so refusing would stop every upgraded server, and only warning would
leave the key readable.  The files are the registry's own (same user), so removing group and
other bits loses nothing; each change is logged once.  A file we can't chmod (another owner,
a read-only mount) is logged as a warning and left alone.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("moorage")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def tighten(path: Path, mode: int) -> None:
    """Remove from ``path``'s mode every bit ``mode`` lacks (never adds any); warn about it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    current = stat.S_IMODE(st.st_mode)
    if not current & ~mode & 0o777:
        return
    new = current & mode
    try:
        os.chmod(path, new)
    except OSError as exc:
        log.warning("%s is mode %o (readable by other local users) and could not be tightened: %s", path, current, exc.strerror)
        return
    if path.is_dir() and not any(path.iterdir()):
        return  # a fresh, empty directory (``mkdir data``): nothing was exposed, nothing to tell
    log.warning("tightened %s from mode %o to %o: it holds registry secrets", path, current, new)


def private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) as 0700, or tighten it if it exists."""
    if not path.exists():
        path.mkdir(parents=True, mode=PRIVATE_DIR, exist_ok=True)
        os.chmod(path, PRIVATE_DIR)  # mkdir's mode is filtered by the umask; be exact
        return
    tighten(path, PRIVATE_DIR)


def private_file(path: Path, *, create: bool = False) -> None:
    """Tighten ``path`` to 0600; with ``create``, make it (empty, 0600) if it is missing."""
    if create:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
            return
        except FileExistsError:
            pass
    tighten(path, PRIVATE_FILE)


def secure_sqlite(db_path: Path) -> None:
    """The SQLite database and its ``-wal``/``-shm``/``-journal`` files: 0600, the database made
    0600 before SQLite first opens it (SQLite then creates the others with its mode)."""
    if not db_path.parent.exists():
        private_dir(db_path.parent)
    private_file(db_path, create=True)
    for suffix in ("-wal", "-shm", "-journal"):
        private_file(db_path.with_name(db_path.name + suffix))
