"""Helpers for the auth tests: a Moorage server with auth on, the CLI against its data, raw
token-flow HTTP, and a tiny image pushed over plain HTTP."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import requests

from tests.support import http
from tests.support.cli import run_moorage
from tests.support.registry_proc import RegistryProcess, start_moorage

ADMIN_PASSWORD = "admin-Pw-for-tests"
HTTP_TIMEOUT = 30


def auth_env(mode: str = "token", **more: str) -> dict[str, str]:
    env = {
        "MOORAGE_AUTH__MODE": mode,
        "MOORAGE_AUTH__ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MOORAGE_AUTH__BCRYPT_ROUNDS": "4",
    }
    env.update(more)
    return env


def start_auth_server(
    tmpdir: Path, backend_env: Mapping[str, str] | None = None, mode: str = "token", **more: str
) -> RegistryProcess:
    env = {**(backend_env or {}), **auth_env(mode, **more)}
    proc = start_moorage(tmpdir, env=env, username="admin", password=ADMIN_PASSWORD)
    proc.server_env = env  # type: ignore[attr-defined]
    return proc


def cli(proc: RegistryProcess, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """``moorage ARGS --data DIR`` with the server's environment (same database)."""
    cp = run_moorage(*args, "--data", proc.data_dir, env=getattr(proc, "server_env", {}), input=input, timeout=60)
    if check and cp.returncode != 0:
        raise AssertionError(f"moorage {' '.join(args)} failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}")
    return cp


def add_user(proc: RegistryProcess, name: str, password: str, *flags: str) -> None:
    cli(proc, "user", "add", name, "--password-stdin", *flags, input=password + "\n")


def token_response(
    proc: RegistryProcess, scopes: Sequence[str] = (), auth: tuple[str, str] | None = None, **params: str
) -> requests.Response:
    query: list[tuple[str, str]] = [("service", "moorage")]
    query += [("scope", s) for s in scopes]
    query += list(params.items())
    return requests.get(f"{proc.url}/auth/token", params=query, auth=auth, timeout=HTTP_TIMEOUT)


def get_token(proc: RegistryProcess, scopes: Sequence[str] = (), auth: tuple[str, str] | None = None) -> str:
    r = token_response(proc, scopes, auth)
    assert r.status_code == 200, r.text
    return r.json()["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_of(token: str) -> dict:
    import jwt

    return jwt.decode(token, options={"verify_signature": False})


def push_image(url: str, repo: str, tag: str, token: str | None, payload: bytes = b"layer") -> str:
    """Push a one-layer OCI image over plain HTTP; returns the manifest digest."""
    config = b"{}"
    descs = [
        {"mediaType": mt, "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data)}
        for data, mt in (
            (config, "application/vnd.oci.image.config.v1+json"),
            (payload, "application/vnd.oci.image.layer.v1.tar"),
        )
    ]
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": descs[0], "layers": [descs[1]]}
    ).encode()
    return http.push_image(
        url, repo, tag, manifest, [config, payload], headers=bearer(token) if token else {}, timeout=HTTP_TIMEOUT
    )


def parse_challenge(value: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",service="y"`` -> ("Bearer", {realm: x, service: y})."""
    import re

    scheme, _, rest = value.partition(" ")
    return scheme, dict(re.findall(r'(\w+)="([^"]*)"', rest))
