"""``MOORAGE_*`` environment variables as settings values, and the merge of the sources.

This is what ``pydantic-settings`` did for :class:`moorage.config.Settings` (``env_prefix=
"MOORAGE_"``, ``env_nested_delimiter="__"``, case-insensitive names, no dotenv or secrets
directory; precedence: command-line flags, environment, YAML file, defaults), ported rule for
rule from its ``EnvSettingsSource`` (2.14).  Why not the library itself: importing it costs
every command ~70 ms of CPU (it pulls in asyncio, dotenv, email parsing and its cloud
sources), a quarter of the 0.3 s a quick command may take.

The rules, as the library has them:

* A field's variable is ``MOORAGE_<FIELD>``; names are compared lower-cased.
* A "complex" field (a model, list, dict, set, tuple ...) takes JSON; malformed JSON is an error
  (:class:`SettingsError`), except for a union that also admits a plain value, which then gets
  the string.  ``MOORAGE_<FIELD>__<KEY>[__<KEY>...]`` builds nested mappings; a nested value
  whose target field is complex is JSON-decoded the same way; a JSON object given for the
  field is deep-merged with them.
* Everything else is passed as the string and validated by pydantic.

tests/test_config_env.py runs this and the library's own source on the same generated
environments (every field of the model tree, odd cases, malformed JSON) and requires the same
values and the same errors, so the two cannot drift while ``pydantic-settings`` stays a test
dependency.
"""

from __future__ import annotations

import json
import types
import typing
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import is_dataclass
from typing import Any

from pydantic import BaseModel, Json, RootModel, Secret
from pydantic.fields import FieldInfo

#: Nested keys in a variable name: ``MOORAGE_STORAGE__S3__BUCKET``.
DELIMITER = "__"
#: The message names the library's source, as errors did before (scripts may match it).
_SOURCE = "EnvSettingsSource"


class SettingsError(ValueError):
    """A ``MOORAGE_*`` variable whose value cannot be read (malformed JSON for a section or list)."""


def deep_update(mapping: dict[str, Any], *updates: dict[str, Any]) -> dict[str, Any]:
    """``mapping`` with ``updates`` merged in, nested mappings merged key by key (later wins)."""
    out = mapping.copy()
    for update in updates:
        for k, v in update.items():
            if k in out and isinstance(out[k], dict) and isinstance(v, dict):
                out[k] = deep_update(out[k], v)
            else:
                out[k] = v
    return out


def merge_sources(init: dict[str, Any], env: dict[str, Any], file: dict[str, Any]) -> dict[str, Any]:
    """The values to validate: keyword arguments over environment over the config file."""
    return deep_update(file, deep_update(env, init))


# -- which annotations take JSON ----------------------------------------------------------------
def _subclass(cls: Any, bases: Any) -> bool:
    return isinstance(cls, type) and typing.get_origin(cls) is None and issubclass(cls, bases)


def _is_union(origin: Any) -> bool:
    return origin is typing.Union or origin is types.UnionType


def _strip_annotated(annotation: Any) -> Any:
    return annotation.__origin__ if typing.get_origin(annotation) is typing.Annotated else annotation


def _resolve_alias(annotation: Any) -> Any:
    """A ``TypeAliasType`` (``type X = ...``) stands for its value (parameterised ones: unused here)."""
    if type(annotation).__name__ == "TypeAliasType":  # pragma: no cover - no alias in the settings today
        return annotation.__value__
    return annotation


def _complex_inner(annotation: Any) -> bool:
    if _subclass(annotation, (str, bytes)):
        return False
    return _subclass(annotation, (BaseModel, Mapping, Sequence, tuple, set, frozenset, deque)) or is_dataclass(annotation)


def annotation_is_complex(annotation: Any, metadata: list[Any]) -> bool:
    """Does a value for ``annotation`` come as JSON?"""
    annotation = _resolve_alias(annotation)
    if annotation is not None and _subclass(annotation, RootModel) and annotation is not RootModel:
        root = annotation.model_fields["root"].annotation
        if root is not None:
            annotation = root
    if any(isinstance(md, Json) for md in metadata):  # type: ignore[misc]
        return False
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *meta = typing.get_args(annotation)
        return annotation_is_complex(inner, meta)
    if origin is Secret:
        return False
    return (
        _complex_inner(annotation)
        or _complex_inner(origin)
        or hasattr(origin, "__pydantic_core_schema__")
        or hasattr(origin, "__get_pydantic_core_schema__")
    )


def _union_is_complex(annotation: Any, metadata: list[Any]) -> bool:
    for arg in typing.get_args(annotation):
        if annotation_is_complex(arg, metadata):
            return True
        inner = _strip_annotated(arg)
        if inner is not arg:
            _, *inner_meta = typing.get_args(arg)
            if any(isinstance(md, Json) for md in inner_meta):  # type: ignore[misc]
                continue
        if _is_union(typing.get_origin(inner)) and _union_is_complex(inner, metadata):
            return True
    return False


