"""A ``registry:2`` (CNCF Distribution 2.x) ``config.yml`` read as Moorage settings.

Why: a compose file or Kubernetes manifest that runs ``registry:2`` mounts its configuration at
``/etc/docker/registry/config.yml`` and tunes it with ``REGISTRY_*`` variables.  Swapping the
image for Moorage must keep that working unchanged, or fail at start with one line that names
the key Moorage cannot honour -- never silently run with a different meaning (a registry that
quietly ignores ``auth:`` would be open to the world).

How: :func:`is_distribution_config` recognises the file by its ``version: 0.1``.
:func:`apply_env_overrides` applies ``REGISTRY_*`` variables the way Distribution does
(``REGISTRY_STORAGE_S3_BUCKET`` sets ``storage.s3.bucket``; ``REGISTRY_STORAGE=s3`` switches the
storage driver).  :func:`to_settings` maps every key to Moorage's settings tree (the dict the
YAML source of :class:`moorage.config.Settings` returns) and collects every key it cannot honour;
if there is any, it raises :class:`DistributionConfigError` naming all of them on one line.

Keys accepted without effect are those whose job Moorage does another way (``storage.cache``:
the index is the cache; ``http.secret``: upload state lives in the database), listed in
``_IGNORED`` with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

__all__ = ["DistributionConfigError", "is_distribution_config", "apply_env_overrides", "to_settings", "load"]

ENV_PREFIX = "REGISTRY_"

#: Storage sections that are not a driver (everything else under ``storage`` names a driver).
_STORAGE_SECTIONS = {"delete", "maintenance", "cache", "redirect", "tag"}
_DRIVERS = {"filesystem", "s3"}

#: Keys accepted and ignored, with why that is safe (documentation for readers of the code).
_IGNORED: dict[str, str] = {
    "log.fields": "extra log fields are cosmetic",
    "storage.cache": "Moorage's index answers blob lookups; no descriptor cache is needed",
    "storage.filesystem.maxthreads": "Moorage bounds its own I/O thread pools",
    "storage.tag": "tag lookups come from the index",
    "storage.maintenance.uploadpurging.interval": "expired uploads go with `moorage gc`",
    "storage.s3.multipartcopychunksize": "copy tuning",
    "storage.s3.multipartcopymaxconcurrency": "copy tuning",
    "storage.s3.multipartcopythresholdsize": "copy tuning",
    "storage.s3.loglevel": "S3 client debug logging",
    "storage.s3.useragent": "S3 client user agent",
    "http.secret": "upload state is kept in the database, not in signed client state",
    "http.host": "Moorage answers with the request's Host",
    "http.relativeurls": "Location headers are relative already",
    "http.draintimeout": "Moorage drains connections on SIGTERM by itself",
    "http.http2": "HTTP/1.1 only; clients fall back",
    "http.headers.X-Content-Type-Options": "registry:2's default header; JSON answers are typed",
    "health": "Moorage serves /healthz; storage checks run with every request",
    "redis": "used by Distribution only for the blob descriptor cache",
    "notifications.events": "event payload options",
    "validation.disabled": "Moorage always validates manifests",
    "validation.enabled": "Moorage always validates manifests",
    "catalog": "the catalog is paginated from the index",
    "policy": "repository class policy is not enforced by Distribution either",
}


class DistributionConfigError(ValueError):
    """The registry:2 config uses something Moorage cannot honour (the message names every key)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("registry:2 config: " + "; ".join(problems))


def is_distribution_config(data: Mapping[str, Any]) -> bool:
    """True for a Distribution ``config.yml`` (its mandatory ``version: 0.1``)."""
    return "version" in data and str(data["version"]).strip() in {"0.1", "0.10"}


