"""Request parameters shared by the API's routes."""

from __future__ import annotations

from typing import Any

from fastapi import Path

from carbonlink.config import Settings

__all__ = ["plant_parameter"]


def plant_parameter(settings: Settings) -> Any:
    """A path parameter whose document lists the configured plant ids (another id still
    gets a 404 naming them): clients and fuzzers see the values that exist."""
    return Path(
        description="A configured plant's id", json_schema_extra={"enum": sorted(settings.plants)}
    )