def _field_is_complex(field: FieldInfo) -> tuple[bool, bool]:
    """(takes JSON, a JSON error is tolerated): a union admitting a plain value tolerates one."""
    if annotation_is_complex(field.annotation, field.metadata):
        return True, False
    if _is_union(typing.get_origin(field.annotation)) and _union_is_complex(field.annotation, field.metadata):
        return True, True
    return False, False


def _value_is_complex(field: FieldInfo) -> bool:
    annotation = _strip_annotated(_resolve_alias(field.annotation))
    return _is_union(typing.get_origin(annotation)) and _union_is_complex(annotation, field.metadata)


# -- reading the environment --------------------------------------------------------------------
class EnvReader:
    """The environment's values for a model's fields (one instance per read)."""

    def __init__(self, environ: Mapping[str, str], prefix: str) -> None:
        self.env = {k.lower(): v for k, v in environ.items()}
        self.prefix = prefix.lower()

    def values(self, model: type[BaseModel]) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name, field in model.model_fields.items():
            value = self.env.get((self.prefix + name).lower())
            try:
                value = self._prepare(name, field, value, _value_is_complex(field))
            except ValueError as exc:
                raise SettingsError(f'error parsing value for field "{name}" from source "{_SOURCE}"') from exc
            if value is not None:
                data[name] = _field_names(field, value) if isinstance(value, dict) else value
        return data

    def _prepare(self, name: str, field: FieldInfo, value: str | None, value_is_complex: bool) -> Any:
        is_complex, tolerate = _field_is_complex(field)
        if is_complex or value_is_complex:
            if value is None:
                return self._explode(name, field) or None
            try:
                decoded: Any = json.loads(value)
            except ValueError:
                if not tolerate:
                    raise
                decoded = value
            if isinstance(decoded, dict):
                return deep_update(decoded, self._explode(name, field))
            return decoded
        return value

    def _next_field(self, field: Any, key: str) -> Any:
        """The field (or, in a dict, the value type) that ``key`` names below ``field``."""
        if not field:
            return None
        annotation: Any = field.annotation if isinstance(field, FieldInfo) else field
        for arg in typing.get_args(annotation):
            found = self._next_field(arg, key)
            if found:
                return found
        if _subclass(typing.get_origin(annotation), dict):
            return typing.get_args(annotation)[-1]
        if _subclass(annotation, BaseModel) and annotation is not BaseModel:
            for sub_name, sub in annotation.model_fields.items():
                if sub_name.lower() == key.lower() or (self.prefix + sub_name).lower() == key.lower():
                    return sub
        return None

    def _explode(self, name: str, field: FieldInfo) -> dict[str, Any]:
        """``MOORAGE_<NAME>__A__B=v`` -> ``{"a": {"b": v}}`` (JSON-decoded where the target takes JSON)."""
        annotation = field.annotation
        is_dict = annotation is dict or _subclass(typing.get_origin(annotation), dict)
        start = f"{(self.prefix + name).lower()}{DELIMITER}"
        result: dict[str, Any] = {}
        for env_name, env_val in self.env.items():
            if not env_name.startswith(start):
                continue
            *keys, last = env_name[len(start) :].split(DELIMITER)
            target: Any = result
            sub: Any = field
            for key in keys:
                sub = self._next_field(sub, key)
                if isinstance(target, dict):
                    target = target.setdefault(key, {})
            sub = self._next_field(sub, last)
            value: Any = env_val
            if (sub or is_dict) and env_val:
                if isinstance(sub, FieldInfo):
                    is_complex, tolerate = _field_is_complex(sub)
                elif sub:
                    is_complex, tolerate = annotation_is_complex(sub, []), True
                else:
                    is_complex, tolerate = True, True
                if is_complex:
                    try:
                        value = json.loads(env_val)
                    except ValueError:
                        if not tolerate:
                            raise
            if isinstance(target, dict):
                target[last] = value
        return result


def _field_names(field: FieldInfo, values: dict[str, Any]) -> dict[str, Any]:
    """Keys matched to the model's field names case-insensitively (``DRIVER`` -> ``driver``)."""
    annotation = field.annotation
    if _is_union(typing.get_origin(annotation)):
        args = typing.get_args(annotation)
        if len(args) == 2 and type(None) in args:
            annotation = args[0]  # (the library takes the first member, None or not)
    if not annotation or not hasattr(annotation, "model_fields"):
        return dict(values)
    fields: dict[str, FieldInfo] = annotation.model_fields
    out: dict[str, Any] = {}
    for key, value in values.items():
        match = next(((n, f) for n, f in fields.items() if n.lower() == key.lower()), None)
        if match is None:
            out[key] = value
        elif _subclass(match[1].annotation, BaseModel) and isinstance(value, dict):
            out[match[0]] = _field_names(match[1], value)
        else:
            out[match[0]] = value
    return out
