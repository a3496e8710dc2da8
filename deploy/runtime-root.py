"""Assemble the image's root filesystem: the interpreter, the venv and what they load, nothing else.

Why: a Debian base with Python is ~105 MB before Moorage is installed (perl, dpkg, PAM,
util-linux, the compilers' support files...), while the registry runs one program.  The build
stage (deploy/Dockerfile) has the full base; this script copies out of it what the registry
process needs into ``ROOT``, and the final stage is ``FROM scratch`` with that tree:

* the interpreter and its standard library (without the parts for developing Python: 2to3,
  ensurepip, distutils, idle, tkinter, pydoc's topics), and ``/opt/moorage`` (the venv);
* every shared library those load (resolved with ``ldd`` from the interpreter, the standard
  library's and the venv's extension modules), with their symlinks;
* ``/bin/sh`` (dash) and a few coreutils (``TOOLS``) for ``docker exec ... sh``, CA
  certificates, ``/etc/passwd`` with the ``moorage`` user (uid 10001), ``/tmp``.

Third-party Python is kept as compiled bytecode only (``.pyc`` in place of ``.py``): the
registry runs as a user that cannot write ``__pycache__``, so bytecode is needed for a quick start, and
the sources would double the size.  Moorage's own package keeps its sources, so its frames in a
traceback show their lines.

Run with the venv's interpreter: ``/opt/moorage/bin/python deploy/runtime-root.py /rootfs``.
The Docker build then runs ``moorage migrate`` inside ``/rootfs`` (chroot), so a missing file
fails the build, not a user's start.
"""

from __future__ import annotations

import compileall
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

#: The venv (deploy/Dockerfile).
VENV = Path(sys.prefix)
#: Standard library parts only a Python developer uses.
#: (the debugging and testing modules too: libraries import them only from their test helpers)
STDLIB_SKIP = {
    "lib2to3",
    "ensurepip",
    "distutils",
    "idlelib",
    "tkinter",
    "turtledemo",
    "pydoc_data",
    "test",
    "venv",
    "unittest",
    "pydoc.py",
    "doctest.py",
    "pdb.py",
    "turtle.py",
    "_pydecimal.py",
}
#: Extension modules of the standard library nothing here imports, some of which bring libraries
#: (Berkeley DB, ncurses, readline, NIS with Kerberos): test modules, terminals, old databases.
DYNLOAD_SKIP = re.compile(
    r"^(_test\w*|_ctypes_test|_xx\w*|xxlimited\w*|_dbm|_gdbm|_crypt|_curses\w*|readline|nis|ossaudiodev|audioop)\."
)
#: Files copied when present (certificates for S3/OIDC over HTTPS, the shell, name service config).
FILES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/openssl.cnf",
    "/usr/lib/ssl/cert.pem",
    "/usr/lib/ssl/certs",
    "/usr/lib/ssl/openssl.cnf",
    "/usr/local/ssl",
    "/etc/nsswitch.conf",
    "/bin/sh",
)
#: A few tools for ``docker exec registry sh`` (looking at the volume, fixing an owner by hand);
#: ~2 MB with their libraries.
TOOLS = ("chown", "chmod", "ls", "cat", "id", "du", "df", "mkdir", "rm", "cp", "mv")
PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "moorage:x:10001:10001:Moorage registry:/var/lib/registry:/usr/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
GROUP = "root:x:0:\nmoorage:x:10001:\nnogroup:x:65534:\n"


def copy_path(src: str | Path, root: Path) -> None:
    """Copy ``src`` to the same path under ``root``, recreating every symlink on the way (the
    usr-merged ``/lib64 -> usr/lib64``, ``libz.so.1 -> libz.so.1.2.13``) and copying their targets."""
    parts = Path(src).parts
    cur = Path("/")
    for i, part in enumerate(parts[1:], start=1):
        cur = cur / part
        dest = root / cur.relative_to("/")
        if cur.is_symlink():
            target = os.readlink(cur)
            if not dest.is_symlink():
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(target, dest)
            resolved = (cur.parent / target) if not os.path.isabs(target) else Path(target)
            copy_path(Path(os.path.normpath(resolved)).joinpath(*parts[i + 1 :]), root)
            return
        if i == len(parts) - 1:
            if cur.is_dir():
                shutil.copytree(cur, dest, symlinks=True, dirs_exist_ok=True)
            elif cur.exists() and not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(cur, dest)


