"""Unit tests of the pure access-control rules, passwords and token signing (no server)."""

from __future__ import annotations

import time

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moorage.accounts import passwords
from moorage.registry.access_rules import (
    Grant,
    Principal,
    Scope,
    granted_actions,
    namespace_prefixes,
    parse_actions,
    parse_duration,
    parse_scope,
    parse_scopes,
    parse_token_scope,
    pattern_matches,
    pull_patterns,
    registry_actions,
    repository_rights,
    token_covers,
    valid_pattern,
    valid_username,
)


# -- scopes ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("repository:samalba/my-app:pull,push", Scope("repository", "samalba/my-app", ("pull", "push"))),
        ("repository:samalba/my-app:pull", Scope("repository", "samalba/my-app", ("pull",))),
        ("registry:catalog:*", Scope("registry", "catalog", ("*",))),
        # a registry host:port inside the name: split type from the left, actions from the right
        ("repository:localhost:5000/app:pull", Scope("repository", "localhost:5000/app", ("pull",))),
        ("repository:reg.example.com:443/a/b:pull,push", Scope("repository", "reg.example.com:443/a/b", ("pull", "push"))),
        # resource class (token spec) is dropped
        ("repository(plugin):vieux/sshfs:pull", Scope("repository", "vieux/sshfs", ("pull",))),
        ("repository:app:", Scope("repository", "app", ())),
        ("repository:app:pull,,pull", Scope("repository", "app", ("pull",))),
    ],
)
def test_parse_scope(text: str, expected: Scope) -> None:
    assert parse_scope(text) == expected


@pytest.mark.parametrize("text", ["", "repository", "repository:app", ":app:pull", "repository::pull", "bogus"])
def test_parse_scope_rejects_malformed(text: str) -> None:
    assert parse_scope(text) is None


def test_parse_scopes_multiple_params_spaces_and_merging() -> None:
    got = parse_scopes(
        [
            "repository:a:pull",
            "repository:b:push repository:a:push",  # several in one parameter, space-separated
            "nonsense",  # skipped, not an error
            "registry:catalog:*",
        ]
    )
    assert got == [
        Scope("repository", "a", ("pull", "push")),
        Scope("repository", "b", ("push",)),
        Scope("registry", "catalog", ("*",)),
    ]


def test_scope_str_roundtrip() -> None:
    s = parse_scope("repository:localhost:5000/x:pull,push")
    assert s is not None and parse_scope(str(s)) == s


# -- patterns ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "pattern, repo, ok",
    [
        ("team/*", "team/app", True),
        ("team/*", "team/tools/lint", True),
        ("team/*", "team", False),
        ("team/*", "teamx/app", False),
        ("*", "anything/at/all", True),
        ("team/app", "team/app", True),
        ("team/app", "team/app2", False),
        ("*/base", "lib/base", True),
        ("a.b/*", "axb/c", False),  # '.' is literal
    ],
)
def test_pattern_matches(pattern: str, repo: str, ok: bool) -> None:
    assert pattern_matches(pattern, repo) is ok


def test_valid_pattern_and_username() -> None:
    assert valid_pattern("team/*") and valid_pattern("*") and valid_pattern("a/b-c_d.e")
    assert not valid_pattern("Team/*") and not valid_pattern("a//b") and not valid_pattern("") and not valid_pattern("a b")
    assert valid_username("alice") and valid_username("ci-bot.1")
    assert not valid_username("Alice") and not valid_username("a/b") and not valid_username("-x") and not valid_username("x" * 65)


def test_parse_actions() -> None:
    assert parse_actions("pull,push") == {"pull", "push"}
    assert parse_actions(["admin"]) == {"admin"}
    assert parse_actions("*") == {"admin"}
    with pytest.raises(ValueError):
        parse_actions("pull,fly")


def test_parse_token_scope_and_duration() -> None:
    assert parse_token_scope(["team/*:pull", "x:pull,push"]) == [
        Grant("team/*", frozenset({"pull"})),
        Grant("x", frozenset({"pull", "push"})),
    ]
    with pytest.raises(ValueError):
        parse_token_scope(["nocolon"])
    assert parse_duration("30d") == 30 * 86400 and parse_duration("90") == 90 and parse_duration("2h") == 7200
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_namespace_prefixes() -> None:
    assert namespace_prefixes("a/b/c") == ["a", "a/b"]
    assert namespace_prefixes("a") == []


# -- rights ------------------------------------------------------------------------------------
def test_owner_has_everything_under_own_name() -> None:
    alice = Principal("alice")
    assert repository_rights(alice, "alice/app", public=False) >= {"pull", "push", "delete"}
    assert repository_rights(alice, "alice", public=False) >= {"pull", "push", "delete"}
    assert repository_rights(alice, "alicex/app", public=False) == frozenset()
    assert repository_rights(alice, "bob/app", public=False) == frozenset()


