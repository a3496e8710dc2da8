"""Manifest parsing and validation.

The registry stores manifests byte for byte (the digest is of the bytes as pushed); this
module only reads them to learn what they reference, so that the push can be checked
(every referenced blob/manifest must exist in the repository) and the references recorded
for garbage collection and the referrers API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import DigestInvalid, ManifestInvalid
from . import mediatypes as mt
from .digests import Digest
from .safejson import UntrustedJSONError, loads_untrusted


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int


@dataclass(slots=True)
class ParsedManifest:
    media_type: str
    blobs: list[Descriptor] = field(default_factory=list)  # config + layers
    manifests: list[Descriptor] = field(default_factory=list)  # children of an index
    foreign: list[Descriptor] = field(default_factory=list)  # non-distributable layers (urls)
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEXES


#: RFC 6838 caps a type and a subtype name at 127 characters each; the database column is 255.
MAX_MEDIA_TYPE = 255


def _media_type_text(value: str) -> bool:
    """A media type Moorage stores: at most 255 characters, no control characters (PostgreSQL
    refuses NUL in text, and a longer value does not fit the column: both were 500s there)."""
    return len(value) <= MAX_MEDIA_TYPE and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)


def _descriptor(obj: Any, where: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise ManifestInvalid(f"{where}: descriptor must be an object")
    media_type = obj.get("mediaType")
    digest = obj.get("digest")
    size = obj.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestInvalid(f"{where}: descriptor mediaType missing")
    if not _media_type_text(media_type):
        raise ManifestInvalid(f"{where}: descriptor mediaType is not a media type")
    if not isinstance(digest, str):
        raise ManifestInvalid(f"{where}: descriptor digest missing")
    try:
        Digest.parse(digest)
    except DigestInvalid as exc:
        raise ManifestInvalid(f"{where}: {exc.message}", detail={"digest": digest[:200]}) from None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestInvalid(f"{where}: descriptor size must be a non-negative integer")
    return Descriptor(media_type, digest, size)


def _is_foreign(raw: dict[str, Any], desc: Descriptor) -> bool:
    """Windows base layers and other non-distributable layers: clients push only their descriptor."""
    urls = raw.get("urls")
    return bool(urls) and isinstance(urls, list) and ("foreign" in desc.media_type or "nondistributable" in desc.media_type)


def parse_manifest(body: bytes, content_type: str | None) -> ParsedManifest:
    """Validate ``body`` as a manifest and return what it references.

    ``content_type`` is the request's Content-Type; when both it and the body's
    ``mediaType`` are present they must agree (the spec requires it).
    """
    try:
        doc = loads_untrusted(body)
    except UntrustedJSONError as exc:
        raise ManifestInvalid(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestInvalid("manifest must be a JSON object")
    ctype = (content_type or "").split(";")[0].strip().lower() or None
    body_type = doc.get("mediaType")
    if body_type is not None and (not isinstance(body_type, str) or not _media_type_text(body_type)):
        raise ManifestInvalid("mediaType must be a media type string")
    if ctype in mt.DOCKER_SCHEMA1 or body_type in mt.DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
        raise ManifestInvalid("Docker schema 1 manifests are not supported")
    if ctype and ctype not in mt.MANIFEST_TYPES and ctype not in ("application/json", "application/octet-stream"):
        raise ManifestInvalid(f"unsupported manifest media type {ctype!r}")
    if body_type and ctype and ctype in mt.MANIFEST_TYPES and body_type != ctype:
        raise ManifestInvalid(f"mediaType {body_type!r} does not match Content-Type {ctype!r}")
    media_type = body_type or (ctype if ctype in mt.MANIFEST_TYPES else None)
    if media_type is None:
        # OCI manifests may omit mediaType; infer from shape.
        media_type = mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST
    if media_type not in mt.MANIFEST_TYPES:
        raise ManifestInvalid(f"unsupported manifest media type {media_type!r}")
    if doc.get("schemaVersion") != 2:
        raise ManifestInvalid("schemaVersion must be 2")

    parsed = ParsedManifest(media_type=media_type)
    if media_type in mt.INDEXES:
        children = doc.get("manifests")
        if not isinstance(children, list):
            raise ManifestInvalid("index must have a manifests array")
        parsed.manifests = [_descriptor(c, f"manifests[{i}]") for i, c in enumerate(children)]
    else:
        if "config" not in doc:
            raise ManifestInvalid("image manifest must have a config descriptor")
        config = _descriptor(doc["config"], "config")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise ManifestInvalid("image manifest must have a layers array")
        parsed.blobs = [config]
        for i, layer in enumerate(layers):
            desc = _descriptor(layer, f"layers[{i}]")
            if _is_foreign(layer, desc):
                parsed.foreign.append(desc)  # fetched by clients from its URLs, never pushed here
            else:
                parsed.blobs.append(desc)
    if "subject" in doc:
        parsed.subject = _descriptor(doc["subject"], "subject")
    artifact_type = doc.get("artifactType")
    if artifact_type is not None:
        if not isinstance(artifact_type, str) or not _media_type_text(artifact_type):
            raise ManifestInvalid("artifactType must be a media type string")
        parsed.artifact_type = artifact_type
    elif media_type == mt.OCI_MANIFEST and parsed.blobs:
        # image-spec: for an artifact without artifactType, the config media type names it.
        parsed.artifact_type = parsed.blobs[0].media_type
    annotations = doc.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
            raise ManifestInvalid("annotations must map strings to strings")
        parsed.annotations = annotations
    return parsed
