"""Policy files: which stage of the coordination model is in force, and when.

A policy names a parameter set (a file beside it, or inline), a fixed ``stage`` or a
``schedule`` of stage switches, and optional levers: a carbon price reported to the
plants, a subsidy cap replacing ``theta_max``, and the government's stage-2 objective.
Any problem is a ConfigError naming the policy file and the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from pydantic import Field, field_validator, model_validator

from carbonlink._exceptions import ConfigError
from carbonlink._yamlconfig import StrictModel, load_yaml_model
from carbonlink.coordination._params import CoordinationParams, load_params
from carbonlink.coordination._stages import (
    GovernmentObjective,
    StageResult,
    stage1_nash,
    stage2_government,
    stage3_joint,
)
from carbonlink.wire import parse_timestamp

__all__ = ["Policy", "PolicySwitch", "StageNumber", "load_policy"]

StageNumber = Literal[1, 2, 3]

_OFFSET: Final = re.compile(r"^\+(\d+(?:\.\d+)?)(s|m|h|d)$")
_OFFSET_UNIT_MS: Final = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class _ScheduleEntry(StrictModel):
    at: str = Field(description='RFC 3339 time, or an offset from the start like "+2h"')
    stage: StageNumber

    @field_validator("at")
    @classmethod
    def _valid_time(cls, value: str) -> str:
        if _OFFSET.match(value) is None:
            try:
                parse_timestamp(value)
            except Exception as exc:
                raise ValueError(f'expected RFC 3339 or an offset like "+2h": {exc}') from exc
        return value


class _PolicyFile(StrictModel):
    """The YAML as written; :class:`Policy` is what the service uses."""

    name: str = Field(min_length=1)
    params: str | CoordinationParams
    stage: StageNumber | None = None
    schedule: tuple[_ScheduleEntry, ...] | None = Field(default=None, min_length=1)
    carbon_price: float = Field(default=0.0, ge=0, description="reported to plants, per tCO2e")
    subsidy_cap: float | None = Field(default=None, ge=0, lt=1, description="replaces theta_max")
    government: GovernmentObjective = "welfare"

    @model_validator(mode="after")
    def _one_stage_source(self) -> _PolicyFile:
        if (self.stage is None) == (self.schedule is None):
            raise ValueError("give exactly one of `stage` and `schedule`")
        return self


@dataclass(frozen=True)
class PolicySwitch:
    """From ``at_ms`` (absolute) or ``offset_ms`` after the run's start, ``stage`` applies."""

    stage: StageNumber
    at_ms: int | None = None
    offset_ms: int | None = None

    def starts_ms(self, run_start_ms: int) -> int:
        return self.at_ms if self.at_ms is not None else run_start_ms + (self.offset_ms or 0)


@dataclass(frozen=True)
class Policy:
    name: str
    params: CoordinationParams
    switches: tuple[PolicySwitch, ...]
    carbon_price: float = 0.0
    government: GovernmentObjective = "welfare"

    def stage_at(self, now_ms: int, run_start_ms: int) -> StageNumber:
        """The last switch already started wins; before the first one, the first applies."""
        active = self.switches[0].stage
        for switch in self.switches:
            if switch.starts_ms(run_start_ms) <= now_ms:
                active = switch.stage
        return active

    def solve_stage(self, stage: StageNumber) -> StageResult:
        if stage == 1:
            return stage1_nash(self.params)
        if stage == 2:
            return stage2_government(self.params, self.government)
        return stage3_joint(self.params)


def _switch(entry: _ScheduleEntry) -> PolicySwitch:
    offset = _OFFSET.match(entry.at)
    if offset is None:
        return PolicySwitch(entry.stage, at_ms=parse_timestamp(entry.at))
    return PolicySwitch(entry.stage, offset_ms=round(float(offset[1]) * _OFFSET_UNIT_MS[offset[2]]))


def load_policy(path: Path) -> Policy:
    """Read a policy file; ``params`` as a string is a parameter file beside it."""
    policy = load_yaml_model(path, _PolicyFile)
    if isinstance(policy.params, str):
        params_path = path.parent / policy.params
        if not params_path.is_file():
            raise ConfigError(path, "params", f"no parameter file {params_path}")
        params = load_params(params_path)
    else:
        params = policy.params
    if policy.subsidy_cap is not None:
        # Re-validate rather than model_copy: the copy would skip the field checks.
        params = CoordinationParams.model_validate(
            params.model_dump() | {"theta_max": policy.subsidy_cap}
        )
    if policy.schedule is not None:
        switches = tuple(_switch(e) for e in policy.schedule)
    else:
        assert policy.stage is not None  # the validator demands one of the two
        switches = (PolicySwitch(policy.stage, offset_ms=0),)
    return Policy(policy.name, params, switches, policy.carbon_price, policy.government)
