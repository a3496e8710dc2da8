"""SHA-256 whose running state can be saved and restored, so an upload's hash survives replicas.

``hashlib`` objects cannot be serialised, so a replica that did not see an upload's previous
chunk would have to re-read the whole upload from storage to hash it.  This module drives
OpenSSL's SHA-256 (the same libcrypto ``hashlib`` uses) through ctypes with a context struct
we own, whose fields -- eight chaining words, the bit count, the partial block -- are the
algorithm's complete state and are written out in a fixed little-endian layout
(:meth:`ResumableSHA256.state`), like Go's ``sha256`` ``MarshalBinary`` that CNCF Distribution
stores for the same purpose.  The registry service keeps that state next to the upload's
driver state in the database; any replica restores it in microseconds.

If libcrypto or its (deprecated, still exported) ``SHA256_*`` functions are unavailable,
:data:`AVAILABLE` is False and the service falls back to re-hashing from storage.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import os
import struct
from typing import Any

_LAYOUT = struct.Struct("<8I2I64s2I")  # h[8], Nl, Nh, data[64], num, md_len
_VERSION = "sha256-openssl-v1:"


class _Ctx(ctypes.Structure):
    _fields_ = [
        ("h", ctypes.c_uint32 * 8),
        ("Nl", ctypes.c_uint32),
        ("Nh", ctypes.c_uint32),
        ("data", ctypes.c_uint8 * 64),
        ("num", ctypes.c_uint32),
        ("md_len", ctypes.c_uint32),
    ]


def _load() -> Any:
    for name in (ctypes.util.find_library("crypto"), "libcrypto.so.3", "libcrypto.so.1.1"):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            lib.SHA256_Init.argtypes = [ctypes.POINTER(_Ctx)]
            lib.SHA256_Update.argtypes = [ctypes.POINTER(_Ctx), ctypes.c_char_p, ctypes.c_size_t]
            lib.SHA256_Final.argtypes = [ctypes.c_char_p, ctypes.POINTER(_Ctx)]
            for fn in (lib.SHA256_Init, lib.SHA256_Update, lib.SHA256_Final):
                fn.restype = ctypes.c_int
        except (OSError, AttributeError):
            continue
        return lib
    return None


_lib = _load()


class ResumableSHA256:
    """The ``hashlib`` face (update/copy/digest/hexdigest) plus :meth:`state`/:meth:`restore`."""

    name = "sha256"
    digest_size = 32
    block_size = 64
    __slots__ = ("_ctx",)

    def __init__(self, data: bytes = b"") -> None:
        self._ctx = _Ctx()
        _lib.SHA256_Init(ctypes.byref(self._ctx))
        if data:
            self.update(data)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, bytes):
            data = bytes(data)
        # ctypes releases the GIL for the call: hashing in a worker thread overlaps I/O.
        _lib.SHA256_Update(ctypes.byref(self._ctx), data, len(data))

    def copy(self) -> ResumableSHA256:
        other = ResumableSHA256.__new__(ResumableSHA256)
        other._ctx = _Ctx.from_buffer_copy(self._ctx)
        return other

    def digest(self) -> bytes:
        out = ctypes.create_string_buffer(32)
        ctx = _Ctx.from_buffer_copy(self._ctx)  # Final clobbers the context; keep ours usable
        _lib.SHA256_Final(out, ctypes.byref(ctx))
        return out.raw

    def hexdigest(self) -> str:
        return self.digest().hex()

    @property
    def length(self) -> int:
        """Bytes hashed so far."""
        return int(((self._ctx.Nh << 32) | self._ctx.Nl) >> 3)

    def state(self) -> str:
        c = self._ctx
        raw = _LAYOUT.pack(*c.h, c.Nl, c.Nh, bytes(c.data), c.num, c.md_len)
        return _VERSION + base64.b64encode(raw).decode()

    @classmethod
    def restore(cls, state: str) -> ResumableSHA256:
        if not state.startswith(_VERSION):
            raise ValueError("unknown hash state format")
        try:
            fields = _LAYOUT.unpack(base64.b64decode(state[len(_VERSION) :], validate=True))
        except (struct.error, ValueError) as exc:
            raise ValueError(f"malformed hash state: {exc}") from None
        h, (nl, nh, data, num, md_len) = fields[:8], fields[8:]
        if num >= 64 or md_len != 32 or ((nh << 32 | nl) >> 3) % 64 != num:
            raise ValueError("inconsistent hash state")
        obj = cls.__new__(cls)
        obj._ctx = _Ctx()
        obj._ctx.h[:] = h
        obj._ctx.Nl, obj._ctx.Nh, obj._ctx.num, obj._ctx.md_len = nl, nh, num, md_len
        ctypes.memmove(obj._ctx.data, data, 64)
        return obj


def _self_test() -> bool:
    if _lib is None:
        return False
    import hashlib

    try:
        h = ResumableSHA256(b"a" * 100)
        h = ResumableSHA256.restore(h.state())
        h.update(b"b" * 1000)
        return h.hexdigest() == hashlib.sha256(b"a" * 100 + b"b" * 1000).hexdigest() and h.length == 1100
    except Exception:  # pragma: no cover - an exotic libcrypto
        return False


#: True when resumable hashing works here (else the service re-hashes from storage).
#: ``MOORAGE_RESUMABLE_HASH=0`` turns it off (to measure or rule out; uploads stay correct).
AVAILABLE = os.environ.get("MOORAGE_RESUMABLE_HASH", "1").strip().lower() not in ("0", "false", "no") and _self_test()
