"""Load YAML files into frozen pydantic models, turning every failure into ConfigError.

A user who breaks a config file must read, at startup, which file, which key and what
is wrong: ``config/plants/cement.yaml: meters[1].unit: Field required``. Every
configuration in carbonlink (services, plants, factor data and sets, faults, policies)
goes through here, so the message reads the same wherever it comes from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from carbonlink.errors import ConfigError

DOCUMENT_KEY = "<document>"
FILE_KEY = "<file>"


class StrictModel(BaseModel):
    """Base of every file schema: a misspelt key is an error, not a silent default, and
    what was loaded cannot change afterwards."""

    model_config = ConfigDict(frozen=True, extra="forbid")


ModelT = TypeVar("ModelT", bound=BaseModel)


class Readable(Protocol):
    """What both ``pathlib.Path`` and ``importlib.resources`` traversables offer."""

    def read_text(self, encoding: str | None = ...) -> str: ...


def dotted_key(location: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as ``meters[1].unit``."""
    key = ""
    for part in location:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key += f".{part}" if key else str(part)
    return key or DOCUMENT_KEY


def read_yaml(path: Readable, label: str | Path | None = None) -> object:
    """Parse one YAML file; syntax errors name the line and column.

    ``label`` names the file in errors (default: ``path`` itself), for package data
    whose traversable does not print as a path.
    """
    where = label if label is not None else str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(where, FILE_KEY, f"cannot read: {exc.strerror or exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        key = f"line {mark.line + 1}, column {mark.column + 1}" if mark else FILE_KEY
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(where, key, f"invalid YAML: {problem}") from exc


def validate_model(model: type[ModelT], data: object, path: str | Path | None) -> ModelT:
    """Validate parsed data; the first error becomes a ConfigError, the rest join its text."""
    if not isinstance(data, dict):
        raise ConfigError(path, DOCUMENT_KEY, "the file must contain a mapping at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        problem = first["msg"] + _given(first.get("input"))
        if len(errors) > 1:
            others = "; ".join(f"{dotted_key(e['loc'])}: {e['msg']}" for e in errors[1:4])
            problem += f" (also: {others})"
        raise ConfigError(path, dotted_key(first["loc"]), problem) from exc


GIVEN_MAX_CHARS = 60


def _given(value: object) -> str:
    """The offending value, when it is short enough to quote: "(got 'meltdown')"."""
    if isinstance(value, bool | int | float | str) and len(repr(value)) <= GIVEN_MAX_CHARS:
        return f" (got {value!r})"
    return ""


def load_yaml_model(path: str | Path, model: type[ModelT]) -> ModelT:
    """Read ``path`` and validate it as ``model``."""
    path = Path(path)
    data = read_yaml(path)
    if data is None:
        raise ConfigError(path, DOCUMENT_KEY, "file is empty")
    return validate_model(model, data, path)
