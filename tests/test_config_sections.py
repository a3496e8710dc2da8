"""Every settings section refuses a key it does not know: a typo (``insight: {enabeld: false}``)
must stop the start with a clear error, never be ignored while the feature stays on."""

from __future__ import annotations

import os
import typing

import pytest
from pydantic import BaseModel, ValidationError

from moorage.config import Settings

pytestmark = pytest.mark.unit


def _section_models(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[type[BaseModel]]:
    """Every BaseModel reachable from ``model``'s fields (inside Optional, list, dict too)."""
    seen = seen if seen is not None else set()

    def visit(tp: object) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp not in seen:
                seen.add(tp)
                _section_models(tp, seen)
            return
        for arg in typing.get_args(tp):
            visit(arg)

    for field in model.model_fields.values():
        visit(field.annotation)
    return seen


def test_every_section_model_forbids_unknown_keys() -> None:
    models = _section_models(Settings)
    assert len(models) >= 15, sorted(m.__name__ for m in models)
    lax = sorted(m.__name__ for m in models if m.model_config.get("extra") != "forbid")
    assert lax == [], f"sections that ignore unknown keys: {lax}"


SECTIONS = sorted(
    name
    for name, field in Settings.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
)


@pytest.mark.parametrize("section", SECTIONS)
def test_a_typo_in_a_section_is_an_error(section: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("MOORAGE_")]:
        monkeypatch.delenv(name)
    with pytest.raises(ValidationError, match="enabeld"):
        Settings(**{section: {"enabeld": False}})
