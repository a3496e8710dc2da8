"""LDAP and OpenID Connect sign-in are extras (``moorage[ldap]``, ``moorage[oidc]``): configured
without them, ``moorage serve`` stops with one line naming the extra, never an ImportError traceback.

The libraries are hidden from the child process by a ``sitecustomize`` that maps their modules to
None (unimportable), as on a machine where ``pip install moorage`` installed the default only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.cli import run_moorage
from tests.support.registry_proc import REPO_ROOT, free_port

pytestmark = [pytest.mark.protocol, pytest.mark.one_backend]

CONFIGS = {
    "ldap": (
        ("ldap3",),
        "auth:\n  mode: token\n  ldap:\n    url: ldap://127.0.0.1:1\n"
        "    user_base: ou=people,dc=example,dc=org\n    group_filter: ''\n"
        "    bind_password: hunter2-secret\n",
    ),
    "oidc": (
        ("authlib", "joserfc"),
        "auth:\n  mode: token\n  oidc:\n    issuer: https://sso.example.org\n    client_id: moorage\n"
        "    client_secret: hunter2-secret\n",
    ),
}


@pytest.mark.parametrize("extra", sorted(CONFIGS))
def test_sign_in_without_its_extra_is_one_line(tmp_path: Path, extra: str) -> None:
    modules, config = CONFIGS[extra]
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules))
    (tmp_path / "config.yml").write_text(config)
    pp = os.pathsep.join(p for p in (str(hide), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    cp = run_moorage(
        "serve",
        "--config",
        tmp_path / "config.yml",
        "--data",
        tmp_path / "data",
        "--addr",
        f"127.0.0.1:{free_port()}",
        env={"PYTHONPATH": pp},
        timeout=120,
    )
    assert cp.returncode != 0
    lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in cp.stderr, cp.stderr
    assert f"pip install 'moorage[{extra}]'" in lines[0] and "hunter2" not in lines[0], lines[0]
