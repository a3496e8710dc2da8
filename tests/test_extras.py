"""The default install serves the default registry; each optional feature names its extra.

The extras' libraries are hidden from a child process (a ``sitecustomize`` that maps their
modules to None, which makes them unimportable), as on a machine where ``pip install moorage``
installed only the default dependencies.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from moorage.extras import EXTRAS
from tests.support.cli import run_moorage
from tests.support.clients import http_json
from tests.support.registry_proc import REPO_ROOT, free_port, start_moorage

pytestmark = [pytest.mark.protocol, pytest.mark.one_backend]


def _hidden(tmp: Path, *extras: str) -> dict[str, str]:
    """Environment of a child process in which the modules of ``extras`` cannot be imported."""
    site = tmp / "hide"
    site.mkdir(exist_ok=True)
    modules = sorted({m for e in extras for m in EXTRAS[e]})
    (site / "sitecustomize.py").write_text("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules))
    pp = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(site), str(REPO_ROOT), pp) if p)}


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_the_default_registry_needs_no_extra(tmp_path: Path) -> None:
    srv = start_moorage(tmp_path / "srv", env=_hidden(tmp_path, "s3", "postgres", "insight"))
    try:
        status, _, body = http_json(f"{srv.url}/v2/_catalog")
        assert status == 200 and body == {"repositories": []}
        status, _, _ = http_json(f"{srv.url}/readyz")
        assert status == 200
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("extra", "args", "env"),
    [
        (
            "s3",
            ["serve", "--addr", "127.0.0.1:{port}"],
            {
                "MOORAGE_STORAGE__DRIVER": "s3",
                "MOORAGE_STORAGE__S3__BUCKET": "b",
                "MOORAGE_STORAGE__S3__ENDPOINT_URL": "http://127.0.0.1:1",
            },
        ),
        ("postgres", ["migrate"], {"MOORAGE_DATABASE__URL": "postgresql://u:secret@127.0.0.1:1/db"}),
        ("insight", ["serve", "--addr", "127.0.0.1:{port}"], {"MOORAGE_INSIGHT__SCAN_ON_PUSH": "true"}),
        ("insight", ["vulndb", "import", "{tmp}"], {}),
    ],
    ids=["s3-serve", "postgres-migrate", "insight-scan-on-push", "insight-vulndb-import"],
)
def test_a_configured_feature_without_its_extra_is_one_line(
    tmp_path: Path, extra: str, args: list[str], env: dict[str, str]
) -> None:
    fmt = {"port": free_port(), "tmp": str(tmp_path)}
    if args[0] == "vulndb":
        run_moorage("migrate", "--data", str(tmp_path / "data"), timeout=120, check=True)
    cp = run_moorage(
        *[a.format(**fmt) for a in args], "--data", str(tmp_path / "data"), env={**env, **_hidden(tmp_path, extra)}, timeout=120
    )
    assert cp.returncode != 0
    line = _one_line(cp.stderr)
    assert f"pip install 'moorage[{extra}]'" in line and "secret" not in line, line
