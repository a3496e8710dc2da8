"""Thin wrappers around real registry clients, each call bounded by a timeout.

* :class:`Skopeo` / :func:`skopeo` -- the ``skopeo`` CLI, isolated from the
  host's /etc/containers config and credentials.
* :class:`PodmanService` -- ``podman system service`` on a private unix socket
  with private image storage, used as the Docker Engine API for the ``docker``
  CLI (there is no dockerd here).
* :func:`oras_client` / :func:`oras_push_artifact` -- oras-py (PyPI ``oras``
  0.2.43) against a plain-HTTP registry.
* :func:`http_json` -- a curl-like GET that returns ``(status, headers, json)``.

Quirks found on Debian 12 as root in this sandbox (podman 4.3.1, skopeo 1.9.3,
docker CLI 28.2.2, oras-py 0.2.43) -- see each class's docstring for details:

* Plain-HTTP registries need ``--tls-verify=false`` (inspect, list-tags,
  delete, login) or ``--src-tls-verify=false``/``--dest-tls-verify=false``
  (copy, sync) for skopeo, and an ``insecure = true`` registries.conf entry for
  podman. A registries.conf ``location`` *without a port* ("localhost",
  "127.0.0.1") matches every port of that host, so one podman service covers
  registries started later on any port.
* podman reads registries.conf once at service start; changes after that are
  not seen by a running ``podman system service``.
* ``skopeo copy`` (and podman pull/push) need a signature policy; on a machine
  without containers-common's /etc/containers/policy.json skopeo fails with
  "Error loading trust policy: open /etc/containers/policy.json: no such file
  or directory". We pass ``--policy`` to skopeo and put an accept-anything one
  at ``$HOME/.config/containers/policy.json`` for the podman service (checked:
  podman reads it before /etc/containers/policy.json; a "reject" policy there
  makes ``docker pull`` fail with "Source image rejected").
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from tests.support.daemon import Daemon
from tests.support.registry_proc import terminate_group

__all__ = [
    "ClientError",
    "run",
    "Skopeo",
    "skopeo",
    "PodmanService",
    "http_json",
    "http_request",
    "oras_client",
    "oras_push_artifact",
    "PushedArtifact",
    "manifest_descriptor",
    "ACCEPT_MANIFESTS",
    "DEFAULT_TIMEOUT",
]

DEFAULT_TIMEOUT = float(os.environ.get("MOORAGE_CLIENT_TIMEOUT", "120"))

ACCEPT_MANIFESTS = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)

ACCEPT_ANYTHING_POLICY = {"default": [{"type": "insecureAcceptAnything"}]}


class ClientError(AssertionError):
    """A client command failed; the message carries argv, rc, stdout, stderr."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stdout: str, stderr: str, note: str = ""):
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        msg = f"{note or 'command failed'} (rc={returncode}): {shlex.join(self.argv)}"
        if stdout.strip():
            msg += f"\n--- stdout:\n{stdout[-4000:]}"
        if stderr.strip():
            msg += f"\n--- stderr:\n{stderr[-4000:]}"
        super().__init__(msg)


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    input: str | bytes | None = None,
    cwd: str | os.PathLike | None = None,
) -> subprocess.CompletedProcess:
    """Run ``argv`` (text mode unless ``input`` is bytes); raise
    :class:`ClientError` on non-zero exit (if ``check``) or on timeout."""
    argv = [str(a) for a in argv]
    text = not isinstance(input, bytes)
    try:
        cp = subprocess.run(
            argv,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=text,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise ClientError(argv, None, out, err, note=f"timed out after {timeout:.0f}s") from None
    if check and cp.returncode != 0:
        out = cp.stdout if text else cp.stdout.decode(errors="replace")
        err = cp.stderr if text else cp.stderr.decode(errors="replace")
        raise ClientError(argv, cp.returncode, out, err)
    return cp


def _write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")
    return path


def _registries_conf(insecure: Iterable[str]) -> str:
    out = ["# written by tests/support/clients.py", "unqualified-search-registries = []", ""]
    for loc in dict.fromkeys(insecure):  # de-dup, keep order
        out += ["[[registry]]", f'location = "{loc}"', "insecure = true", ""]
    return "\n".join(out)


DEFAULT_INSECURE = ("localhost", "127.0.0.1")


# --------------------------------------------------------------------------
# skopeo


# subcommand -> TLS flags for a plain-HTTP registry
_SKOPEO_TLS_FLAGS = {
    "copy": ("--src-tls-verify", "--dest-tls-verify"),
    "sync": ("--src-tls-verify", "--dest-tls-verify"),
    "inspect": ("--tls-verify",),
    "list-tags": ("--tls-verify",),
    "delete": ("--tls-verify",),
    "login": ("--tls-verify",),
}
# skopeo global flags that take a separate value argument
_SKOPEO_GLOBAL_VALUE_FLAGS = {
    "--override-arch",
    "--override-os",
    "--override-variant",
    "--command-timeout",
    "--policy",
    "--registries.d",
    "--tmpdir",
}


@dataclass
class Skopeo:
    """``skopeo`` with a private config dir.

    Every call runs ``skopeo --policy DIR/policy.json --registries.d DIR/registries.d
    --tmpdir DIR/tmp SUBCOMMAND [tls flags] ARGS...`` with

    * ``policy.json`` = ``{"default":[{"type":"insecureAcceptAnything"}]}`` so no
      /etc/containers/policy.json is needed;
    * the TLS flags for plain HTTP added after the subcommand (``copy``/``sync``:
      ``--src-tls-verify=false --dest-tls-verify=false``; ``inspect``,
      ``list-tags``, ``delete``, ``login``: ``--tls-verify=false``; nothing for
      ``logout``/``manifest-digest``...), unless the caller passed that flag;
    * env ``REGISTRY_AUTH_FILE=DIR/auth.json`` (where ``skopeo login`` writes
      and every other command reads credentials), ``CONTAINERS_REGISTRIES_CONF``
      = a private registries.conf, ``XDG_RUNTIME_DIR``/``HOME`` private, so
      nothing of the host's credentials or config is read.

    Quirks: skopeo 1.9.3 has global ``--tmpdir`` and ``--command-timeout``;
    ``copy --preserve-digests`` makes it fail rather than re-encode a manifest;
    ``copy --all`` is needed to copy every platform of an index (default copies
    only the host platform's image and writes *that* manifest);
    ``skopeo delete`` deletes the manifest by digest, i.e. every tag pointing at
    it goes (Distribution answers 202).
    """

    workdir: Path
    tls_verify: bool = False
    timeout: float = DEFAULT_TIMEOUT
    binary: str = field(default_factory=lambda: shutil.which("skopeo") or "/usr/bin/skopeo")
    insecure_registries: Sequence[str] = DEFAULT_INSECURE

    def __post_init__(self):
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.policy = _write_json(self.workdir / "policy.json", ACCEPT_ANYTHING_POLICY)
        self.registries_d = self.workdir / "registries.d"
        self.registries_d.mkdir(exist_ok=True)
        self.tmpdir = self.workdir / "tmp"
        self.tmpdir.mkdir(exist_ok=True)
        self.home = self.workdir / "home"
        self.home.mkdir(exist_ok=True)
        self.runtime_dir = self.workdir / "run"
        self.runtime_dir.mkdir(mode=0o700, exist_ok=True)
        self.authfile = self.workdir / "auth.json"
        if not self.authfile.exists():
            _write_json(self.authfile, {"auths": {}})
        self.registries_conf = self.workdir / "registries.conf"
        self.registries_conf.write_text(_registries_conf(self.insecure_registries))

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_AUTH", "CONTAINERS_", "DOCKER_"))}
        env.update(
            REGISTRY_AUTH_FILE=str(self.authfile),
            CONTAINERS_REGISTRIES_CONF=str(self.registries_conf),
            XDG_RUNTIME_DIR=str(self.runtime_dir),
            HOME=str(self.home),
            TMPDIR=str(self.tmpdir),
        )
        return env

    def argv(self, *args: str) -> list[str]:
        args = [str(a) for a in args]
        base = [self.binary, "--policy", str(self.policy), "--registries.d", str(self.registries_d), "--tmpdir", str(self.tmpdir)]
        # global flags may precede the subcommand: skip them (and their values)
        i = 0
        while i < len(args) and args[i].startswith("-"):
            i += 2 if args[i] in _SKOPEO_GLOBAL_VALUE_FLAGS else 1
        if i >= len(args):
            return [*base, *args]
        pre, sub, rest = args[:i], args[i], args[i + 1 :]
        flags = []
        if not self.tls_verify:
            for flag in _SKOPEO_TLS_FLAGS.get(sub, ()):
                if not any(a == flag or a.startswith(flag + "=") for a in rest):
                    flags.append(f"{flag}=false")
        return [*base, *pre, sub, *flags, *rest]

    def __call__(
        self, *args: str, timeout: float | None = None, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess:
        return run(self.argv(*args), env=self.env, timeout=timeout or self.timeout, check=check, input=input)

    def json(self, *args: str, timeout: float | None = None):
        """Run and parse stdout as JSON (``inspect``, ``list-tags``, ``inspect --raw``)."""
        return json.loads(self(*args, timeout=timeout).stdout)

    def login(self, host: str, username: str, password: str) -> subprocess.CompletedProcess:
        return self("login", "--username", username, "--password-stdin", host, input=password)

    def copy(
        self, src: str, dst: str, *extra: str, all: bool = False, preserve_digests: bool = True, **kw
    ) -> subprocess.CompletedProcess:
        flags = ["--quiet"]
        if all:
            flags.append("--all")
        if preserve_digests:
            flags.append("--preserve-digests")
        return self("copy", *flags, *extra, src, dst, **kw)


_default_skopeo: Skopeo | None = None


def skopeo(*args: str, timeout: float | None = None, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    """Module-level convenience: run skopeo with a process-wide private config
    dir (created on first use, removed at exit). Fixtures should prefer the
    ``skopeo`` fixture (a :class:`Skopeo` under pytest's tmp dir)."""
    global _default_skopeo
    if _default_skopeo is None:
        d = tempfile.mkdtemp(prefix="moorage-skopeo-")
        atexit.register(shutil.rmtree, d, True)
        _default_skopeo = Skopeo(Path(d))
    return _default_skopeo(*args, timeout=timeout, check=check, input=input)


# --------------------------------------------------------------------------
# podman API socket for the docker CLI


def _ping_unix(sock_path: Path, timeout: float = 2.0) -> bool:
    """True if an HTTP server on the unix socket answers ``GET /_ping``."""
    try:
        with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)) as s:
            s.settimeout(timeout)
            s.connect(str(sock_path))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
            data = b""
            while len(data) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0]
    except OSError:
        return False


