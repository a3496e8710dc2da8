"""A throwaway OpenID provider nobody here wrote: django-oidc-provider (PyPI) in a small Django
site (tests/support/oidc_op/: settings, a login page, an ID-token hook adding
``preferred_username`` and ``groups`` -- what a Keycloak admin does with protocol mappers).

    with start_provider(tmp / "op", redirect_uris=[...]) as op:
        op.issuer            # http://127.0.0.1:PORT/openid
        op.remove_member("developers", "olivia") / op.delete_user("olivia")

Served by Django's own server (``runserver --noreload``) on 127.0.0.1, SQLite in the work dir;
users, groups and two confidential clients (``moorage`` and ``other``) are loaded at start.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ._procs import ServiceStartError, die_with_parent, free_port, keep_dirs, stop_process, tail, wait_until

REPO = Path(__file__).resolve().parents[2]
CLIENT_ID = "moorage"
CLIENT_SECRET = secrets.token_hex(24)
OTHER_CLIENT_ID = "other"
OTHER_SECRET = secrets.token_hex(24)
#: name -> (password, groups)
PEOPLE: dict[str, tuple[str, tuple[str, ...]]] = {
    "olivia": ("olivia-Sso-Pw-1", ("developers",)),
    "oscar": ("oscar-Sso-Pw-1", ()),
    "opal": ("opal-Sso-Pw-1", ("registry-admins",)),
    "otto": ("otto-Sso-Pw-1", ("developers",)),
}


@dataclass
class Provider:
    work: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen | None = None

    @property
    def site(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return self.site + "/openid"

    def _python(self, script: str, *args: str, input: str | None = None) -> str:
        cp = subprocess.run(
            [sys.executable, str(REPO / "tests/support/oidc_op" / script), *args],
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        if cp.returncode != 0:
            raise AssertionError(f"{script} failed: {cp.stderr[-3000:]}")
        return cp.stdout

    def remove_member(self, group: str, user: str) -> None:
        self._python("manage_members.py", "remove", group, user)

    def add_member(self, group: str, user: str) -> None:
        self._python("manage_members.py", "add", group, user)

    def set_redirect_uris(self, client_id: str, uris: list[str]) -> None:
        self._python("manage_members.py", "redirects", client_id, *uris)

    def delete_user(self, user: str) -> None:
        self._python("manage_members.py", "delete", user)

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServiceStartError(f"provider exited with {self.proc.returncode}:\n{tail(self.work / 'op.log')}")
        try:
            with urllib.request.urlopen(self.issuer + "/.well-known/openid-configuration", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        stop_process(self.proc, signal.SIGKILL, grace=5)


@contextmanager
def start_provider(work: Path, redirect_uris: list[str]) -> Iterator[Provider]:
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    pp = os.environ.get("PYTHONPATH")
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{pp}" if pp else str(REPO),
        "DJANGO_SETTINGS_MODULE": "tests.support.oidc_op.settings",
        "OIDC_OP_SECRET_KEY": secrets.token_urlsafe(32),
        "OIDC_OP_DB": str(work / "op.sqlite3"),
        "OIDC_OP_SITE_URL": f"http://127.0.0.1:{port}",
    }
    op = Provider(work, port, env)
    try:
        cp = subprocess.run(
            [sys.executable, "-m", "django", "migrate", "-v", "0"], env=env, capture_output=True, text=True, timeout=300, cwd=REPO
        )
        if cp.returncode != 0:
            raise ServiceStartError(f"migrate failed: {cp.stderr[-3000:]}")
        spec = {
            "users": PEOPLE,
            "clients": [
                {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uris": redirect_uris},
                {"client_id": OTHER_CLIENT_ID, "client_secret": OTHER_SECRET, "redirect_uris": redirect_uris},
            ],
        }
        op._python("setup_data.py", input=json.dumps(spec))
        with open(work / "op.log", "ab") as log:
            op.proc = subprocess.Popen(
                [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{port}", "--noreload", "--nothreading"],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
                start_new_session=True,
            )
        wait_until(op._answers, 60, f"OpenID provider on {op.site}")
        yield op
    finally:
        stop_process(op.proc, signal.SIGTERM, grace=5)
        if not keep_dirs():
            shutil.rmtree(work, ignore_errors=True)
