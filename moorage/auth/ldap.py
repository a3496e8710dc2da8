"""LDAP / Active Directory: who a directory user is, whether their password is right, and
which groups they are in -- with ldap3 (pure Python), never hand-written protocol code.

A sign-in is: connect (``ldaps://``, or ``ldap://`` + StartTLS when configured), bind as the
service account, search ``user_base`` for ``user_filter`` with the name escaped per RFC 4515,
read the groups (a ``group_filter`` search under ``group_base`` and/or the user's
``member_of_attribute``), then re-bind on the same connection as the DN found with the
password given.  An empty password is refused before anything is sent: many servers answer
an empty-password bind as an anonymous "success" (RFC 4513 5.1.2, unauthenticated bind).

ldap3 blocks, so every operation runs on a small thread pool of its own (not the default
executor that blob reads use) and is bounded twice: ldap3's own connect/receive timeouts and
an overall ``asyncio.timeout``.  An outage -- nothing answers, TLS fails, the service account
is refused -- raises :class:`DirectoryUnavailable` (503, naming the server), never a 401 that
reads as a wrong password; the last outage is kept for ``/readyz`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .. import errors
from ..config import LdapSettings

log = logging.getLogger("moorage.auth.ldap")

#: Threads for directory calls per process (each holds one connection for one operation).
THREADS = 4
#: Directory calls waiting for a thread beyond which a sign-in is refused at once (503).
MAX_QUEUED = 64
#: Bounds on what one directory answer may hold.
MAX_GROUPS = 1000
MAX_NAME = 255


class DirectoryUnavailable(errors.Unavailable):
    """The directory does not answer (or refuses the service account): a retryable outage."""

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "5"})


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """A directory user as read now: DN and the names of the groups they are in."""

    dn: str
    groups: frozenset[str]


def escape_filter_value(value: str) -> str:
    """RFC 4515 escaping for a value put into a search filter (``*``, ``(``, ``)``, ``\\``, NUL)."""
    from ldap3.utils.conv import escape_filter_chars

    return str(escape_filter_chars(value))


def user_filter(settings: LdapSettings, username: str) -> str:
    return settings.user_filter.replace("{username}", escape_filter_value(username))


def group_filter(settings: LdapSettings, username: str, dn: str) -> str:
    return settings.group_filter.replace("{dn}", escape_filter_value(dn)).replace("{username}", escape_filter_value(username))


def _first_rdn_value(dn: str) -> str | None:
    """``cn=devs,ou=groups,dc=example,dc=org`` -> ``devs``."""
    from ldap3.utils.dn import parse_dn

    try:
        parts = parse_dn(dn)
    except Exception:  # noqa: BLE001 - a malformed DN from the server names no group
        return None
    return str(parts[0][1]) if parts else None


class LdapDirectory:
    """One configured LDAP server (``auth.ldap``)."""

    def __init__(self, settings: LdapSettings) -> None:
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="moorage-ldap")
        self._pending = 0
        self._lock = threading.Lock()
        #: The last outage seen (None after the next success): for /readyz and /metrics.
        self.last_error: str | None = None
        self.errors_total = 0
        self.operations_total = 0

    @property
    def url(self) -> str:
        return self.settings.url

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the public, async side -------------------------------------------------------------
    async def authenticate(self, username: str, password: str) -> DirectoryEntry | None:
        """The entry of ``username`` if ``password`` is theirs; None if there is no such user
        or the password is wrong; :class:`DirectoryUnavailable` on an outage."""
        if not password:  # never an (unauthenticated) empty-password bind
            return None
        entry: DirectoryEntry | None = await self._call(self._authenticate, username, password)
        return entry

    async def lookup(self, username: str) -> DirectoryEntry | None:
        """The entry of ``username`` as the service account reads it now (None: not there)."""
        entry: DirectoryEntry | None = await self._call(self._lookup, username)
        return entry

    async def probe(self) -> None:
        """Bind as the service account (``/readyz``); raises :class:`DirectoryUnavailable`."""
        await self._call(self._probe)

    def status(self) -> str:
        return "ok" if self.last_error is None else self.last_error

    async def _call(self, fn: Any, *args: Any) -> Any:
        with self._lock:
            if self._pending >= THREADS + MAX_QUEUED:
                raise DirectoryUnavailable(f"the LDAP server at {self.url} is busy (too many sign-ins waiting); retry")
            self._pending += 1
        s = self.settings
        budget = s.connect_timeout + 4 * s.timeout
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(budget):
                result = await loop.run_in_executor(self._pool, fn, *args)
        except TimeoutError:
            self._failed(f"the LDAP server at {self.url} does not answer (no answer within {budget:g} s)")
        except DirectoryUnavailable as exc:
            self._failed(exc.message)
        finally:
            with self._lock:
                self._pending -= 1
        self.operations_total += 1
        self.last_error = None
        return result

    def _failed(self, message: str) -> None:
        self.errors_total += 1
        if self.last_error != message:
            log.warning("%s", message)
        self.last_error = message
        raise DirectoryUnavailable(message)

    # -- the blocking side (pool threads) ---------------------------------------------------
    def _server(self) -> Any:
        from ldap3 import NONE, Server, Tls

        s = self.settings
        tls = None
        if s.url.startswith("ldaps://") or s.start_tls:
            tls = Tls(
                validate=ssl.CERT_REQUIRED,
                version=ssl.PROTOCOL_TLS_CLIENT,
                ca_certs_file=str(s.ca_file) if s.ca_file else None,
            )
        return Server(s.url, use_ssl=s.url.startswith("ldaps://"), tls=tls, connect_timeout=s.connect_timeout, get_info=NONE)

    def _connect(self) -> Any:
        """A connection bound as the service account (or anonymous without ``bind_dn``)."""
        from ldap3 import Connection
        from ldap3.core.exceptions import LDAPException

        s = self.settings
        conn = Connection(
            self._server(),
            user=s.bind_dn or None,
            password=s.bind_password.get_secret_value() or None,
            receive_timeout=max(1, math.ceil(s.timeout)),  # ldap3 packs it as an integer
            read_only=True,
            raise_exceptions=False,
            auto_referrals=False,
        )
        try:
            conn.open()
            if s.start_tls and not conn.start_tls():
                raise DirectoryUnavailable(f"the LDAP server at {self.url} refused StartTLS")
            if s.bind_dn and not s.bind_password.get_secret_value():
                raise DirectoryUnavailable("auth.ldap.bind_dn is set without bind_password: refusing an unauthenticated bind")
            if not conn.bind():
                desc = (conn.result or {}).get("description", "refused")
                raise DirectoryUnavailable(f"the LDAP server at {self.url} refused the service account ({desc})")
        except (LDAPException, OSError) as exc:
            conn.unbind()
            raise DirectoryUnavailable(f"the LDAP server at {self.url} does not answer ({type(exc).__name__})") from None
        except BaseException:
            conn.unbind()
            raise
        return conn

    def _find(self, conn: Any, username: str) -> tuple[str, dict[str, Any]] | None:
        from ldap3 import SUBTREE

        s = self.settings
        attrs = [s.username_attribute] + ([s.member_of_attribute] if s.member_of_attribute else [])
        ok = conn.search(
            s.user_base,
            user_filter(s, username),
            search_scope=SUBTREE,
            attributes=attrs,
            size_limit=2,
            time_limit=max(1, int(s.timeout)),
        )
        result = conn.result or {}
        if not ok and result.get("result") not in (0, 4, 32):  # success, sizeLimitExceeded, noSuchObject
            raise DirectoryUnavailable(f"the LDAP server at {self.url} failed the user search ({result.get('description')})")
        entries = [e for e in (conn.response or []) if e.get("type") == "searchResEntry"]
        if len(entries) != 1:
            if len(entries) > 1:
                log.warning("auth.ldap.user_filter matches more than one entry for one name: refusing the sign-in")
            return None
        entry = entries[0]
        found = entry.get("attributes", {}).get(s.username_attribute)
        values = found if isinstance(found, list) else [found]
        if not any(isinstance(v, str) and v.lower() == username.lower() for v in values):
            return None  # the filter matched on something else than the sign-in name
        return str(entry["dn"]), dict(entry.get("attributes", {}))

    def _groups(self, conn: Any, username: str, dn: str, attributes: dict[str, Any]) -> frozenset[str]:
        from ldap3 import SUBTREE

        s = self.settings
        names: set[str] = set()
        if s.member_of_attribute:
            raw = attributes.get(s.member_of_attribute) or []
            for gdn in raw if isinstance(raw, list) else [raw]:
                name = _first_rdn_value(str(gdn))
                if name:
                    names.add(name)
        if s.group_filter and s.group_base:
            ok = conn.search(
                s.group_base,
                group_filter(s, username, dn),
                search_scope=SUBTREE,
                attributes=[s.group_name_attribute],
                size_limit=MAX_GROUPS,
                time_limit=max(1, int(s.timeout)),
            )
            result = conn.result or {}
            if not ok and result.get("result") not in (0, 4, 32):
                raise DirectoryUnavailable(f"the LDAP server at {self.url} failed the group search ({result.get('description')})")
            for entry in conn.response or []:
                if entry.get("type") != "searchResEntry":
                    continue
                value = entry.get("attributes", {}).get(s.group_name_attribute)
                for v in value if isinstance(value, list) else [value]:
                    if isinstance(v, str) and v:
                        names.add(v)
        return frozenset(n[:MAX_NAME] for n in sorted(names)[:MAX_GROUPS])

    def _lookup(self, username: str) -> DirectoryEntry | None:
        from ldap3.core.exceptions import LDAPException

        conn = self._connect()
        try:
            found = self._find(conn, username)
            if found is None:
                return None
            dn, attributes = found
            return DirectoryEntry(dn, self._groups(conn, username, dn, attributes))
        except LDAPException as exc:
            raise DirectoryUnavailable(f"the LDAP server at {self.url} does not answer ({type(exc).__name__})") from None
        finally:
            conn.unbind()

    def _authenticate(self, username: str, password: str) -> DirectoryEntry | None:
        from ldap3.core.exceptions import LDAPException

        conn = self._connect()
        try:
            found = self._find(conn, username)
            if found is None:
                return None
            dn, attributes = found
            groups = self._groups(conn, username, dn, attributes)
            if conn.rebind(user=dn, password=password):
                return DirectoryEntry(dn, groups)
            code = (conn.result or {}).get("result")
            if code in (49, 50, 53):  # invalidCredentials, insufficientAccessRights, unwillingToPerform
                return None
            raise DirectoryUnavailable(
                f"the LDAP server at {self.url} failed the user bind ({(conn.result or {}).get('description')})"
            )
        except LDAPException as exc:
            # ldap3 raises LDAPBindError from rebind() for a refused bind on some servers
            from ldap3.core.exceptions import LDAPBindError

            if isinstance(exc, LDAPBindError):
                return None
            raise DirectoryUnavailable(f"the LDAP server at {self.url} does not answer ({type(exc).__name__})") from None
        finally:
            conn.unbind()

    def _probe(self) -> None:
        self._connect().unbind()

    # -- metrics ------------------------------------------------------------------------------
    def collect(self) -> Iterator[Any]:
        """prometheus_client custom-collector protocol: ``moorage_ldap_up`` and error counts."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        up = GaugeMetricFamily("moorage_ldap_up", "1 if the last LDAP call succeeded, 0 after an outage", labels=["url"])
        up.add_metric([self.url], 0.0 if self.last_error else 1.0)
        yield up
        errs = CounterMetricFamily("moorage_ldap_errors", "LDAP calls that failed for an outage", labels=["url"])
        errs.add_metric([self.url], float(self.errors_total))
        yield errs
        ops = CounterMetricFamily("moorage_ldap_operations", "LDAP calls that completed", labels=["url"])
        ops.add_metric([self.url], float(self.operations_total))
        yield ops