# --------------------------------------------------------------------------- env overrides
def apply_env_overrides(tree: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Apply ``REGISTRY_*`` variables to ``tree`` (a copy is returned), as Distribution does.

    ``REGISTRY_A_B_C=v`` sets ``a.b.c`` (keys lower-cased; Distribution's keys hold no ``_``).
    ``REGISTRY_STORAGE=<driver>`` replaces the storage driver, keeping the non-driver sections.
    Values stay strings; the mapping converts them to the type each key needs.  Longer paths
    apply after shorter ones, so ``REGISTRY_STORAGE=s3`` plus ``REGISTRY_STORAGE_S3_BUCKET``
    work together whatever the environment's order.
    """
    out: dict[str, Any] = _deep_copy(tree)
    names = sorted((k for k in environ if k.startswith(ENV_PREFIX) and len(k) > len(ENV_PREFIX)), key=lambda k: (k.count("_"), k))
    for name in names:
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("_")]
        if any(not p for p in path):
            raise DistributionConfigError([f"{name}: malformed variable name"])
        value = environ[name]
        if path == ["storage"]:
            storage = out["storage"] if isinstance(out.get("storage"), dict) else {}
            kept = {k: v for k, v in storage.items() if k in _STORAGE_SECTIONS}
            kept[value.strip().lower()] = storage.get(value.strip().lower()) or {}
            out["storage"] = kept
            continue
        node = out
        for key in path[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        node[path[-1]] = value
    return out


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


# --------------------------------------------------------------------------- value helpers
class _Bad(Exception):
    pass


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    raise _Bad(f"expected true or false, got {value!r}")


def _str(value: Any) -> str:
    if isinstance(value, (dict, list)) or value is None:
        raise _Bad("expected a string")
    return str(value)


def _int(value: Any) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise _Bad(f"expected an integer, got {value!r}") from None


def _structured(value: Any) -> Any:
    """Lists/maps given through the environment arrive as YAML text (Distribution parses them)."""
    if isinstance(value, str):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            raise _Bad("not valid YAML") from None
    return value


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(value: Any) -> float:
    """A Go duration (``168h``, ``1h30m``, ``500ms``) in seconds; bare numbers are nanoseconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) / 1e9
    text = _str(value).strip()
    if not text or _DURATION_PART.sub("", text) != "":
        raise _Bad(f"expected a duration like 168h or 10m, got {value!r}")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


# --------------------------------------------------------------------------- the mapping
class _Mapper:
    """Walks the Distribution tree once; every key is mapped, ignored on purpose, or refused."""

    def __init__(self, tree: Mapping[str, Any]) -> None:
        self.tree = tree
        self.out: dict[str, Any] = {}
        self.problems: list[str] = []

    # -- helpers ---------------------------------------------------------------------------
    def set(self, dotted: str, value: Any) -> None:
        node = self.out
        parts = dotted.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value

    def refuse(self, key: str, why: str) -> None:
        self.problems.append(f"{key}: {why}")

    def section(self, key: str, value: Any) -> dict[str, Any]:
        if value is None or value == "":
            return {}
        if not isinstance(value, dict):
            self.refuse(key, "expected a mapping")
            return {}
        return value

    def convert(self, key: str, fn: Any, value: Any) -> Any:
        try:
            return fn(value)
        except _Bad as exc:
            self.refuse(key, str(exc))
            return None

    def leftovers(self, prefix: str, section: Mapping[str, Any], handled: Iterable[str]) -> None:
        known = set(handled)
        for key in section:
            full = f"{prefix}.{key}" if prefix else key
            if key in known or full in _IGNORED:
                continue
            self.refuse(full, "not supported by Moorage")

    # -- sections --------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t = self.tree
        handlers = {
            "version": lambda v: None,
            "log": self.log,
            "loglevel": lambda v: self.log({"level": v}),
            "storage": self.storage,
            "http": self.http,
            "auth": self.auth,
            "notifications": self.notifications,
            "compatibility": self.compatibility,
            "validation": self.validation,
        }
        for key, value in t.items():
            if key in handlers:
                handlers[key](value)
            elif key in _IGNORED:
                continue
            elif key == "proxy":
                self.proxy(value)
            elif key in {"middleware", "reporting"}:
                self.refuse(key, "not supported by Moorage")
            else:
                self.refuse(key, "unknown key")
        if "storage" not in t:
            self.refuse("storage", "missing (registry:2 requires a storage driver)")
        if self.problems:
            raise DistributionConfigError(self.problems)
        return self.out

    def log(self, value: Any) -> None:
        sec = self.section("log", value)
        if "level" in sec:
            level = self.convert("log.level", _str, sec["level"])
            if level is not None:
                level = level.strip().lower()
                if level not in {"error", "warn", "warning", "info", "debug"}:
                    self.refuse("log.level", f"unknown level {level!r}")
                else:
                    self.set("log_level", "warning" if level == "warn" else level)
        if "formatter" in sec:
            fmt = self.convert("log.formatter", _str, sec["formatter"])
            if fmt is not None:
                fmt = fmt.strip().lower()
                if fmt not in {"text", "json", "logstash"}:
                    self.refuse("log.formatter", f"unknown formatter {fmt!r} (text, json or logstash)")
                else:  # logstash is JSON for a collector
                    self.set("log_format", "text" if fmt == "text" else "json")
        if "accesslog" in sec:
            acc = self.section("log.accesslog", sec["accesslog"])
            if "disabled" in acc:
                disabled = self.convert("log.accesslog.disabled", _bool, acc["disabled"])
                if disabled is not None:
                    self.set("access_log", not disabled)
            self.leftovers("log.accesslog", acc, ["disabled"])
        if sec.get("hooks"):
            self.refuse("log.hooks", "mail hooks are not supported")
        self.leftovers("log", sec, ["level", "formatter", "accesslog", "hooks"])

    def storage(self, value: Any) -> None:
        sec = self.section("storage", value)
        drivers = [k for k in sec if k not in _STORAGE_SECTIONS]
        if len(drivers) > 1:
            self.refuse("storage", f"more than one driver given ({', '.join(sorted(drivers))})")
        for driver in drivers:
            if driver == "filesystem":
                self.filesystem(sec[driver])
            elif driver == "s3":
                self.s3(sec[driver])
            else:
                self.refuse(f"storage.{driver}", "only the filesystem and s3 storage drivers are supported")
        # Distribution's default is "deletes off"; keep that meaning.
        delete = self.section("storage.delete", sec.get("delete"))
        enabled = False
        if "enabled" in delete:
            enabled = bool(self.convert("storage.delete.enabled", _bool, delete["enabled"]))
        self.set("delete_enabled", enabled)
        self.leftovers("storage.delete", delete, ["enabled"])
        self.maintenance(self.section("storage.maintenance", sec.get("maintenance")))
        redirect = self.section("storage.redirect", sec.get("redirect"))
        disable = False
        if "disable" in redirect:
            disable = bool(self.convert("storage.redirect.disable", _bool, redirect["disable"]))
        if "s3" in drivers:  # Distribution redirects blob GETs to S3 unless disabled
            self.set("storage.redirect", not disable)
        self.leftovers("storage.redirect", redirect, ["disable"])

    def maintenance(self, sec: dict[str, Any]) -> None:
        purge = self.section("storage.maintenance.uploadpurging", sec.get("uploadpurging"))
        enabled = True
        if "enabled" in purge:
            enabled = bool(self.convert("storage.maintenance.uploadpurging.enabled", _bool, purge["enabled"]))
        dry = bool(self.convert("storage.maintenance.uploadpurging.dryrun", _bool, purge.get("dryrun", False)))
        if "age" in purge and enabled and not dry:
            age = self.convert("storage.maintenance.uploadpurging.age", _duration, purge["age"])
            if age is not None:
                self.set("gc.upload_expiry", max(1, int(age)))
        self.leftovers("storage.maintenance.uploadpurging", purge, ["enabled", "age", "dryrun"])
        readonly = self.section("storage.maintenance.readonly", sec.get("readonly"))
        if "enabled" in readonly and self.convert("storage.maintenance.readonly.enabled", _bool, readonly["enabled"]):
            self.refuse("storage.maintenance.readonly.enabled", "read-only mode is not supported")
        self.leftovers("storage.maintenance.readonly", readonly, ["enabled"])
        self.leftovers("storage.maintenance", sec, ["uploadpurging", "readonly"])

    def filesystem(self, value: Any) -> None:
        sec = self.section("storage.filesystem", value)
        self.set("storage.driver", "filesystem")
        # The data directory (index database + blobs) lives in the registry:2 root directory,
        # beside any docker/registry/v2 tree a previous registry:2 left there.
        root = self.convert("storage.filesystem.rootdirectory", _str, sec.get("rootdirectory", "/var/lib/registry"))
        if root is not None:
            self.set("data", root)
        self.leftovers("storage.filesystem", sec, ["rootdirectory"])

    def s3(self, value: Any) -> None:
        sec = self.section("storage.s3", value)
        k = "storage.s3"
        self.set("storage.driver", "s3")
        strings = {"bucket": "bucket", "region": "region", "accesskey": "access_key", "secretkey": "secret_key"}
        for src, dst in strings.items():
            if src in sec and sec[src] not in (None, ""):
                v = self.convert(f"{k}.{src}", _str, sec[src])
                if v is not None:
                    self.set(f"storage.s3.{dst}", v)
        if not sec.get("bucket"):
            self.refuse(f"{k}.bucket", "required")
        secure = True
        if "secure" in sec:
            secure = bool(self.convert(f"{k}.secure", _bool, sec["secure"]))
        endpoint = sec.get("regionendpoint")
        if endpoint:
            url = self.convert(f"{k}.regionendpoint", _str, endpoint) or ""
            if "://" not in url:
                url = ("https://" if secure else "http://") + url
            self.set("storage.s3.endpoint_url", url)
        elif not secure:
            self.refuse(f"{k}.secure", "false is only supported together with regionendpoint")
        # aws-sdk-go in Distribution 2.x uses path-style addressing whenever an endpoint is given.
        path_style = bool(endpoint)
        if "forcepathstyle" in sec:
            path_style = bool(self.convert(f"{k}.forcepathstyle", _bool, sec["forcepathstyle"]))
        self.set("storage.s3.path_style", path_style)
        if "rootdirectory" in sec and sec["rootdirectory"]:
            prefix = (self.convert(f"{k}.rootdirectory", _str, sec["rootdirectory"]) or "").strip("/")
            if prefix:
                self.set("storage.s3.prefix", prefix)
        if "chunksize" in sec:
            size = self.convert(f"{k}.chunksize", _int, sec["chunksize"])
            if size is not None:
                if size < 5 << 20:
                    self.refuse(f"{k}.chunksize", "must be at least 5 MiB (5242880)")
                else:
                    self.set("storage.s3.part_size", size)
        if "v4auth" in sec and not self.convert(f"{k}.v4auth", _bool, sec["v4auth"]):
            self.refuse(f"{k}.v4auth", "only AWS signature v4 is supported")
        for flag in ("encrypt", "skipverify", "accelerate", "usedualstack"):
            if flag in sec and self.convert(f"{k}.{flag}", _bool, sec[flag]):
                self.refuse(f"{k}.{flag}", "true is not supported")
        if sec.get("keyid"):
            self.refuse(f"{k}.keyid", "KMS encryption is not supported")
        if sec.get("sessiontoken"):
            self.refuse(f"{k}.sessiontoken", "temporary credentials are not supported")
        if "storageclass" in sec and str(sec["storageclass"]).upper() not in {"STANDARD", ""}:
            self.refuse(f"{k}.storageclass", "only STANDARD is supported")
        if "objectacl" in sec and str(sec["objectacl"]) not in {"private", ""}:
            self.refuse(f"{k}.objectacl", "only private is supported")
        self.leftovers(
            k,
            sec,
            [
                "bucket",
                "region",
                "accesskey",
                "secretkey",
                "secure",
                "regionendpoint",
                "forcepathstyle",
                "rootdirectory",
                "chunksize",
                "v4auth",
                "encrypt",
                "skipverify",
                "accelerate",
                "usedualstack",
                "keyid",
                "sessiontoken",
                "storageclass",
                "objectacl",
            ],
        )

    def http(self, value: Any) -> None:
        sec = self.section("http", value)
        if "addr" in sec:
            addr = self.convert("http.addr", _str, sec["addr"])
            if addr is not None:
                self.set("addr", _listen_addr(addr))
        net = str(sec.get("net", "tcp") or "tcp")
        if net != "tcp":
            self.refuse("http.net", f"{net!r} listeners are not supported (tcp only)")
        if sec.get("prefix") not in (None, "", "/"):
            self.refuse("http.prefix", "serving under a path prefix is not supported")
        if sec.get("debug"):
            self.refuse("http.debug", "no separate debug listener; Moorage serves /metrics on the main address")
        headers = self.section("http.headers", _structured(sec.get("headers")))
        self.leftovers("http.headers", headers, [])
        tls = self.section("http.tls", sec.get("tls"))
        if tls.get("certificate"):
            self.set("tls.certificate", self.convert("http.tls.certificate", _str, tls["certificate"]))
            if tls.get("key"):
                self.set("tls.key", self.convert("http.tls.key", _str, tls["key"]))
        elif tls.get("key"):
            self.refuse("http.tls.key", "given without http.tls.certificate")
        if tls.get("clientcas"):
            self.refuse("http.tls.clientcas", "client certificate authentication is not supported")
        if tls.get("letsencrypt"):
            self.refuse("http.tls.letsencrypt", "ACME certificates are not supported; mount a certificate")
        if tls.get("minimumtls") not in (None, "", "tls1.2"):
            self.refuse("http.tls.minimumtls", "only tls1.2 (the default) is supported")
        if tls.get("ciphersuites"):
            self.refuse("http.tls.ciphersuites", "choosing cipher suites is not supported")
        self.leftovers("http.tls", tls, ["certificate", "key", "clientcas", "letsencrypt", "minimumtls", "ciphersuites"])
        self.leftovers("http", sec, ["addr", "net", "prefix", "debug", "headers", "tls"])

    def auth(self, value: Any) -> None:
        sec = self.section("auth", value)
        if len(sec) > 1:
            self.refuse("auth", f"more than one auth method given ({', '.join(sorted(sec))})")
        for method, body in sec.items():
            if method == "htpasswd":
                hp = self.section("auth.htpasswd", body)
                if not hp.get("path"):
                    self.refuse("auth.htpasswd.path", "required")
                else:
                    self.set("auth.mode", "htpasswd")
                    self.set("auth.htpasswd.path", self.convert("auth.htpasswd.path", _str, hp["path"]))
                    if hp.get("realm"):
                        self.set("auth.htpasswd.realm", self.convert("auth.htpasswd.realm", _str, hp["realm"]))
                self.leftovers("auth.htpasswd", hp, ["path", "realm"])
            elif method == "token":
                self.refuse(
                    "auth.token", "an external token server is not supported (Moorage issues its own tokens: auth.mode=token)"
                )
            elif method == "silly":
                self.refuse("auth.silly", "not supported")
            else:
                self.refuse(f"auth.{method}", "unknown auth method")

    def notifications(self, value: Any) -> None:
        sec = self.section("notifications", value)
        endpoints = _structured(sec.get("endpoints")) or []
        if not isinstance(endpoints, list):
            self.refuse("notifications.endpoints", "expected a list")
            endpoints = []
        hooks = []
        for i, ep in enumerate(endpoints):
            key = f"notifications.endpoints[{i}]"
            if not isinstance(ep, dict):
                self.refuse(key, "expected a mapping")
                continue
            if ep.get("disabled") is True or str(ep.get("disabled")).lower() == "true":
                continue
            hook = self.webhook(key, ep)
            if hook is not None:
                hooks.append(hook)
        if hooks:
            self.set("webhooks", hooks)
        self.leftovers("notifications", sec, ["endpoints"])

    def webhook(self, key: str, ep: dict[str, Any]) -> dict[str, Any] | None:
        if not ep.get("url"):
            self.refuse(f"{key}.url", "required")
            return None
        hook: dict[str, Any] = {
            "name": str(ep.get("name") or f"endpoint{key[-2]}"),
            "url": str(ep["url"]),
            "format": "distribution",
            "actions": ["push", "pull", "delete", "mount"],
            "targets": ["manifest", "tag", "blob"],
        }
        if ep.get("headers"):
            hdrs = ep["headers"]
            if not isinstance(hdrs, dict):
                self.refuse(f"{key}.headers", "expected a mapping of lists")
            else:
                hook["headers"] = {str(h): ", ".join(map(str, v)) if isinstance(v, list) else str(v) for h, v in hdrs.items()}
        if "timeout" in ep:
            t = self.convert(f"{key}.timeout", _duration, ep["timeout"])
            if t is not None:
                hook["timeout"] = min(300.0, max(0.001, t))
        ignore = ep.get("ignore") or {}
        if not isinstance(ignore, dict):
            self.refuse(f"{key}.ignore", "expected a mapping")
            ignore = {}
        if ignore.get("actions"):
            hook["actions"] = [a for a in hook["actions"] if a not in set(map(str, ignore["actions"]))]
        if ignore.get("mediatypes") or ep.get("ignoredmediatypes"):
            self.refuse(f"{key}.ignoredmediatypes", "filtering events by media type is not supported")
        for k in ep:
            if k not in {"name", "url", "headers", "timeout", "threshold", "backoff", "ignore", "ignoredmediatypes", "disabled"}:
                self.refuse(f"{key}.{k}", "not supported by Moorage")
        return hook

    def proxy(self, value: Any) -> None:
        """Distribution's pull-through cache mode: the whole registry mirrors one upstream."""
        sec = self.section("proxy", value)
        if not sec.get("remoteurl"):
            self.refuse("proxy.remoteurl", "required")
            return
        upstream: dict[str, Any] = {
            "name": "remote",
            "url": self.convert("proxy.remoteurl", _str, sec["remoteurl"]),
            "namespace": "",
        }
        for key in ("username", "password"):
            if sec.get(key):
                upstream[key] = self.convert(f"proxy.{key}", _str, sec[key])
        self.set("proxy.upstreams", [upstream])
        # proxy.ttl (how long Distribution keeps cached content) has no counterpart: Moorage keeps
        # cached content until GC removes it, and re-validates tags by its own tag_ttl.
        self.leftovers("proxy", sec, ["remoteurl", "username", "password", "ttl"])

    def compatibility(self, value: Any) -> None:
        sec = self.section("compatibility", value)
        s1 = self.section("compatibility.schema1", sec.get("schema1"))
        if "enabled" in s1 and self.convert("compatibility.schema1.enabled", _bool, s1["enabled"]):
            self.refuse("compatibility.schema1.enabled", "schema 1 manifests are not supported")
        if s1.get("signingkeyfile"):
            self.refuse("compatibility.schema1.signingkeyfile", "schema 1 manifests are not supported")
        self.leftovers("compatibility.schema1", s1, ["enabled", "signingkeyfile"])
        self.leftovers("compatibility", sec, ["schema1"])

    def validation(self, value: Any) -> None:
        sec = self.section("validation", value)
        manifests = self.section("validation.manifests", sec.get("manifests"))
        urls = self.section("validation.manifests.urls", manifests.get("urls"))
        if urls.get("allow") or urls.get("deny"):
            self.refuse("validation.manifests.urls", "foreign-layer URL rules are not supported")
        self.leftovers("validation.manifests", manifests, ["urls"])
        self.leftovers("validation", sec, ["manifests"])


def _listen_addr(addr: str) -> str:
    """Go's ``:5000`` / ``[::]:5000`` into Moorage's ``HOST:PORT``."""
    addr = addr.strip()
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise_bad = DistributionConfigError([f"http.addr: expected HOST:PORT, got {addr!r}"])
        raise raise_bad
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return f"{host or '0.0.0.0'}:{port}"


def to_settings(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Moorage's settings tree for a Distribution config (env overrides already applied)."""
    return _Mapper(tree).run()


def load(data: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``REGISTRY_*`` overrides applied to ``data``, then mapped (what the config loader calls)."""
    return to_settings(apply_env_overrides(dict(data), environ))
