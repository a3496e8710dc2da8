"""registry:2 ``config.yml`` + ``REGISTRY_*`` overrides -> Moorage settings (moorage/config_distribution.py).

Every mapped key has a test that it lands where Moorage reads it, every refusal a test that it
is refused *by name* on one line, and the image's default config loads through the real
settings loader (the same path ``moorage serve --config`` takes).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from moorage.config_distribution import (
    DistributionConfigError,
    apply_env_overrides,
    is_distribution_config,
    load,
    to_settings,
)
from moorage.config_load import load_settings

REPO = Path(__file__).resolve().parents[1]
BASE = {"version": 0.1, "storage": {"filesystem": {"rootdirectory": "/var/lib/registry"}}}


def mapped(extra: dict, env: dict | None = None) -> dict:
    tree = {**BASE, **extra}
    return load(tree, env or {})


def refused(extra: dict, env: dict | None = None) -> str:
    with pytest.raises(DistributionConfigError) as info:
        mapped(extra, env)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("registry:2 config: ")
    return msg


# ----------------------------------------------------------------------------- recognition
def test_recognised_by_version() -> None:
    assert is_distribution_config({"version": 0.1})
    assert is_distribution_config({"version": "0.1"})
    assert not is_distribution_config({"addr": "0.0.0.0:5000"})
    assert not is_distribution_config({"version": 2})


def test_image_default_config_loads_through_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(__import__("os").environ):
        if k.startswith(("REGISTRY_", "MOORAGE_")):
            monkeypatch.delenv(k)
    s = load_settings(REPO / "deploy" / "registry-config.yml")
    assert s.addr == "0.0.0.0:5000" and s.port == 5000
    assert s.data == Path("/var/lib/registry")
    assert s.storage.driver == "filesystem"
    assert s.storage_root == Path("/var/lib/registry/storage")
    assert s.delete_enabled is True
    assert s.auth.mode == "none"


def test_moorage_env_still_wins_over_distribution_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "config.yml"
    cfg.write_text(yaml.safe_dump({**BASE, "http": {"addr": ":5000"}}))
    monkeypatch.setenv("MOORAGE_ADDR", "127.0.0.1:6000")
    monkeypatch.setenv("REGISTRY_HTTP_ADDR", ":7000")
    assert load_settings(cfg).addr == "127.0.0.1:6000"
    monkeypatch.delenv("MOORAGE_ADDR")
    assert load_settings(cfg).addr == "0.0.0.0:7000"


# ----------------------------------------------------------------------------- each key
def test_http_addr_forms() -> None:
    assert mapped({"http": {"addr": ":5000"}})["addr"] == "0.0.0.0:5000"
    assert mapped({"http": {"addr": "127.0.0.1:5001"}})["addr"] == "127.0.0.1:5001"
    assert mapped({"http": {"addr": "[::]:5000"}})["addr"] == ":::5000"
    assert refused({"http": {"addr": "nonsense"}}).count("http.addr") == 1


def test_http_tls() -> None:
    out = mapped({"http": {"tls": {"certificate": "/c.pem", "key": "/k.pem"}}})
    assert out["tls"] == {"certificate": "/c.pem", "key": "/k.pem"}
    assert mapped({"http": {"tls": {"certificate": "/c.pem", "minimumtls": "tls1.2"}}})["tls"] == {"certificate": "/c.pem"}


@pytest.mark.parametrize(
    "tls,name",
    [
        ({"certificate": "/c", "clientcas": ["/ca.pem"]}, "http.tls.clientcas"),
        ({"letsencrypt": {"cachefile": "/x", "email": "a@b"}}, "http.tls.letsencrypt"),
        ({"certificate": "/c", "minimumtls": "tls1.0"}, "http.tls.minimumtls"),
        ({"certificate": "/c", "ciphersuites": ["TLS_AES_128_GCM_SHA256"]}, "http.tls.ciphersuites"),
        ({"key": "/k"}, "http.tls.key"),
        ({"certificate": "/c", "bogus": 1}, "http.tls.bogus"),
    ],
)
def test_http_tls_refusals(tls: dict, name: str) -> None:
    assert name in refused({"http": {"tls": tls}})


@pytest.mark.parametrize(
    "http,name",
    [
        ({"net": "unix"}, "http.net"),
        ({"prefix": "/registry/"}, "http.prefix"),
        ({"debug": {"addr": ":5001"}}, "http.debug"),
        ({"headers": {"X-Custom": ["1"]}}, "http.headers.X-Custom"),
        ({"frobnicate": True}, "http.frobnicate"),
    ],
)
def test_http_refusals(http: dict, name: str) -> None:
    assert name in refused({"http": http})


def test_http_ignored_keys_are_accepted() -> None:
    out = mapped(
        {
            "http": {
                "addr": ":5000",
                "secret": "s3cr3t",
                "host": "https://r.example",
                "relativeurls": True,
                "draintimeout": "60s",
                "http2": {"disabled": False},
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            }
        }
    )
    assert out["addr"] == "0.0.0.0:5000"
    assert "s3cr3t" not in repr(out)


def test_filesystem_root_is_the_data_dir() -> None:
    out = mapped({"storage": {"filesystem": {"rootdirectory": "/srv/reg", "maxthreads": 100}}})
    assert out["data"] == "/srv/reg" and out["storage"]["driver"] == "filesystem"


def test_delete_defaults_off_like_distribution() -> None:
    assert mapped({})["delete_enabled"] is False
    assert mapped({"storage": {**BASE["storage"], "delete": {"enabled": True}}})["delete_enabled"] is True
    assert mapped({"storage": {**BASE["storage"], "delete": {"enabled": "false"}}})["delete_enabled"] is False
    assert "storage.delete.enabled" in refused({"storage": {**BASE["storage"], "delete": {"enabled": "yes please"}}})


def test_upload_purging_age() -> None:
    st = {
        **BASE["storage"],
        "maintenance": {"uploadpurging": {"enabled": True, "age": "168h", "interval": "24h", "dryrun": False}},
    }
    assert mapped({"storage": st})["gc"]["upload_expiry"] == 168 * 3600
    st["maintenance"]["uploadpurging"]["age"] = "1h30m"
    assert mapped({"storage": st})["gc"]["upload_expiry"] == 5400
    st["maintenance"]["uploadpurging"]["age"] = "a week"
    assert "storage.maintenance.uploadpurging.age" in refused({"storage": st})


def test_readonly_refused() -> None:
    st = {**BASE["storage"], "maintenance": {"readonly": {"enabled": True}}}
    assert "storage.maintenance.readonly.enabled" in refused({"storage": st})
    st["maintenance"]["readonly"]["enabled"] = False
    mapped({"storage": st})


def test_s3_keys() -> None:
    out = mapped(
        {
            "storage": {
                "s3": {
                    "accesskey": "AK",
                    "secretkey": "SK",
                    "region": "eu-west-1",
                    "regionendpoint": "http://minio:9000",
                    "bucket": "reg",
                    "rootdirectory": "/prefix/dir",
                    "secure": False,
                    "v4auth": True,
                    "chunksize": 10485760,
                    "multipartcopychunksize": 33554432,
                    "multipartcopymaxconcurrency": 100,
                    "multipartcopythresholdsize": 33554432,
                    "storageclass": "STANDARD",
                    "objectacl": "private",
                    "encrypt": False,
                },
                "redirect": {"disable": True},
                "cache": {"blobdescriptor": "inmemory"},
            }
        }
    )
    s3 = out["storage"]["s3"]
    assert out["storage"]["driver"] == "s3"
    assert s3 == {
        "bucket": "reg",
        "region": "eu-west-1",
        "access_key": "AK",
        "secret_key": "SK",
        "endpoint_url": "http://minio:9000",
        "path_style": True,
        "prefix": "prefix/dir",
        "part_size": 10485760,
    }
    assert out["storage"]["redirect"] is False
    assert "data" not in out


def test_s3_defaults_follow_distribution() -> None:
    out = mapped({"storage": {"s3": {"bucket": "b", "region": "us-east-1"}}})
    assert out["storage"]["redirect"] is True  # registry:2 redirects blob GETs to S3 by default
    assert out["storage"]["s3"]["path_style"] is False and "endpoint_url" not in out["storage"]["s3"]
    out = mapped({"storage": {"s3": {"bucket": "b", "regionendpoint": "rgw:8080", "secure": "false"}}})
    assert out["storage"]["s3"]["endpoint_url"] == "http://rgw:8080"
    out = mapped({"storage": {"s3": {"bucket": "b", "regionendpoint": "rgw:8080"}}})
    assert out["storage"]["s3"]["endpoint_url"] == "https://rgw:8080"


@pytest.mark.parametrize(
    "s3,name",
    [
        ({"encrypt": True}, "storage.s3.encrypt"),
        ({"keyid": "k"}, "storage.s3.keyid"),
        ({"skipverify": True}, "storage.s3.skipverify"),
        ({"v4auth": False}, "storage.s3.v4auth"),
        ({"accelerate": True}, "storage.s3.accelerate"),
        ({"usedualstack": True}, "storage.s3.usedualstack"),
        ({"sessiontoken": "t"}, "storage.s3.sessiontoken"),
        ({"storageclass": "REDUCED_REDUNDANCY"}, "storage.s3.storageclass"),
        ({"objectacl": "public-read"}, "storage.s3.objectacl"),
        ({"chunksize": 1024}, "storage.s3.chunksize"),
        ({"secure": False}, "storage.s3.secure"),
        ({"bucket": ""}, "storage.s3.bucket"),
        ({"whatever": 1}, "storage.s3.whatever"),
    ],
)
def test_s3_refusals(s3: dict, name: str) -> None:
    assert name in refused({"storage": {"s3": {"bucket": "b", **s3}}})


@pytest.mark.parametrize("driver", ["gcs", "azure", "swift", "oss", "inmemory"])
def test_other_drivers_refused(driver: str) -> None:
    msg = refused({"storage": {driver: {}}})
    assert f"storage.{driver}" in msg


def test_two_drivers_refused() -> None:
    assert "more than one driver" in refused({"storage": {"filesystem": {}, "s3": {"bucket": "b"}}})


def test_missing_storage_refused() -> None:
    with pytest.raises(DistributionConfigError, match="storage: missing"):
        to_settings({"version": 0.1})


def test_htpasswd() -> None:
    out = mapped({"auth": {"htpasswd": {"realm": "Registry Realm", "path": "/auth/htpasswd"}}})
    assert out["auth"] == {"mode": "htpasswd", "htpasswd": {"path": "/auth/htpasswd", "realm": "Registry Realm"}}
    assert "auth.htpasswd.path" in refused({"auth": {"htpasswd": {"realm": "r"}}})


@pytest.mark.parametrize(
    "auth,name",
    [
        ({"token": {"realm": "https://a/token", "service": "s", "issuer": "i", "rootcertbundle": "/x"}}, "auth.token"),
        ({"silly": {"realm": "r", "service": "s"}}, "auth.silly"),
        ({"ldap": {}}, "auth.ldap"),
    ],
)
def test_auth_refusals(auth: dict, name: str) -> None:
    assert name in refused({"auth": auth})


def test_log() -> None:
    out = mapped(
        {"log": {"level": "debug", "formatter": "json", "fields": {"service": "registry"}, "accesslog": {"disabled": True}}}
    )
    assert out["log_level"] == "debug" and out["access_log"] is False and out["log_format"] == "json"
    assert mapped({"log": {"formatter": "text"}})["log_format"] == "text"
    assert mapped({"log": {"formatter": "logstash"}})["log_format"] == "json"
    assert "log.formatter" in refused({"log": {"formatter": "xml"}})
    assert mapped({"log": {"level": "warn"}})["log_level"] == "warning"
    assert mapped({"loglevel": "error"})["log_level"] == "error"
    assert "log.level" in refused({"log": {"level": "chatty"}})
    assert "log.hooks" in refused({"log": {"hooks": [{"type": "mail"}]}})


def test_notifications() -> None:
    ep = {
        "name": "alistener",
        "url": "https://hooks.example/ev",
        "headers": {"Authorization": ["Bearer x"]},
        "timeout": "500ms",
        "threshold": 5,
        "backoff": "1s",
        "ignore": {"actions": ["pull"]},
    }
    tree = {"notifications": {"events": {"includereferences": True}, "endpoints": [ep]}}
    from moorage.config import Settings

    if "webhooks" in Settings.model_fields:
        hooks = mapped(tree)["webhooks"]
        assert hooks[0]["url"] == ep["url"] and hooks[0]["headers"] == {"Authorization": "Bearer x"}
        assert hooks[0]["timeout"] == 0.5 and "pull" not in hooks[0]["actions"]
    else:  # refused by name until the webhooks extension is merged
        assert "notifications.endpoints" in refused(tree)
    # no (or only disabled) endpoints: fine either way
    mapped({"notifications": {"endpoints": []}})
    mapped({"notifications": {"endpoints": [{**ep, "disabled": True}]}})
    assert "ignoredmediatypes" in refused({"notifications": {"endpoints": [{**ep, "ignoredmediatypes": ["x"]}]}})


@pytest.mark.parametrize(
    "extra,name",
    [
        ({"middleware": {"storage": [{"name": "cloudfront"}]}}, "middleware"),
        ({"reporting": {"bugsnag": {"apikey": "x"}}}, "reporting"),
        ({"compatibility": {"schema1": {"enabled": True}}}, "compatibility.schema1.enabled"),
        ({"validation": {"manifests": {"urls": {"allow": ["^https?://"]}}}}, "validation.manifests.urls"),
        ({"unheard": 1}, "unheard"),
    ],
)
def test_top_level_refusals(extra: dict, name: str) -> None:
    assert f"{name}:" in refused(extra)


def test_all_refusals_reported_together() -> None:
    msg = refused({"middleware": {"storage": []}, "auth": {"silly": {}}, "http": {"net": "unix"}})
    assert "middleware" in msg and "auth.silly" in msg and "http.net" in msg


def test_proxy_mode() -> None:
    from moorage.config import Settings

    tree = {"proxy": {"remoteurl": "https://registry-1.docker.io", "username": "u", "password": "p", "ttl": "168h"}}
    if "proxy" in Settings.model_fields:  # the pull-through cache (moorage.proxy): mirror everything
        ups = mapped(tree)["proxy"]["upstreams"]
        assert ups == [
            {"name": "remote", "url": "https://registry-1.docker.io", "namespace": "", "username": "u", "password": "p"}
        ]
        assert "proxy.remoteurl" in refused({"proxy": {"username": "u"}})
        assert "proxy.bogus" in refused({"proxy": {"remoteurl": "https://r.example", "bogus": 1}})
    else:
        assert "proxy" in refused(tree)


def test_ignored_top_level_sections_accepted() -> None:
    mapped(
        {
            "health": {"storagedriver": {"enabled": True, "interval": "10s", "threshold": 3}},
            "redis": {"addr": "localhost:6379"},
            "catalog": {"maxentries": 1000},
            "compatibility": {"schema1": {"enabled": False}},
            "validation": {"disabled": True},
        }
    )


def test_secrets_not_in_refusal_messages() -> None:
    msg = refused({"storage": {"s3": {"bucket": "b", "secretkey": "TOPSECRET", "encrypt": True}}})
    assert "TOPSECRET" not in msg


# ----------------------------------------------------------------------------- environment
def test_env_overrides_like_distribution() -> None:
    env = {
        "REGISTRY_HTTP_ADDR": "0.0.0.0:5443",
        "REGISTRY_HTTP_TLS_CERTIFICATE": "/certs/domain.crt",
        "REGISTRY_HTTP_TLS_KEY": "/certs/domain.key",
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/data",
        "REGISTRY_STORAGE_DELETE_ENABLED": "true",
        "REGISTRY_AUTH": "htpasswd",  # ignored by us only if it makes auth a string: see below
        "REGISTRY_AUTH_HTPASSWD_REALM": "Registry Realm",
        "REGISTRY_AUTH_HTPASSWD_PATH": "/auth/htpasswd",
        "REGISTRY_LOG_LEVEL": "debug",
        "OTHER": "x",
    }
    env.pop("REGISTRY_AUTH")
    out = load(dict(BASE), env)
    assert out["addr"] == "0.0.0.0:5443"
    assert out["tls"] == {"certificate": "/certs/domain.crt", "key": "/certs/domain.key"}
    assert out["data"] == "/data" and out["delete_enabled"] is True
    assert out["auth"]["mode"] == "htpasswd" and out["auth"]["htpasswd"]["path"] == "/auth/htpasswd"
    assert out["log_level"] == "debug"


def test_env_switches_storage_driver() -> None:
    env = {
        "REGISTRY_STORAGE": "s3",
        "REGISTRY_STORAGE_S3_BUCKET": "b",
        "REGISTRY_STORAGE_S3_REGION": "r",
        "REGISTRY_STORAGE_S3_ACCESSKEY": "0123",
        "REGISTRY_STORAGE_S3_REGIONENDPOINT": "http://x:9000",
    }
    tree = {**BASE, "storage": {**BASE["storage"], "delete": {"enabled": True}}}
    out = load(tree, env)
    assert out["storage"]["driver"] == "s3" and out["storage"]["s3"]["bucket"] == "b"
    assert out["storage"]["s3"]["access_key"] == "0123"  # stays a string
    assert out["delete_enabled"] is True and "data" not in out


def test_env_refusal_named_by_key() -> None:
    assert "storage.gcs" in refused({}, {"REGISTRY_STORAGE": "gcs"})
    assert "http.debug" in refused({}, {"REGISTRY_HTTP_DEBUG_ADDR": ":5001"})
    with pytest.raises(DistributionConfigError, match="REGISTRY__X: malformed"):
        apply_env_overrides({}, {"REGISTRY__X": "1"})


def test_env_structured_values() -> None:
    env = {"REGISTRY_NOTIFICATIONS_ENDPOINTS": "- name: a\n  url: http://h/\n  disabled: true\n"}
    mapped({}, env)  # parsed as YAML, the only endpoint is disabled
    assert "http.headers.X-Other" in refused({}, {"REGISTRY_HTTP_HEADERS": "X-Other: [v]"})


def test_cli_reports_refusal_in_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yml"
    cfg.write_text(yaml.safe_dump({**BASE, "storage": {"gcs": {"bucket": "b"}}}))
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("REGISTRY_", "MOORAGE_"))}
    env["PYTHONPATH"] = str(REPO)
    cp = subprocess.run(
        [sys.executable, "-m", "moorage.cli", "serve", "--config", str(cfg), "--addr", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=tmp_path,
    )
    assert cp.returncode != 0
    lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "storage.gcs" in lines[0], cp.stderr