def test_grants_public_and_admin() -> None:
    bob = Principal("bob", grants=[Grant("team/*", frozenset({"pull"})), Grant("team/app", frozenset({"push"}))])
    assert repository_rights(bob, "team/lib", public=False) == {"pull"}
    assert repository_rights(bob, "team/app", public=False) == {"pull", "push"}
    assert repository_rights(bob, "other/x", public=True) == {"pull"}
    anon = Principal(None)
    assert repository_rights(anon, "other/x", public=True) == {"pull"}
    assert repository_rights(anon, "other/x", public=False) == frozenset()
    root = Principal("root", is_admin=True)
    assert repository_rights(root, "any/thing", public=False) >= {"pull", "push", "delete", "admin"}
    mgr = Principal("mgr", grants=[Grant("ops/*", frozenset({"admin"}))])
    assert repository_rights(mgr, "ops/x", public=False) == {"pull", "push", "delete", "admin"}


def test_robot_has_no_namespace_of_its_own() -> None:
    ci = Principal("ci", is_robot=True, grants=[Grant("team/*", frozenset({"pull", "push"}))])
    assert repository_rights(ci, "ci/x", public=False) == frozenset()
    assert repository_rights(ci, "team/x", public=False) == {"pull", "push"}


def test_token_scope_restricts_but_never_widens() -> None:
    p = Principal(
        "alice",
        grants=[Grant("team/*", frozenset({"pull"}))],
        token_scope=[Grant("alice/ci", frozenset({"pull", "push"})), Grant("team/*", frozenset({"admin"}))],
    )
    assert repository_rights(p, "alice/ci", public=False) == {"pull", "push"}
    assert repository_rights(p, "alice/other", public=False) == frozenset()
    assert repository_rights(p, "team/x", public=False) == {"pull"}  # token can't add push
    assert repository_rights(p, "elsewhere/pub", public=True) == {"pull"}  # public stays public


def test_granted_actions_keeps_only_granted_in_order() -> None:
    assert granted_actions(("push", "pull", "fly"), frozenset({"pull"})) == ("pull",)
    assert granted_actions(("pull", "push"), frozenset({"pull", "push"})) == ("pull", "push")
    assert granted_actions(("*",), frozenset({"pull", "push", "delete"})) == ()
    assert granted_actions(("*",), frozenset({"pull", "push", "delete", "admin"})) == ("*",)


def test_registry_scopes() -> None:
    assert registry_actions(Principal(None), Scope("registry", "catalog", ("*",))) == ()
    assert registry_actions(Principal("bob"), Scope("registry", "catalog", ("*",))) == ("*",)
    assert registry_actions(Principal("bob"), Scope("registry", "admin", ("*",))) == ()
    assert registry_actions(Principal("root", is_admin=True), Scope("registry", "admin", ("*",))) == ("*",)


def test_token_covers() -> None:
    access = [{"type": "repository", "name": "a", "actions": ["pull"]}, {"type": "registry", "name": "catalog", "actions": ["*"]}]
    assert token_covers(access, "repository", "a", ("pull",)) == (True, True)
    assert token_covers(access, "repository", "a", ("pull", "push")) == (False, True)
    assert token_covers(access, "repository", "b", ("pull",)) == (False, False)
    assert token_covers(access, "registry", "catalog", ("*",)) == (True, True)
    assert token_covers([{"bogus": 1}, "x"], "repository", "a", ("pull",)) == (False, False)


# -- passwords and tokens ------------------------------------------------------------------------
def test_password_hashing() -> None:
    h = passwords.hash_password("s3cret", rounds=4)
    assert h.startswith("$2b$04$")
    assert passwords.check_password("s3cret", h)
    assert not passwords.check_password("s3cret!", h)
    assert not passwords.check_password("s3cret", None)
    assert not passwords.check_password("s3cret", "not-a-hash")
    long_pw = "x" * 100
    h2 = passwords.hash_password(long_pw, rounds=4)
    assert passwords.check_password(long_pw, h2) and not passwords.check_password("x" * 99 + "y", h2)


def test_access_token_format() -> None:
    token_id, text, stored = passwords.new_token()
    parts = passwords.split_token(text)
    assert parts is not None and parts[0] == token_id
    assert passwords.secret_matches(parts[1], stored)
    assert not passwords.secret_matches(parts[1] + "x", stored)
    assert passwords.split_token("hunter2") is None
    assert passwords.split_token("moor_short_x") is None


