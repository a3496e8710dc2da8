"""A reference to a repository in another registry, as ``moorage mirror``, mirror rules and
skopeo write it: ``[docker://|http://|https://]HOST[:PORT]/REPO[:TAG]``.

Parsed where the configuration is validated (mirror rules) and where the mirror runs; it lives
here, with the other names of the registry's domain, so that neither imports the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .names import is_valid_name

_REF = re.compile(r"^(?:(?P<scheme>https?)://)?(?P<host>[^/]+)/(?P<repo>[^:@]+)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?$")


@dataclass(frozen=True, slots=True)
class RegistryRef:
    """``[docker://|http://|https://]HOST[:PORT]/REPO[:TAG]`` (``docker://`` as skopeo writes it)."""

    scheme: str
    host: str
    repo: str
    tag: str | None
    #: The scheme was written (http:// or https://); else https is assumed (see the CLI's
    #: ``--src-tls-verify=false``, which then allows plain HTTP).
    explicit: bool = True

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @classmethod
    def parse(cls, text: str) -> RegistryRef:
        text = text.strip()
        if text.startswith("docker://"):  # skopeo's transport prefix: the same registry reference
            text = text[len("docker://") :]
        m = _REF.match(text)
        if not m:
            raise ValueError(f"{text!r}: expected [docker://|http://|https://]HOST[:PORT]/REPO[:TAG]")
        if not is_valid_name(m.group("repo")):
            raise ValueError(f"{text!r}: {m.group('repo')!r} is not a valid repository name")
        return cls(m.group("scheme") or "https", m.group("host"), m.group("repo"), m.group("tag"), m.group("scheme") is not None)
