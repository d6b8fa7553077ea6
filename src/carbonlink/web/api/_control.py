"""The API's state-changing endpoints, each behind the API token (``_auth``):

- ``POST /api/v1/plants/{plant}/recompute``: recompute stored emissions under the
  current version of a factor set;
- ``POST /api/v1/coordination/stage``: switch the stage (or go back to the policy's
  schedule), now or at a given time;
- ``POST /api/v1/coordination/shadows`` / ``DELETE .../shadows/{name}``: compare a policy
  file live, or stop comparing it.

Coordination changes are commands queued in the coordinator's journal, durable and
independent of the broker; the coordinator applies them at its next step and records
the outcome (``GET /api/v1/coordination/commands``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from fastapi import Depends, FastAPI, HTTPException, Query
from pydantic import BaseModel, Field, field_validator, model_validator

from carbonlink.config import Settings
from carbonlink.coordination import (
    AddShadow,
    Command,
    Journal,
    RemoveShadow,
    SwitchStage,
    body_of,
    load_policy,
)
from carbonlink.errors import CarbonlinkError
from carbonlink.platform.recompute import recompute
from carbonlink.storage import Store
from carbonlink.web.api._auth import ApiAccess, require_token
from carbonlink.web.api._parameters import plant_parameter
from carbonlink.wire import parse_query_time

__all__ = ["add_control_routes"]

API_PREFIX: Final = "/api/v1"
# Policy names in requests are file names in the policies folder, nothing else: no path
# separators, no "..", so a request cannot reach any other file.
POLICY_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def _time(text: str) -> int:
    """An instant in a request: RFC 3339 or epoch ms (raises ValueError: a 422)."""
    try:
        return parse_query_time(text)
    except CarbonlinkError as exc:
        raise ValueError(str(exc)) from None


Instant = Annotated[str, Field(min_length=1, description="RFC 3339 time or epoch ms")]


class RecomputeRequest(BaseModel):
    """Validated here, so a bad request is FastAPI's own 422 naming the field."""

    start: Instant
    end: Instant
    factor_set: str | None = Field(default=None, description="Default: the plant's")

    @field_validator("start", "end")
    @classmethod
    def _instant(cls, value: str) -> str:
        _time(value)
        return value

    @model_validator(mode="after")
    def _ordered(self) -> RecomputeRequest:
        if _time(self.end) <= _time(self.start):
            raise ValueError("end must be after start")
        return self


class StageRequest(BaseModel):
    stage: Literal[1, 2, 3] | None = Field(
        description="1, 2 or 3; null to go back to the policy's schedule"
    )
    at: Instant | None = Field(default=None, description="RFC 3339 or epoch ms; default: now")

    @field_validator("at")
    @classmethod
    def _instant(cls, value: str | None) -> str | None:
        if value is not None:
            _time(value)
        return value


class ShadowRequest(BaseModel):
    policy: str = Field(
        pattern=POLICY_NAME.pattern,
        description="A policy file's name in the policies folder, without .yaml",
    )


# What the OpenAPI document says these endpoints can refuse, besides FastAPI's 422.
GUARDED: Final[dict[int | str, dict[str, Any]]] = {
    400: {"description": "The body is not JSON"},
    401: {"description": "No token, or not the API's token"},
    403: {"description": "State-changing endpoints are off: no token is configured"},
}
QUEUED: Final = GUARDED | {
    404: {"description": "This server has no coordination journal, or no such policy"}
}


def add_control_routes(
    app: FastAPI,
    store: Store,
    settings: Settings,
    access: ApiAccess,
    *,
    journal_path: Path | None,
    clock_ms: Callable[[], int],
) -> None:
    allowed = [Depends(require_token(access))]

    def queue(command: Command) -> dict[str, Any]:
        if journal_path is None:
            raise HTTPException(404, "this server has no coordination journal configured")
        with Journal(journal_path) as journal:
            command_id = journal.add_command(command, clock_ms())
        return {"command": command_id, "status": "queued", "kind": command.kind} | body_of(command)

    plant_path = plant_parameter(settings)

    @app.post(
        f"{API_PREFIX}/plants/{{plant}}/recompute",
        dependencies=allowed,
        summary="Recompute emissions under the current version of a factor set",
        responses=GUARDED | {404: {"description": "No such plant, or no such factor set"}},
    )
    def recompute_plant(request: RecomputeRequest, plant: str = plant_path) -> dict[str, Any]:
        if plant not in settings.plants:
            known = ", ".join(sorted(settings.plants))
            raise HTTPException(404, f"no plant {plant!r} (known: {known})")
        start, end = _time(request.start), _time(request.end)
        try:
            result = recompute(
                store, settings, plant, start_ms=start, end_ms=end, factor_set=request.factor_set
            )
        except CarbonlinkError as exc:  # a factor set that is not there
            raise HTTPException(404, str(exc)) from None
        return {
            "plant": result.plant,
            "factor_set": result.factor_set,
            "factor_version": result.factor_version,
            "readings": result.readings,
            "skipped": result.skipped,
            "co2e_kg": result.co2e_kg,
        }

    @app.post(
        f"{API_PREFIX}/coordination/stage",
        dependencies=allowed,
        status_code=202,
        summary="Switch the coordination stage, or back to the policy's schedule",
        responses=QUEUED,
    )
    def switch_stage(request: StageRequest) -> dict[str, Any]:
        at_ms = _time(request.at) if request.at is not None else None
        return queue(SwitchStage(request.stage, at_ms))

    @app.post(
        f"{API_PREFIX}/coordination/shadows",
        dependencies=allowed,
        status_code=202,
        summary="Compare a policy live beside the active one",
        responses=QUEUED | {409: {"description": "The policy file does not load"}},
    )
    def add_shadow(request: ShadowRequest) -> dict[str, Any]:
        path = settings.policies_dir() / f"{request.policy}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in settings.policies_dir().glob("*.yaml"))
            raise HTTPException(404, f"no policy {request.policy!r} (known: {', '.join(known)})")
        try:
            load_policy(path)
        except CarbonlinkError as exc:
            raise HTTPException(409, str(exc)) from None
        return queue(AddShadow(str(path), request.policy))

    @app.delete(
        f"{API_PREFIX}/coordination/shadows/{{name}}",
        dependencies=allowed,
        status_code=202,
        summary="Stop comparing a shadow policy",
        responses=QUEUED,
    )
    def remove_shadow(name: str) -> dict[str, Any]:
        return queue(RemoveShadow(name))

    @app.get(f"{API_PREFIX}/coordination/commands", summary="Commands and what became of them")
    def commands(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[Any]:
        if journal_path is None or not journal_path.is_file():
            return []
        with Journal.open_readonly(journal_path) as journal:
            return journal.commands(limit=limit)
