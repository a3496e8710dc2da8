"""Missing prerequisites skip on a laptop but FAIL in CI (tests/support/require.py)."""

from __future__ import annotations

import pytest

from tests.support.require import require_binary, require_module

ABSENT = "moorage-no-such-client-binary"


@pytest.fixture()
def laptop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("MOORAGE_REQUIRE_CLIENTS", raising=False)


def test_missing_binary_skips_outside_ci(laptop: None) -> None:
    with pytest.raises(pytest.skip.Exception, match="Debian package pkg-x"):
        require_binary(ABSENT, "pkg-x")
    with pytest.raises(pytest.skip.Exception):
        require_binary("/nonexistent/" + ABSENT, "pkg-x")
    with pytest.raises(pytest.skip.Exception, match="moorage_no_such_module"):
        require_module("moorage_no_such_module")


@pytest.mark.parametrize(
    "var,value", [("CI", "true"), ("CI", "1"), ("MOORAGE_REQUIRE_CLIENTS", "1"), ("MOORAGE_REQUIRE_CLIENTS", "yes")]
)
def test_missing_binary_fails_when_required(laptop: None, monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(pytest.fail.Exception, match="required here"):
        require_binary(ABSENT, "pkg-x")
    with pytest.raises(pytest.fail.Exception, match="required here"):
        require_module("moorage_no_such_module")


def test_present_things_are_returned(laptop: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert require_binary("sh", "dash").endswith("/sh")
    assert require_module("json").dumps([]) == "[]"


def test_service_fixtures_use_the_same_rule(laptop: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.service_fixtures import _require

    _require([], "nothing missing")
    with pytest.raises(pytest.skip.Exception):
        _require(["ceph-mon"], "Ceph RGW")
    monkeypatch.setenv("MOORAGE_REQUIRE_CLIENTS", "1")
    with pytest.raises(pytest.fail.Exception, match="ceph-mon"):
        _require(["ceph-mon"], "Ceph RGW")
