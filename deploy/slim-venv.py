"""Trim the image's virtual environment to what the registry runs (deploy/Dockerfile's build stage).

Why: the container image should be small (registry:2 is ~25 MB); pip installs wheels whole,
with their test suites, C/Cython sources, type stubs and, for botocore, the API models of
every AWS service.  None of that is loaded by a registry.  Compiled bytecode (``__pycache__``)
is kept on purpose: the image runs as a user that cannot write it, and compiling every module
on each start would cost seconds of start-up.

Run with the venv's interpreter: ``/opt/moorage/bin/python deploy/slim-venv.py``.  Prints what
it removed.  The Dockerfile then runs ``moorage migrate`` on a scratch directory, so a file this
removes that the registry needs fails the build, not a user's start.
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path

#: botocore's service models the S3 driver loads (S3 itself, and the credential providers).
BOTOCORE_SERVICES = {"s3", "sts", "sso", "sso-oidc"}
#: Sources and stubs of compiled modules, and C headers: never read at run time.
DEAD_SUFFIXES = {".pyx", ".pxd", ".pxi", ".pyi", ".c", ".h", ".cpp", ".hpp"}
#: Test suites shipped inside packages (``<package>/tests``) and the libraries' test harnesses.
TEST_DIRS = {"tests", "test"}
HARNESSES = (
    "sqlalchemy/testing",
    "alembic/testing",
    "mako/testing",
    "uvloop/_testbase.py",
    "asyncpg/_testbase",
    "aiohttp/test_utils.py",
    "aiohttp/pytest_plugin.py",
)
#: Pydantic's 1.x compatibility package (Moorage uses the 2.x API only).
LEGACY = ("pydantic/v1",)
#: SQLAlchemy's dialects for databases Moorage does not support (SQLite and PostgreSQL stay;
#: Alembic names the others only for type checking).
DIALECTS = ("sqlalchemy/dialects/mssql", "sqlalchemy/dialects/mysql", "sqlalchemy/dialects/oracle")
#: zstandard ships two backends; the C one is the default and the only one imported here.
ZSTD_CFFI = ("zstandard/_cffi.*.so", "zstandard/backend_cffi.py", "zstandard/__pycache__/backend_cffi.*")


def _size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file())


def _remove(path: Path) -> int:
    size = _size(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    return size


def slim(site: Path) -> dict[str, int]:
    """Remove what the registry never loads from ``site`` (site-packages); bytes freed per kind."""
    freed = {
        "botocore models": 0,
        "tests": 0,
        "sources and stubs": 0,
        "zstandard cffi": 0,
        "other databases": 0,
        "pydantic v1": 0,
    }
    data = site / "botocore" / "data"
    if data.is_dir():
        for svc in data.iterdir():
            if svc.is_dir() and svc.name not in BOTOCORE_SERVICES:
                freed["botocore models"] += _remove(svc)
    for pkg in site.iterdir():
        if not pkg.is_dir() or pkg.name.endswith((".dist-info", "__pycache__")):
            continue
        for name in TEST_DIRS:
            if (pkg / name).is_dir():
                freed["tests"] += _remove(pkg / name)
    for rel in HARNESSES:
        if (site / rel).exists():
            freed["tests"] += _remove(site / rel)
    for rel in LEGACY:
        if (site / rel).exists():
            freed["pydantic v1"] += _remove(site / rel)
    for rel in DIALECTS:
        if (site / rel).exists():
            freed["other databases"] += _remove(site / rel)
    for path in [p for p in site.rglob("*") if p.suffix in DEAD_SUFFIXES and p.is_file()]:
        freed["sources and stubs"] += _remove(path)
    for pattern in ZSTD_CFFI:
        for path in site.glob(pattern):
            freed["zstandard cffi"] += _remove(path)
    return freed


def main() -> None:
    site = Path(sysconfig.get_paths()["purelib"])
    if sys.prefix == sys.base_prefix:
        raise SystemExit("slim-venv.py: run it with the virtual environment's python, not the system's")
    freed = slim(site)
    print("slim-venv: removed " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in freed.items()))


if __name__ == "__main__":
    main()