def test_htpasswd_file(tmp_path) -> None:
    import bcrypt

    f = tmp_path / "htpasswd"
    f.write_text(
        "# comment\nalice:"
        + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)
        + "\nmd5user:$apr1$abc$def\n"
    )
    h = passwords.Htpasswd(f)
    assert h.verify("alice", "pw") and not h.verify("alice", "nope")
    assert not h.verify("md5user", "anything") and not h.verify("nobody", "pw")


async def test_signer_roundtrip_and_refusals(tmp_path) -> None:
    from moorage.auth.tokens import InvalidToken, TokenSigner
    from moorage.metadata.auth_store import AuthStore
    from moorage.metadata.db import Database

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    await db.migrate()
    try:
        store = AuthStore(db)
        key_path = tmp_path / "auth" / "key.pem"
        signer = TokenSigner(store, issuer="moorage", service="svc", key_path=key_path, expiry=60)
        await signer.load()
        assert key_path.exists() and oct(key_path.stat().st_mode & 0o777) == "0o600"
        access = [{"type": "repository", "name": "a", "actions": ["pull"]}]
        token, expires_in, _ = signer.issue("alice", access, token_id="abc")
        assert 0 < expires_in <= 60
        header = jwt.get_unverified_header(token)
        assert header["alg"] == "ES256" and header["kid"]
        claims = await signer.verify(token)
        assert claims["sub"] == "alice" and claims["aud"] == "svc" and claims["access"] == access and claims["pat"] == "abc"
        assert {"iss", "exp", "nbf", "iat", "jti"} <= claims.keys()

        # a second replica on the same database uses the same key
        other = TokenSigner(store, issuer="moorage", service="svc", key_path=tmp_path / "other.pem")
        await other.load()
        assert (await other.verify(token))["sub"] == "alice"

        # wrong audience / tampered / expired / refresh-as-access are refused
        wrong_aud = TokenSigner(store, issuer="moorage", service="other", key_path=key_path)
        await wrong_aud.load()
        with pytest.raises(InvalidToken):
            await wrong_aud.verify(token)
        head, body, sig = token.split(".")
        forged = jwt.utils.base64url_encode(jwt.utils.base64url_decode(body).replace(b'"pull"', b'"push"')).decode()
        with pytest.raises(InvalidToken):
            await signer.verify(f"{head}.{forged}.{sig}")
        short = TokenSigner(store, issuer="moorage", service="svc", key_path=key_path, expiry=60)
        await short.load()
        expired, _, _ = short.issue("alice", access, not_after=time.time() - 60)
        with pytest.raises(InvalidToken):
            await signer.verify(expired)
        refresh = signer.issue_refresh("alice", password_changed_at=1.0, token_id=None)
        with pytest.raises(InvalidToken):
            await signer.verify(refresh)
        assert (await signer.verify(refresh, refresh=True))["sub"] == "alice"
        with pytest.raises(InvalidToken):
            await signer.verify("not.a.jwt")
    finally:
        await db.close()


# -- glob matching without backtracking (issue 8, item 3) --------------------------------------
@pytest.mark.timeout(30)
def test_glob_attack_patterns_are_matched_quickly() -> None:
    from moorage.gc.patterns import repo_matches
    from moorage.registry.globs import glob_match

    evil = "a*" * 40 + "b"
    for _ in range(200):
        assert not pattern_matches(evil, "a" * 255)
        assert not glob_match(evil, "a" * 255)
        assert not repo_matches(evil, "a" * 255)
        assert not glob_match("?*" * 60 + "[b]", "a" * 255)
    assert pattern_matches(evil, "a" * 80 + "b")


def test_glob_match_agrees_with_fnmatch() -> None:
    import fnmatch
    import random

    from moorage.registry.globs import glob_match

    rng = random.Random(8)
    alphabet = "ab/-."
    atoms = ["a", "b", "/", "-", "*", "*", "?", "[ab]", "[!a]", "[a-b]", "[", "]", "[]a]"]
    for _ in range(20_000):
        pattern = "".join(rng.choice(atoms) for _ in range(rng.randint(0, 7)))
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 9)))
        assert glob_match(pattern, text) == fnmatch.fnmatchcase(text, pattern), (pattern, text)


