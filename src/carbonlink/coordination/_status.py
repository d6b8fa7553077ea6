"""The coordinator's status as the API and the dashboard show it: one JSON-ready view,
saved with every step under ``STATUS_STATE_KEY``, independent of the run state's layout."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, Final, Protocol

from carbonlink.coordination._flows import settlement_split
from carbonlink.coordination._government import Government
from carbonlink.coordination._policy import Policy
from carbonlink.coordination._run import InForce
from carbonlink.coordination._shadows import ShadowBank
from carbonlink.coordination._sharing import SharingGate
from carbonlink.coordination._stream import PlantStream
from carbonlink.coordination.model import core_split, settlement_reason

__all__ = ["DROP_STATE_KEY", "STAGE_WIRE_NAMES", "STATUS_STATE_KEY", "StatusSource", "status_view"]

STATUS_STATE_KEY: Final = "status"
#: The emission drop since the last stage switch, measured beside the model's prediction,
#: saved by whoever can measure it (the demo, which can replay its seeded plants without
#: the switch); the API adds it to the status as ``drop``.
DROP_STATE_KEY: Final = "drop_since_switch"
STAGE_WIRE_NAMES: Final[dict[int, str]] = {
    1: "primary_neutrality",
    2: "intermediate_dependence",
    3: "advanced_symbiosis",
}


class StatusSource(Protocol):
    """The parts of a running coordinator the status is read from."""

    @property
    def policy(self) -> Policy: ...
    @property
    def start_ms(self) -> int | None: ...
    @property
    def period_s(self) -> float: ...
    @property
    def periods(self) -> int: ...
    @property
    def plants(self) -> Mapping[str, object]: ...
    @property
    def streams(self) -> Mapping[str, PlantStream]: ...
    @property
    def shadows(self) -> ShadowBank | None: ...
    @property
    def shadow_policies(self) -> Sequence[Policy]: ...
    @property
    def overrides(self) -> Sequence[tuple[int, int | None]]: ...
    @property
    def gate(self) -> SharingGate: ...
    @property
    def government(self) -> Government: ...
    @property
    def in_force(self) -> Mapping[str, InForce]: ...


def status_view(run: StatusSource, now: int, stage: int) -> dict[str, Any]:
    """What the API shows: JSON-ready, independent of the internal state's layout."""
    estimates = {}
    for plant, stream in run.streams.items():
        params, sources = stream.params()
        estimates[plant] = {
            "params": params.model_dump(),
            "sources": sources,
            "x_observed": stream.x_obs,
            "functional_availability": (
                None if stream.availability is None else asdict(stream.availability)
            ),
            "baseline": None
            if stream.baseline is None
            else {"r2": stream.baseline.r2, "cv_rmse": stream.baseline.cv_rmse,
                  "n": stream.baseline.n, "acceptable": stream.baseline.acceptable},
            "rls_updates": 0 if stream.estimator is None else stream.estimator.updates,
            "energy_value": stream.energy_value,
        }  # fmt: skip
    return {
        "policy": run.policy.name,
        "description": run.policy.description,
        "money": run.policy.money.as_record(),
        "stage": stage,
        "stage_name": STAGE_WIRE_NAMES[stage],
        "run_start_ms": run.start_ms,
        "updated_ms": now,
        "period_s": run.period_s,
        "periods": run.periods,
        "plants": sorted(run.plants),
        "shadows": (
            [p for p in run.shadows.policies if p != run.policy.name]
            if run.shadows is not None
            else [p.name for p in run.shadow_policies]
        ),
        "overrides": [{"at_ms": at, "stage": stage} for at, stage in sorted(run.overrides)],
        "sharing": {
            str(s): {
                "level": str(rule.level),
                "every_s": rule.every_s,
                "delay_s": rule.delay_s,
                "plants": None if rule.plants is None else sorted(rule.plants),
            }
            for s, rule in sorted(run.policy.sharing.items())
        },
        "pending_reports": run.gate.pending,
        "government": run.government.summary(),
        "directives": {
            plant: {"stage": d.result.stage} | d.result.decision()
            for plant, d in run.in_force.items()
        },
        "estimates": estimates,
        "settlement": settlement_status(run.in_force),
    }


def settlement_status(in_force: Mapping[str, InForce]) -> dict[str, dict[str, Any]]:
    """Per plant, the split stage 3 settles on under the parameters in force, why,
    and each party's floor (its best of stages 1 and 2)."""
    result: dict[str, dict[str, Any]] = {}
    for plant, decision in in_force.items():
        core = core_split(decision.params)
        split = settlement_split(decision.params)
        result[plant] = {
            "split": split.method,
            "why": settlement_reason(core, split),
            "values": split.values,
            "floors": dict(core.floors),
        }
    return result