def libraries(binaries: list[Path]) -> set[str]:
    """The shared libraries (absolute paths) that ``binaries`` load, as ``ldd`` resolves them."""
    found: set[str] = set()
    for chunk in range(0, len(binaries), 200):
        out = subprocess.run(["ldd", *map(str, binaries[chunk : chunk + 200])], capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if m:
                found.add(m.group(1))
            elif "not found" in line:
                raise SystemExit(f"runtime-root.py: a library is missing: {line.strip()}")
    return found


def sourceless(tree: Path) -> None:
    """Replace every ``x.py`` under ``tree`` by ``x.pyc`` (importable without the source)."""
    # (a file that does not compile, such as a template, keeps its source)
    compileall.compile_dir(str(tree), quiet=2, legacy=True, workers=1)
    for path in list(tree.rglob("*")):
        if path.name == "__pycache__" and path.is_dir():
            shutil.rmtree(path)
        elif path.suffix == ".py" and path.with_suffix(".pyc").is_file():
            path.unlink()


def assemble(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    # the venv's python3 links to the base's (/usr/bin/python3 -> python3.11): copy the chain
    link = VENV / "bin" / "python3"
    exe = link.resolve()
    target = os.readlink(link) if link.is_symlink() else str(exe)
    copy_path(target if os.path.isabs(target) else exe, root)
    copy_path(exe, root)
    # the standard library, without what only Python developers use
    dest_stdlib = root / stdlib.relative_to("/")
    shutil.copytree(
        stdlib,
        dest_stdlib,
        symlinks=True,
        ignore=lambda d, names: [
            n for n in names if (Path(d) == stdlib and n in STDLIB_SKIP) or n.startswith("config-") or DYNLOAD_SKIP.match(n)
        ],
    )
    shutil.copytree(VENV, root / VENV.relative_to("/"), symlinks=True)
    for name in FILES:
        if os.path.lexists(name):
            copy_path(name, root)
    tools = [Path("/usr/bin") / t for t in TOOLS if (Path("/usr/bin") / t).is_file()]
    for tool in tools:
        copy_path(tool, root)
    binaries = [exe, Path("/bin/sh").resolve(), *tools, *dest_stdlib.rglob("*.so"), *VENV.rglob("*.so")]
    for lib in sorted(libraries(binaries)):
        copy_path(lib, root)
    for etc, text in (("passwd", PASSWD), ("group", GROUP)):
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc" / etc).write_text(text)
    for d, mode in (("tmp", 0o1777), ("var/tmp", 0o1777), ("root", 0o700), ("etc/docker/registry", 0o755)):
        (root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(root / d, mode)
    registry = root / "var/lib/registry"
    registry.mkdir(parents=True, exist_ok=True)
    os.chown(registry, 10001, 10001)
    os.chmod(registry, 0o750)
    # bytecode only, except Moorage's own package
    sourceless(dest_stdlib)
    site = root / Path(sysconfig.get_paths()["purelib"]).relative_to("/")
    for entry in site.iterdir():
        if entry.is_dir() and entry.name != "moorage" and not entry.name.endswith(".dist-info"):
            sourceless(entry)
        elif entry.suffix == ".py":
            sourceless_file(entry)


def sourceless_file(path: Path) -> None:
    """One top-level module (``six.py``, ``typing_extensions.py``) to ``.pyc``."""
    import py_compile

    py_compile.compile(str(path), cfile=str(path.with_suffix(".pyc")), doraise=True)
    path.unlink()
    cache = path.parent / "__pycache__"
    for pyc in cache.glob(path.stem + ".*.pyc"):
        pyc.unlink()


def main() -> None:
    if sys.prefix == sys.base_prefix:
        raise SystemExit("runtime-root.py: run it with the virtual environment's python")
    if len(sys.argv) != 2:
        raise SystemExit("usage: runtime-root.py ROOT")
    root = Path(sys.argv[1])
    assemble(root)
    size = sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    print(f"runtime-root: {root} holds {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
