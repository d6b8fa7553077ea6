"""Load YAML files into frozen pydantic models, turning every failure into ConfigError.

A user who breaks a config file must read, at startup, which file, which key and what
is wrong: ``config/plants/cement.yaml: meters[1].unit: Field required``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from carbonlink._exceptions import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)


def dotted_key(location: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as ``meters[1].unit``."""
    key = ""
    for part in location:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key += f".{part}" if key else str(part)
    return key or "<document>"


def read_yaml(path: Path) -> object:
    """Parse one YAML file; syntax errors name the line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, "<file>", f"cannot read: {exc.strerror}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<yaml>"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, where, f"invalid YAML: {problem}") from exc


def validate_model(model: type[ModelT], data: object, path: Path | None) -> ModelT:
    """Validate parsed data; the first error becomes a ConfigError, the rest join its text."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        problem = first["msg"]
        if len(errors) > 1:
            others = "; ".join(f"{dotted_key(e['loc'])}: {e['msg']}" for e in errors[1:4])
            problem += f" (also: {others})"
        raise ConfigError(path, dotted_key(first["loc"]), problem) from exc


def load_yaml_model(path: Path, model: type[ModelT]) -> ModelT:
    """Read ``path`` and validate it as ``model``."""
    data = read_yaml(path)
    if data is None:
        raise ConfigError(path, "<document>", "file is empty")
    return validate_model(model, data, path)
