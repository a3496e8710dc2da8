"""Request bodies of the admin API (``/api/v1/``), as pydantic models.

The handlers (:mod:`moorage.auth.admin_users`) validate every body with these models, and the
OpenAPI document (:mod:`moorage.api.openapi`) publishes their JSON schema, so the two cannot
drift apart.  A body that does not fit is a 400 with the OCI error body (``UNSUPPORTED``, or
``NAME_INVALID`` for a user, repository or namespace name), never a 500.  Unknown keys are
ignored, as they always were.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from .. import errors
from ..registry.access_rules import parse_actions, parse_token_scope, valid_group_name, valid_pattern, valid_username
from ..registry.names import is_valid_name

M = TypeVar("M", bound=BaseModel)

NonEmpty = Annotated[str, Field(min_length=1)]
#: Longest access-token lifetime accepted (a century, in seconds).
MAX_EXPIRES_IN = 100 * 365 * 86400
NAME_INVALID = "name_invalid"


def _name_invalid(message: str) -> PydanticCustomError:
    return PydanticCustomError(NAME_INVALID, message)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class TokenCreate(_Body):
    """``POST /api/v1/me/tokens``: a personal access token for the caller."""

    name: Annotated[str, Field(max_length=128)] | None = Field(None, description="A label (default ``token``).")
    scope: list[str] | None = Field(
        None,
        description="``PATTERN:ACTIONS`` items limiting the token (default: the owner's full rights).",
        examples=[["team/*:pull"]],
    )
    expires_in: Annotated[float, Field(gt=0, lt=MAX_EXPIRES_IN)] | None = Field(
        None, description="Lifetime in seconds (default: no expiry)."
    )

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            parse_token_scope(value)  # ValueError -> 400
        return value


class AdminTokenCreate(TokenCreate):
    """``POST /api/v1/tokens``: an access token for any user."""

    user: NonEmpty


class UserCreate(_Body):
    """``POST /api/v1/users``.  Without ``password`` (and not a robot) one is generated and
    returned once."""

    name: str = Field(description="Lower-case letters, digits, '.', '_', '-'; at most 64.")
    password: NonEmpty | None = None
    admin: StrictBool = False
    robot: StrictBool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or not valid_username(value):
            raise _name_invalid("invalid user name (lower-case letters, digits, '.', '_', '-'; at most 64)")
        return value


class PasswordSet(_Body):
    """``PUT /api/v1/users/{name}/password``."""

    password: NonEmpty


class GrantCreate(_Body):
    """``POST /api/v1/grants``: USER gets ACTIONS on every repository matching PATTERN."""

    user: NonEmpty
    pattern: NonEmpty = Field(description="A repository name; ``*`` matches any run of characters.", examples=["team/*"])
    actions: str | list[str] = Field(description="pull, push, delete, admin (a list or comma-separated).", examples=["pull,push"])

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        if not valid_pattern(value):
            raise ValueError(f"invalid repository pattern {value[:100]!r}")
        return value

    @field_validator("actions")
    @classmethod
    def _actions(cls, value: str | list[str]) -> str | list[str]:
        if not parse_actions(value):
            raise ValueError("'actions' must name at least one of pull, push, delete, admin")
        return value

    def action_set(self) -> frozenset[str]:
        return parse_actions(self.actions)


class GroupGrantCreate(_Body):
    """``POST /api/v1/group-grants``: every member of directory group GROUP gets ACTIONS on
    every repository matching PATTERN (on top of their own grants)."""

    group: NonEmpty = Field(description="A directory group name (its cn).", examples=["developers"])
    pattern: NonEmpty = Field(description="A repository name; ``*`` matches any run of characters.", examples=["team/*"])
    actions: str | list[str] = Field(description="pull, push, delete, admin (a list or comma-separated).", examples=["pull,push"])

    @field_validator("group")
    @classmethod
    def _group(cls, value: str) -> str:
        if not valid_group_name(value):
            raise ValueError("invalid group name (1-255 printable characters, no surrounding spaces)")
        return value

    _pattern = field_validator("pattern")(GrantCreate._pattern.__func__)  # type: ignore[attr-defined]
    _actions = field_validator("actions")(GrantCreate._actions.__func__)  # type: ignore[attr-defined]

    def action_set(self) -> frozenset[str]:
        return parse_actions(self.actions)


class NamespaceCreate(_Body):
    """``POST /api/v1/namespaces``."""

    name: NonEmpty
    public: StrictBool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not is_valid_name(value):
            raise _name_invalid("invalid namespace name")
        return value


class VisibilitySet(_Body):
    """``PUT /api/v1/visibility``: one of ``repository`` or ``namespace`` (repository first)."""

    repository: NonEmpty | None = None
    namespace: NonEmpty | None = None
    public: StrictBool

    @field_validator("repository", "namespace")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not is_valid_name(value):
            raise _name_invalid("invalid repository name")
        return value


#: Every admin request body, by OpenAPI component name.
MODELS: tuple[type[BaseModel], ...] = (
    TokenCreate,
    AdminTokenCreate,
    UserCreate,
    PasswordSet,
    GrantCreate,
    GroupGrantCreate,
    NamespaceCreate,
    VisibilitySet,
)


def validate(model: type[M], data: Any) -> M:
    """``data`` (parsed JSON) as ``model``; the OCI 400 it deserves if it does not fit."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False, include_context=False)
        first = problems[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        message = f"{where}: {first['msg']}"[:300]
        if first["type"] == NAME_INVALID:
            raw = data.get(str(first["loc"][0])) if isinstance(data, dict) and first["loc"] else None
            raise errors.NameInvalid(message, detail={"name": raw[:100] if isinstance(raw, str) else None}) from None
        detail = [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"][:200]} for e in problems[:10]]
        raise errors.Unsupported(message, detail=detail, status=400) from None