def test_bcrypt_runs_on_its_own_bounded_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the event loop, not the default executor (which blob reads fill up), and a queue
    that refuses (503) instead of growing without bound."""
    import asyncio
    import threading

    async def main() -> None:
        name = await passwords.run_hashing(lambda: threading.current_thread().name)
        assert name.startswith("moorage-bcrypt")
        gate = threading.Event()
        monkeypatch.setattr(passwords, "HASH_QUEUE_MAX", 3)
        jobs = [asyncio.ensure_future(passwords.run_hashing(gate.wait, 10)) for _ in range(3)]
        await asyncio.sleep(0.05)
        with pytest.raises(passwords.HashingBusy) as exc:
            await passwords.run_hashing(lambda: None)
        assert exc.value.status == 503
        gate.set()
        assert await asyncio.gather(*jobs) == [True] * 3
        # blocking the default executor does not delay a password check
        blockers = [asyncio.get_running_loop().run_in_executor(None, time.sleep, 1.0) for _ in range(64)]
        assert await asyncio.wait_for(passwords.check_password_async("x", None, 4), 0.9) is False
        await asyncio.gather(*blockers)

    asyncio.run(main())


def test_redaction_of_credentials_in_log_text() -> None:
    from moorage.api.log_redaction import redact, redact_parse_error

    for text, secret in [
        ("b'Authorization: Basic YWxpY2U6UzNjcmV0UGFzcw==\\x01'", "YWxpY2U6"),
        ("b'PROXY-AUTHORIZATION:bearer abc.def.ghi'", "abc.def"),
        ("Cookie: sid=s3cr3t; other=1", "s3cr3t"),
        ("GET /x?access_token=eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl HTTP/1.1", "eyJzdWIiOi"),
        ("login with moor_0123456789abcdef_SeCrEt-value", "SeCrEt"),
        ("form: username=a&password=hunter2", "hunter2"),
    ]:
        assert secret not in redact(text), text
    assert "YWxpY2U6UzNjcmV0UGFzcw" not in redact_parse_error("b'...iY2U6UzNjcmV0UGFzcw==\\x01'")
    assert redact("GET /v2/alice/app/manifests/v1 200") == "GET /v2/alice/app/manifests/v1 200"


@given(
    st.lists(
        st.sampled_from(
            [
                "Authorization: Basic YWxpY2U6cHc=",
                "AUTHORIZATION",
                "Cookie=a",
                "bEaReR abc.def",
                "Digest x",
                "negotiate YII",
                "eyJhbGciOiJI.eyJzdWIiOi.sig",
                "moor_0a1b_secretpart",
                "Token=t",
                "PASSWORD=p",
                "secret=s",
                "passwd=q",
                "/v2/app/manifests/v1",
                " ",
                "=",
                "'",
                "\n",
                "é",
                "ǅ",
                "K",  # Kelvin sign: lower() gives "k"
                "paſſword=p",  # long s: the patterns' (?i) takes it for s, lower() does not
                "Tokın=x",
                "TOKİN=y",
                "ſecret=z",
            ]
        ),
        max_size=12,
    ),
    st.text(max_size=40),
)
def test_redaction_gate_never_skips_what_the_patterns_would_redact(parts: list[str], noise: str) -> None:
    """The trigger-word gate in front of the patterns changes no result, only the cost."""
    from moorage.api.log_redaction import _redact_all, redact

    for text in ("".join(parts) + noise, noise + "".join(parts), noise):
        assert redact(text) == _redact_all(text), text


_SEGMENT = st.sampled_from(["a", "b", "team", "alice", "x.y", "a-b"])
_NAMES = st.lists(_SEGMENT, min_size=1, max_size=3).map("/".join)
_PATTERNS = st.one_of(_NAMES, _NAMES.map(lambda n: n + "/*"), st.just("*"), _NAMES.map(lambda n: n + "*"))
_GRANTS = st.lists(
    st.builds(Grant, _PATTERNS, st.sampled_from([frozenset({"pull"}), frozenset({"push"}), frozenset({"admin"})])), max_size=3
)


@given(
    name=st.one_of(st.none(), st.sampled_from(["alice", "team"])),
    admin=st.booleans(),
    robot=st.booleans(),
    grants=_GRANTS,
    scope=st.one_of(st.none(), _GRANTS),
    repository=_NAMES,
    public=st.booleans(),
)
def test_pull_patterns_are_the_read_rule_of_repository_rights(
    name: str | None, admin: bool, robot: bool, grants: list[Grant], scope: list[Grant] | None, repository: str, public: bool
) -> None:
    """The web UI filters its lists in SQL with :func:`pull_patterns`; the catalog and the insight
    API with :func:`repository_rights`. Both must say the same for every principal and name."""
    principal = Principal(name, is_admin=admin and name is not None, is_robot=robot, grants=grants, token_scope=scope)
    patterns, scope_patterns = pull_patterns(principal)
    by_patterns = public or (
        any(pattern_matches(p, repository) for p in patterns)
        and (scope_patterns is None or any(pattern_matches(p, repository) for p in scope_patterns))
    )
    assert by_patterns == ("pull" in repository_rights(principal, repository, public=public))