@dataclass
class PodmanService:
    """``podman system service --time=0 unix://SOCK`` with private everything,
    serving the Docker-compatible API for the ``docker`` CLI.

    What runs (as root)::

        HOME=W/home XDG_RUNTIME_DIR=W/run TMPDIR=W/tmp
        CONTAINERS_CONF=W/containers.conf CONTAINERS_STORAGE_CONF=W/storage.conf
        CONTAINERS_REGISTRIES_CONF=W/registries.conf
        podman --root W/storage --runroot W/runroot --tmpdir W/libpod
               --storage-driver vfs --cgroup-manager cgroupfs --events-backend file
               system service --time=0 unix://W/podman.sock

    and the docker CLI gets ``DOCKER_HOST=unix://W/podman.sock`` and
    ``DOCKER_CONFIG=W/docker-config`` (see :attr:`docker_env`).

    Findings in this sandbox (Debian 12, kernel 6.x, cgroup v1, no systemd as
    PID 1, podman 4.3.1, docker CLI 28.2.2):

    * Image-only work (import, tag, push, pull, rm, login, inspect) needs no
      cgroups, netns, slirp4netns or fuse: running containers is never tried.
    * overlay works natively here ("Native Overlay Diff: true"), but ``vfs`` is
      the default because it needs no mounts and the images are tiny. Override
      with ``MOORAGE_PODMAN_STORAGE_DRIVER=overlay``. With overlay the service
      bind-mounts ``--root``/overlay onto itself and leaves that mount behind
      after SIGTERM; :meth:`stop` lazily unmounts anything under the work dir.
    * The storage driver is recorded in the libpod database under ``--root``;
      reusing a root with another driver fails with "database storage graph
      driver "" does not match our storage graph driver "vfs"". Use a fresh root.
    * /etc/containers/libpod.conf (obsolete) says cgroup_manager=systemd and
      events go to journald by default; neither works without systemd, so
      ``--cgroup-manager cgroupfs --events-backend file`` (and the same in a
      private containers.conf).
    * registries.conf is read once at start: the ``insecure`` entries must be
      there before the service starts. Portless locations ("localhost",
      "127.0.0.1") match every port.
    * The docker CLI negotiates its API down to 1.41 (podman 4.3.1 compat API);
      ``docker version`` shows "API version: 1.41 (downgraded from 1.50)".
    * ``docker image import rootfs.tar mynodeapp`` prints
      "sha256:<id>: sha256:<id>" (not the usual bare id) and names the image
      ``docker.io/library/mynodeapp:latest`` (Docker semantics of the compat
      API; native podman would say ``localhost/mynodeapp``). ``docker images``
      shows it as ``mynodeapp``.
    * ``docker image push`` of an imported image sends an OCI manifest
      (application/vnd.oci.image.manifest.v1+json) with a gzip'ed OCI layer,
      not a Docker v2 schema 2 one.
    * ``docker login`` goes through the service's /auth endpoint, which checks
      the credentials against the registry over plain HTTP even without an
      insecure entry; the credentials land in ``DOCKER_CONFIG/config.json``
      and the CLI sends them as ``X-Registry-Auth`` on push/pull.
    * The unix socket path must stay under 108 bytes; a short dir under /tmp
      is used for it when the work dir is too deep.

    Running containers (``docker container run``; tests/test_image.py):

    * crun fails to start containers here (it cannot set the default rlimits):
      the ``runc`` runtime (Debian package) and ``default_ulimits = []`` in the
      private containers.conf make ``run`` work; cgroupfs, no systemd.
    * ``-p HOST:CTR`` works with podman's default CNI bridge (rootful, iptables
      portmap); the container answers on 127.0.0.1:HOST.
    * ``--restart always`` works while the service runs: conmon calls
      ``podman container cleanup`` (with the same --root/--runroot), which
      restarts a container whose process died (kill -9 of its PID from the host:
      running again within a second or two, ``RestartCount`` incremented).
    * podman 4.3.1's compat API creates containers with ``StopTimeout`` 0 when
      the docker CLI sends none, so a plain ``docker container stop`` SIGKILLs at
      once (exit 137) where Docker would SIGTERM and wait 10 s; pass ``-t 10``
      to get Docker's behaviour.
    * ``podman build`` writes OCI image configs by default, which have no
      HEALTHCHECK; ``--format docker`` keeps it.  Healthchecks are scheduled by
      systemd timers (absent here, the service logs an error and carries on):
      ``podman healthcheck run NAME`` runs one by hand.
    """

    workdir: Path
    storage_driver: str = field(default_factory=lambda: os.environ.get("MOORAGE_PODMAN_STORAGE_DRIVER", "vfs"))
    insecure_registries: Sequence[str] = DEFAULT_INSECURE
    start_timeout: float = 30.0
    stop_timeout: float = 10.0
    podman_bin: str = field(default_factory=lambda: shutil.which("podman") or "/usr/bin/podman")
    docker_bin: str = field(
        default_factory=lambda: os.environ.get("MOORAGE_DOCKER_BIN") or shutil.which("docker") or "/usr/local/bin/docker"
    )
    timeout: float = DEFAULT_TIMEOUT
    #: OCI runtime for ``docker container run`` (Debian package ``runc``); crun fails here.
    runtime: str = field(default_factory=lambda: os.environ.get("MOORAGE_PODMAN_RUNTIME", "runc"))

    proc: subprocess.Popen | None = field(default=None, repr=False)
    socket_path: Path | None = None
    _sock_dir: str | None = field(default=None, repr=False)

    # -- configuration -----------------------------------------------------
    def _write_config(self) -> dict[str, str]:
        w = self.workdir
        for d in ("home/.config/containers", "run", "tmp", "libpod", "storage", "runroot", "docker-config"):
            (w / d).mkdir(parents=True, exist_ok=True)
        os.chmod(w / "run", 0o700)
        _write_json(w / "home/.config/containers/policy.json", ACCEPT_ANYTHING_POLICY)
        (w / "registries.conf").write_text(_registries_conf(self.insecure_registries))
        (w / "storage.conf").write_text(
            f'[storage]\ndriver = "{self.storage_driver}"\ngraphroot = "{w / "storage"}"\nrunroot = "{w / "runroot"}"\n'
        )
        (w / "containers.conf").write_text(
            "[containers]\n"
            # crun/runc cannot set the default rlimits in this sandbox ("setrlimit
            # RLIMIT_NOFILE: operation not permitted"): start containers with none.
            "default_ulimits = []\n"
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{w / "events.log"}"\n'
            f'image_copy_tmp_dir = "{w / "tmp"}"\n'
            f'tmp_dir = "{w / "libpod"}"\n'
            f'runtime = "{self.runtime}"\n'
        )
        dcfg = w / "docker-config" / "config.json"
        if not dcfg.exists():
            _write_json(dcfg, {"auths": {}})
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTAINERS_", "REGISTRY_AUTH", "DOCKER_", "XDG_"))}
        env.update(
            HOME=str(w / "home"),
            XDG_RUNTIME_DIR=str(w / "run"),
            TMPDIR=str(w / "tmp"),
            CONTAINERS_CONF=str(w / "containers.conf"),
            CONTAINERS_STORAGE_CONF=str(w / "storage.conf"),
            CONTAINERS_REGISTRIES_CONF=str(w / "registries.conf"),
        )
        return env

    def _pick_socket_path(self) -> Path:
        p = self.workdir / "podman.sock"
        if len(str(p)) < 100:
            return p
        self._sock_dir = tempfile.mkdtemp(prefix="pm-", dir="/tmp")
        return Path(self._sock_dir) / "podman.sock"

    def podman_argv(self, *args: str) -> list[str]:
        w = self.workdir
        return [
            self.podman_bin,
            "--root",
            str(w / "storage"),
            "--runroot",
            str(w / "runroot"),
            "--tmpdir",
            str(w / "libpod"),
            "--storage-driver",
            self.storage_driver,
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "--runtime",
            self.runtime,
            *args,
        ]

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> PodmanService:
        self.workdir = Path(self.workdir)
        if len(str(self.workdir / "runroot")) > 50:
            # podman refuses a runroot longer than 50 characters (pytest-xdist's basetemp is
            # /tmp/pytest-of-root/pytest-N/popen-gwK/...): work in a short directory instead.
            self.workdir = Path(tempfile.mkdtemp(prefix="pm-", dir="/tmp"))
            self._sock_dir = str(self.workdir)  # removed by stop()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not Path(self.podman_bin).exists():
            raise FileNotFoundError(f"{self.podman_bin} not found (apt-get install podman)")
        self.service_env = self._write_config()
        self.socket_path = self._pick_socket_path()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self.log_path = self.workdir / "podman-service.log"
        argv = self.podman_argv("system", "service", "--time=0", f"unix://{self.socket_path}")
        sock = self.socket_path
        # A Daemon: own process group, group stop, killed by its watchdog if pytest is killed.
        self._daemon = Daemon(
            "podman system service",
            argv,
            self.log_path,
            env=self.service_env,
            cwd=self.workdir,
            ready=lambda: _ping_unix(sock),
            start_timeout=self.start_timeout,
            stop_timeout=self.stop_timeout,
        )
        self._daemon.start()
        self.proc = self._daemon.proc
        return self

    def stop(self) -> None:
        if getattr(self, "_daemon", None) is not None:
            self._daemon.stop()
        elif self.proc is not None:
            terminate_group(self.proc, self.stop_timeout)
        self._unmount_storage()
        if self._sock_dir:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
            self._sock_dir = None

    def _unmount_storage(self) -> None:
        """The overlay driver bind-mounts ``--root``/overlay onto itself and a
        SIGTERM'ed service leaves that mount behind (rm -rf then fails with
        EBUSY); lazily unmount whatever is still mounted under our work dir."""
        root = str(Path(self.workdir).resolve()) + "/"
        try:
            lines = Path("/proc/self/mountinfo").read_text().splitlines()
        except OSError:
            return
        points = [ln.split()[4] for ln in lines if len(ln.split()) > 4]
        for mp in sorted((m for m in points if m.startswith(root)), key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], capture_output=True, timeout=30)

    def __enter__(self) -> PodmanService:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except (OSError, AttributeError):
            return ""

    # -- clients -----------------------------------------------------------
    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def docker_config(self) -> Path:
        return self.workdir / "docker-config"

    @property
    def docker_env(self) -> dict[str, str]:
        """Environment for the ``docker`` CLI: the caller's env without any
        DOCKER_* (no contexts, TLS, API pin), plus DOCKER_HOST and DOCKER_CONFIG."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(DOCKER_HOST=self.docker_host, DOCKER_CONFIG=str(self.docker_config))
        return env

    # alias: the brief calls it "an env dict"
    env = docker_env

    def docker(
        self, *args: str, timeout: float | None = None, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run the ``docker`` CLI against this service."""
        return run([self.docker_bin, *args], env=self.docker_env, timeout=timeout or self.timeout, check=check, input=input)

    def podman(self, *args: str, timeout: float | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """Run the podman CLI directly on the same storage (not through the
        socket) -- handy for debugging; don't mix with a busy service."""
        env = getattr(self, "service_env", None) or self._write_config()
        return run(self.podman_argv(*args), env=env, timeout=timeout or self.timeout, check=check)

    def docker_login(self, host: str, username: str, password: str) -> subprocess.CompletedProcess:
        return self.docker("login", "--username", username, "--password-stdin", host, input=password)


# --------------------------------------------------------------------------
# plain HTTP (curl equivalent)


def http_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    data: bytes | None = None,
    auth: tuple[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request without redirects following surprises: returns
    ``(status, headers(lower-cased keys), body)``; HTTP errors are returned,
    not raised."""
    h = dict(headers or {})
    if auth:
        h["Authorization"] = "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    req = urllib.request.Request(url, data=data, headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:
        body = e.read() if e.fp else b""
        return e.code, {k.lower(): v for k, v in (e.headers or {}).items()}, body


def http_json(url: str, *, auth: tuple[str, str] | None = None, headers: Mapping[str, str] | None = None, timeout: float = 30.0):
    """``curl -s URL | jq``: returns ``(status, headers, parsed-json-or-None)``."""
    status, hdrs, body = http_request("GET", url, headers=headers, auth=auth, timeout=timeout)
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = None
    return status, hdrs, doc


def manifest_descriptor(registry_url: str, repo: str, ref: str, *, auth=None) -> dict:
    """HEAD a manifest and return an OCI descriptor ``{mediaType, digest, size}``
    built from the registry's headers (what a ``subject`` must point at)."""
    status, hdrs, _ = http_request(
        "HEAD", f"{registry_url}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT_MANIFESTS}, auth=auth
    )
    if status != 200:
        raise AssertionError(f"HEAD {repo}:{ref} -> {status}")
    return {
        "mediaType": hdrs["content-type"].split(";")[0].strip(),
        "digest": hdrs["docker-content-digest"],
        "size": int(hdrs["content-length"]),
    }


# --------------------------------------------------------------------------
# oras-py


def oras_client(registry, *, retries: bool = False, request_timeout: float = 60.0, **kw):
    """An ``oras.provider.Registry`` for a plain-HTTP registry object
    (anything with ``.host`` and optionally ``.auth``).

    Quirks of oras-py 0.2.43:

    * ``insecure=True`` is what switches it to ``http://``; ``tls_verify``
      only matters for https.
    * ``Registry.login()`` writes ``~/.docker/config.json`` (or uses docker-py);
      we call ``auth.set_basic_auth()`` instead, which touches no file.
    * ``push()`` refuses files outside the current directory unless
      ``disable_path_validation=True``.
    * ``push()`` has no ``artifact_type`` argument: the only artifact-type knob
      is the config media type (``manifest_config="PATH:MEDIATYPE"``, PATH may
      not exist -> empty ``{}`` config). For a real OCI 1.1 ``artifactType``
      use :func:`oras_push_artifact`.
    * ``push(subject=...)`` takes an ``oras.oci.Subject`` dataclass;
      ``Subject.from_manifest(dict)`` hashes ``json.dumps(dict)`` which only
      equals the registry's digest if the bytes were produced the same way --
      take digest/size from the registry instead (:func:`manifest_descriptor`).
    * ``upload_manifest()`` always sends Content-Type
      application/vnd.oci.image.manifest.v1+json (no index pushes).
    * ``do_request`` retries 5 times with sleeps of 2+3**n seconds on any 500
      or connection error; by default (``retries=False``) we unwrap that so a
      failing registry fails the test in seconds, and add a request timeout.
    * pushing a manifest by digest needs the digest in advance;
      ``upload_manifest`` sends ``json.dumps(manifest)`` (requests' ``json=``),
      so that is the byte string to hash (:func:`oras_push_artifact` does it).
    * pull writes layer files named by their ``org.opencontainers.image.title``
      annotation into ``outdir``.
    """
    import types

    import oras.provider

    c = oras.provider.Registry(hostname=registry.host, insecure=True, tls_verify=False, **kw)
    auth = getattr(registry, "auth", None)
    if auth:
        c.auth.set_basic_auth(*auth)
    if not retries:
        # Registry.do_request is wrapped in @retry(attempts=5): on a 500 or a
        # connection error it sleeps 2+3**n s between tries (minutes in total).
        # Tests want the first answer; unwrap it.
        inner = getattr(type(c).do_request, "__wrapped__", None)
        if inner is not None:
            c.do_request = types.MethodType(inner, c)
    # requests has no default timeout and oras-py passes none: add one.
    orig_request = c.session.request

    def request_with_timeout(*a, **k):
        k.setdefault("timeout", request_timeout)
        return orig_request(*a, **k)

    c.session.request = request_with_timeout
    return c


def oras_push_artifact(
    client,
    target: str,
    files: Mapping[str, bytes],
    *,
    artifact_type: str,
    layer_media_type: str = "application/vnd.oci.image.layer.v1.tar",
    subject: Mapping | None = None,
    annotations: Mapping[str, str] | None = None,
    by_digest: bool = False,
    workdir: str | os.PathLike,
) -> PushedArtifact:
    """Push an OCI 1.1 artifact manifest with ``artifactType`` and the empty
    config (``application/vnd.oci.empty.v1+json``, ``{}``) using oras-py's
    public building blocks (``upload_blob`` + ``upload_manifest``).

    ``target`` is ``HOST/REPO:TAG``, or ``HOST/REPO`` with ``by_digest=True``
    (the manifest is then PUT at its own digest, untagged -- the usual way to
    push a referrer). ``files`` maps title -> bytes; ``subject`` is a
    descriptor dict (see :func:`manifest_descriptor`).

    Returns ``PushedArtifact(digest, manifest, headers)``; the digest is the
    registry's ``Docker-Content-Digest`` (checked against sha256 of the bytes
    sent); ``headers`` are the manifest PUT's response headers (lower-cased),
    e.g. ``oci-subject`` on an OCI 1.1 registry.
    """
    import hashlib

    import oras.oci

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    container = client.get_container(target if not by_digest else f"{target}:unused")
    layers = []
    for title, data in files.items():
        p = workdir / (hashlib.sha256(data).hexdigest()[:16] + ".blob")
        p.write_bytes(data)
        layer = {
            "mediaType": layer_media_type,
            "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "annotations": {"org.opencontainers.image.title": title},
        }
        client._check_200_response(client.upload_blob(str(p), container, layer))
        layers.append(layer)
    empty = workdir / "empty-config.json"
    empty.write_bytes(b"{}")
    config = {
        "mediaType": "application/vnd.oci.empty.v1+json",
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        "size": 2,
    }
    client._check_200_response(client.upload_blob(str(empty), container, config))
    manifest = oras.oci.NewManifest()
    manifest["artifactType"] = artifact_type
    manifest["config"] = config
    manifest["layers"] = layers
    if annotations:
        manifest["annotations"] = dict(annotations)
    else:
        manifest.pop("annotations", None)
    if subject:
        manifest["subject"] = dict(subject)
    # the exact bytes requests will send for json=manifest
    sent_digest = "sha256:" + hashlib.sha256(json.dumps(manifest, allow_nan=False).encode()).hexdigest()
    if by_digest:
        container = client.get_container(f"{target}@{sent_digest}")
    resp = client.upload_manifest(manifest, container)
    client._check_200_response(resp)
    digest = resp.headers.get("Docker-Content-Digest", "")
    if digest and digest != sent_digest:
        raise AssertionError(f"registry says {digest}, we sent {sent_digest}")
    headers = {k.lower(): v for k, v in resp.headers.items()}
    return PushedArtifact(digest or sent_digest, manifest, headers)


class PushedArtifact(NamedTuple):
    digest: str
    manifest: dict
    headers: dict
