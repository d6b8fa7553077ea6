"""Reading YAML files and turning pydantic validation failures into ConfigError."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

import pydantic
import yaml

from carbonlink._exceptions import ConfigError

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)

ROOT_KEY = "<root>"
FILE_KEY = "<file>"


class StrictModel(pydantic.BaseModel):
    """Base for file schemas: unknown keys are errors, parsed objects are immutable."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class Readable(Protocol):
    """What both ``pathlib.Path`` and ``importlib.resources`` traversables offer."""

    def read_text(self, encoding: str | None = ...) -> str: ...


def read_yaml(path: Readable, label: str) -> Any:
    """Load a YAML file; unreadable or malformed files become ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(label, FILE_KEY, f"cannot read file: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(label, FILE_KEY, f"invalid YAML: {exc}") from None


def validate(model: type[ModelT], data: Any, label: str) -> ModelT:
    """Validate ``data`` against ``model``; the first failure becomes a ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(label, ROOT_KEY, "the file must contain a mapping at the top level")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or ROOT_KEY
        raise ConfigError(label, key, first["msg"]) from None
