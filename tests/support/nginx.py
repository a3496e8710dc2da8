"""A throwaway nginx load balancer (Debian ``nginx``) in front of several registry replicas.

Everything lives in ``workdir`` (config, pid, logs, temp dirs); nginx runs in the foreground
(``daemon off``) as our child (a :class:`tests.support.daemon.Daemon`: dies with pytest) and is
stopped with SIGQUIT/SIGKILL.  Round-robin upstream,
streaming request bodies (``proxy_request_buffering off``, ``client_max_body_size 0``) and
responses (``proxy_buffering off``), and ``proxy_next_upstream`` for failures nginx may retry
(connect errors always; a request already sent is retried only if idempotent, nginx's rule).
The access log records which upstream served each request (``$upstream_addr``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ._procs import free_port
from .daemon import Daemon, DaemonStartError

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

CONFIG = """\
daemon off;
master_process on;
worker_processes 1;
{user}
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format up '$request_method $uri $status $upstream_addr $upstream_status $request_time';
    access_log {root}/access.log up;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;

    # Upload-session affinity (optional): requests of one upload go to one replica, which
    # then still holds the running hash; everything else round-robin.
    map $uri $moorage_upload {{
        "~^/v2/.+/blobs/uploads/(?<id>[0-9a-fA-F-]+)$" $id;
        default $request_id;
    }}
    upstream moorage {{
{balance}
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_connect_timeout 2s;
        proxy_read_timeout 300s;
        proxy_send_timeout 300s;
        proxy_next_upstream error timeout http_502 http_503;
        proxy_next_upstream_tries 3;
        location / {{
            proxy_pass http://moorage;
        }}
    }}
}}
"""


@dataclass
class Nginx:
    workdir: Path
    upstreams: Sequence[str]  # "127.0.0.1:PORT"
    #: Route every request of one upload session to the same replica (consistent hash of the
    #: upload id) instead of pure round-robin.
    affinity: bool = False
    port: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)
    _daemon: Daemon | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self, timeout: float = 15.0) -> Nginx:
        root = Path(self.workdir).resolve()
        root.mkdir(parents=True, exist_ok=True)
        self.workdir = root
        servers = "\n".join(f"        server {u} max_fails=1 fail_timeout=5s;" for u in self.upstreams)
        # As root, nginx would switch its worker to "nobody", which cannot use our temp dirs.
        user = "user root;" if os.geteuid() == 0 else ""
        import socket

        for _ in range(3):
            self.port = free_port()
            conf = root / "nginx.conf"
            balance = "        hash $moorage_upload consistent;" if self.affinity else ""
            conf.write_text(CONFIG.format(root=root, port=self.port, servers=servers, user=user, balance=balance))
            port = self.port

            def ready() -> bool:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True

            self._daemon = Daemon(
                "nginx",
                [NGINX, "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")],
                root / "stderr.log",
                ready=ready,
                start_timeout=timeout,
                stop_signal=signal.SIGQUIT,
            )
            try:
                self._daemon.start()
                self.proc = self._daemon.proc
                return self
            except DaemonStartError:
                self.proc = None
            if "in use" not in self.log():
                break
        raise RuntimeError(f"nginx did not start:\n{self.log()}")

    def log(self) -> str:
        out = []
        for name in ("stderr.log", "error.log"):
            p = Path(self.workdir) / name
            if p.exists():
                out.append(p.read_text(errors="replace")[-3000:])
        return "\n".join(out)

    def access_log(self) -> list[str]:
        p = Path(self.workdir) / "access.log"
        return p.read_text(errors="replace").splitlines() if p.exists() else []

    def stop(self) -> None:
        """SIGQUIT (graceful) to the group, then SIGKILL; see tests.support.daemon.Daemon.stop."""
        self.proc = None
        if self._daemon is not None:
            self._daemon.stop()
