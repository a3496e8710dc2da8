"""A throwaway OpenLDAP server (Debian's ``slapd``) for the directory tests.

    with start_slapd(tmp_path / "ldap") as ldap:
        ldap.url            # ldap://127.0.0.1:PORT
        ldap.add_member("developers", "dave")  /  ldap.remove_member(...)
        ldap.kill()         # the directory goes away (break-glass tests)

A generated ``slapd.conf`` (core, cosine, inetorgperson, nis schemas; one mdb database under
``dc=example,dc=org`` in the work dir) with the ``memberof`` overlay, so both ways of reading
groups are real: a ``(member={dn})`` search and the users' ``memberOf`` attribute.  ACLs as a
site would set them: passwords may be used to bind but read by nobody; the service account
``cn=moorage,ou=services,dc=example,dc=org`` reads the tree; users read themselves.  The
entries are loaded with ``ldapadd`` (ldap-utils) over the network, as an admin would.
Passwords are stored as salted SHA-1 (``{SSHA}``, what ``slappasswd`` makes).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ._procs import ServiceStartError, die_with_parent, free_port, keep_dirs, stop_process, tail, wait_until

SLAPD = "/usr/sbin/slapd"
BASE = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{BASE}"
SERVICE_DN = f"cn=moorage,ou=services,{BASE}"
SERVICE_PASSWORD = "service-Pw-1"

#: name -> (password, groups)
PEOPLE: dict[str, tuple[str, tuple[str, ...]]] = {
    "alice": ("alice-Dir-Pw-1", ("developers",)),
    "bob": ("bob-Dir-Pw-1", ()),
    "carol": ("carol-Dir-Pw-1", ("registry-admins",)),
    "dave": ("dave-Dir-Pw-1", ("developers",)),
    "erin": ("erin-Dir-Pw-1", ("developers",)),
    "frank": ("frank-Dir-Pw-1", ("developers",)),
    # also a local Moorage user in the tests: never merged
    "localdup": ("localdup-Dir-Pw-1", ("developers",)),
}
GROUPS = ("developers", "registry-admins")
#: groupOfNames needs a member; this placeholder entry is in every group.
PLACEHOLDER = f"cn=nobody,{BASE}"


def ssha(password: str) -> str:
    salt = secrets.token_bytes(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


def user_dn(name: str) -> str:
    return f"uid={name},ou=people,{BASE}"


def group_dn(name: str) -> str:
    return f"cn={name},ou=groups,{BASE}"


def _conf(work: Path, root_pw: str) -> str:
    return f"""\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile {work}/slapd.pid
argsfile {work}/slapd.args

database mdb
maxsize 67108864
suffix "{BASE}"
rootdn "{ROOT_DN}"
rootpw {root_pw}
directory {work}/db
overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint true

access to attrs=userPassword
    by self =w
    by anonymous auth
    by * none
access to *
    by dn.exact="{SERVICE_DN}" read
    by self read
    by * none
"""


def _ldif() -> str:
    out = [
        f"dn: {BASE}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n",
        f"dn: {PLACEHOLDER}\nobjectClass: organizationalRole\ncn: nobody\n",
    ]
    for ou in ("people", "groups", "services"):
        out.append(f"dn: ou={ou},{BASE}\nobjectClass: organizationalUnit\nou: {ou}\n")
    out.append(
        f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: moorage\n"
        f"userPassword: {ssha(SERVICE_PASSWORD)}\n"
    )
    for name, (pw, _groups) in PEOPLE.items():
        out.append(
            f"dn: {user_dn(name)}\nobjectClass: inetOrgPerson\nuid: {name}\ncn: {name.title()}\nsn: {name.title()}\n"
            f"userPassword: {ssha(pw)}\n"
        )
    for g in GROUPS:
        members = [PLACEHOLDER] + [user_dn(n) for n, (_p, gs) in PEOPLE.items() if g in gs]
        out.append(f"dn: {group_dn(g)}\nobjectClass: groupOfNames\ncn: {g}\n" + "".join(f"member: {m}\n" for m in members))
    return "\n".join(out)


@dataclass
class Slapd:
    work: Path
    port: int
    root_pw: str
    proc: subprocess.Popen | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.work / "slapd.log"

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.work / "slapd.conf"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [SLAPD, "-f", str(conf), "-h", f"{self.url}/", "-d", "0"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
                start_new_session=True,
            )
        wait_until(self._answers, 20, f"slapd on {self.url}")

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServiceStartError(f"slapd exited with {self.proc.returncode}:\n{tail(self.log)}")
        cp = subprocess.run(
            ["ldapwhoami", "-x", "-H", self.url, "-D", ROOT_DN, "-w", self.root_pw],
            capture_output=True,
            timeout=10,
        )
        return cp.returncode == 0

    def ldap(self, tool: str, ldif: str) -> None:
        cp = subprocess.run(
            [tool, "-x", "-H", self.url, "-D", ROOT_DN, "-w", self.root_pw],
            input=ldif.encode(),
            capture_output=True,
            timeout=30,
        )
        if cp.returncode != 0:
            raise AssertionError(f"{tool} failed ({cp.returncode}): {cp.stderr.decode()[-2000:]}")

    def add_member(self, group: str, name: str) -> None:
        self.ldap("ldapmodify", f"dn: {group_dn(group)}\nchangetype: modify\nadd: member\nmember: {user_dn(name)}\n")

    def remove_member(self, group: str, name: str) -> None:
        self.ldap("ldapmodify", f"dn: {group_dn(group)}\nchangetype: modify\ndelete: member\nmember: {user_dn(name)}\n")

    def delete_user(self, name: str) -> None:
        self._delete(user_dn(name))

    def _delete(self, dn: str) -> None:
        cp = subprocess.run(
            ["ldapdelete", "-x", "-H", self.url, "-D", ROOT_DN, "-w", self.root_pw, dn], capture_output=True, timeout=30
        )
        if cp.returncode != 0:
            raise AssertionError(f"ldapdelete failed: {cp.stderr.decode()[-2000:]}")

    def kill(self) -> None:
        """The directory goes away (SIGKILL: no goodbye to connected clients)."""
        stop_process(self.proc, signal.SIGKILL, grace=5)

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGTERM, grace=5)


@contextmanager
def start_slapd(work: Path) -> Iterator[Slapd]:
    """A running slapd with the people, groups and service account above loaded."""
    if not os.access(SLAPD, os.X_OK) or shutil.which("ldapadd") is None:
        raise FileNotFoundError("slapd / ldap-utils not installed (.ci/install-services.sh)")
    work.mkdir(parents=True, exist_ok=True)
    (work / "db").mkdir(exist_ok=True)
    root_pw = secrets.token_urlsafe(16)
    (work / "slapd.conf").write_text(_conf(work, root_pw))
    srv = Slapd(work, free_port(), root_pw)
    try:
        srv.start()
        srv.ldap("ldapadd", _ldif())
        yield srv
    finally:
        srv.stop()
        if not keep_dirs():
            shutil.rmtree(work, ignore_errors=True)
