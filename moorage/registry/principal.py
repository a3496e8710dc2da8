"""Who asks for an operation, and through which face.

Every service operation (registry content, accounts, policies, webhooks, cache) takes a
:class:`Principal` explicitly instead of reading it from an HTTP request: the rule "who may" is
decided once, in the service, whichever face -- ``/v2``, the admin API, the web UI, the CLI, the
pull-through cache, mirror, import or a scheduled job -- made the call, and the audit entry names
both the actor and the face.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .. import errors

#: The ways into the registry.  ``system`` faces (cli run by the operator, jobs, import) act with
#: the rights of whoever can run the process on the data directory.
Face = Literal["v2", "api", "ui", "cli", "proxy", "mirror", "import", "job"]
FACES: tuple[Face, ...] = ("v2", "api", "ui", "cli", "proxy", "mirror", "import", "job")


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one operation.

    ``name`` is the account (``None``: anonymous).  ``admin`` is the account's administrator
    flag as the authenticator established it (a scoped token's admin flag is already dropped).
    ``token_id`` / ``token_expires`` / ``scope`` describe the access token the call came with
    (``scope`` ``None``: unscoped), so that what a token may create is bounded by the token
    itself (the accounts service re-reads the token's row by ``token_id``: the row, not the
    face, is the authority on its expiry and scope).  ``address`` is the client's address and
    ``user_agent`` its ``User-Agent`` where a network face knows them.
    """

    name: str | None
    face: Face
    admin: bool = False
    token_id: str | None = None
    token_expires: float | None = None
    scope: tuple[str, ...] | None = None
    address: str | None = None
    #: Request details an audit entry and a webhook payload carry (network faces only).
    user_agent: str = ""
    request_id: str = ""
    host: str = ""
    method: str = ""
    #: ``may(action, repository)``: what the caller's credentials allow, as the face established
    #: them (a bearer token's verified ``access`` claims, a web session's rights); ``None``: no
    #: limit to check here -- authentication is off, or the operator, a job or the cache acts.
    may: Callable[[str, str], bool] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def anonymous(cls, face: Face, address: str | None = None) -> Principal:
        return cls(None, face, address=address)

    @classmethod
    def operator(cls, face: Face = "cli", name: str | None = None) -> Principal:
        """Whoever runs the process on the data directory (the CLI, import, scheduled jobs):
        the filesystem permissions on the data already give them everything."""
        return cls(name or "operator", face, admin=True)

    @classmethod
    def job(cls, name: str, face: Face = "job") -> Principal:
        """A rule of the registry acting on its own (``gc``, ``retention``): the actor of the
        deletes a collection or a retention run makes.  ``face`` says how the run was started
        (``job``: by the scheduler; ``cli``: ``moorage gc``/``moorage retention apply``;
        ``ui``: the web UI's GC page, whose ``gc.run`` audit entry names the person)."""
        return cls(name, face, admin=True)

    def require(self, action: str, repository: str) -> None:
        """Authorize one step of an operation: DENIED unless this caller may ``action``
        (``pull``, ``push``, ``delete``) on ``repository``.  Every state-changing operation of
        the registry service asks this first, whichever face called it."""
        if self.may is not None and not self.may(action, repository):
            raise errors.Denied(
                f"{self.actor} may not {action} in {repository}",
                detail=[{"Type": "repository", "Name": repository, "Action": action}],
            )

    @property
    def scoped(self) -> bool:
        """Signed in with a scoped access token (less than the account's full rights)."""
        return self.scope is not None

    @property
    def actor(self) -> str:
        """The name an audit entry records (``anonymous`` for nobody)."""
        return self.name or "anonymous"
