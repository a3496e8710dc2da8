"""Content digests: parsing, validation and hashing (sha256, sha512)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import DigestInvalid

ALGORITHMS: dict[str, tuple[Callable[[], hashlib._Hash], int]] = {
    "sha256": (hashlib.sha256, 64),
    "sha512": (hashlib.sha512, 128),
}
_DIGEST_RE = re.compile(r"([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``algorithm:hex``; only algorithms we can verify are accepted."""
        m = _DIGEST_RE.fullmatch(text or "")
        if not m:
            raise DigestInvalid("invalid digest", detail={"digest": (text or "")[:200]})
        algo, hexpart = m.group(1), m.group(2)
        spec = ALGORITHMS.get(algo)
        if spec is None:
            raise DigestInvalid(f"unsupported digest algorithm {algo!r}", detail={"digest": text[:200]})
        if len(hexpart) != spec[1] or not re.fullmatch(r"[a-f0-9]+", hexpart):
            raise DigestInvalid("invalid digest encoding", detail={"digest": text[:200]})
        return cls(algo, hexpart)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, ALGORITHMS[algorithm][0](data).hexdigest())  # type: ignore[call-arg]

    def hasher(self) -> hashlib._Hash:
        return ALGORITHMS[self.algorithm][0]()


def is_digest(text: str) -> bool:
    try:
        Digest.parse(text)
    except DigestInvalid:
        return False
    return True


def new_hasher(algorithm: str = "sha256") -> hashlib._Hash:
    return ALGORITHMS[algorithm][0]()
