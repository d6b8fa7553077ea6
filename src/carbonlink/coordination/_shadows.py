"""Shadow policies: while one policy is in force, others are evaluated live on the same
stream, by the same counterfactual replay as ``policy backtest``.

Every period the coordinator rebuilds each plant's no-abatement baseline from what was
stored (plus the abatement the active policy is credited with) and steps every policy's
:class:`PolicyEvaluator` over it, the active one included, so the comparison is like for
like; the active policy's measured emissions are reported beside its replay.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from carbonlink.config import PlantConfig
from carbonlink.coordination._counterfactual import (
    PlantModel,
    PolicyEvaluator,
    RunningSummary,
    StepInput,
)
from carbonlink.coordination._policy import Policy

__all__ = ["ShadowBank"]


class ShadowBank:
    def __init__(
        self,
        active: Policy,
        shadows: Sequence[Policy],
        plants: Sequence[PlantConfig],
        run_start_ms: int,
        active_stage: Callable[[int, int], int] | None = None,
    ) -> None:
        """``active_stage`` is the stage really in force (the schedule and any operator's
        switch); the shadows follow their own schedules."""
        names = [active.name, *(s.name for s in shadows)]
        if len(set(names)) != len(names):
            raise ValueError(f"shadow policies need names of their own: {names}")
        self.active = active.name
        self._evaluators = {
            policy.name: PolicyEvaluator(
                policy,
                [PlantModel.from_config(p, policy) for p in plants],
                run_start_ms,
                keep_rows=False,
            )
            for policy in (active, *shadows)
        }
        self._evaluators[active.name].stage_of = active_stage
        self._money = {p.name: p.money.label for p in (active, *shadows)}
        self._summaries = {
            name: RunningSummary(name, money=self._money[name]) for name in self._evaluators
        }
        self._measured_t = 0.0

    @property
    def policies(self) -> list[str]:
        return list(self._evaluators)

    def add(self, policy: Policy, plants: Sequence[PlantConfig], run_start_ms: int) -> None:
        """Start comparing ``policy`` from now, from the plants' state under the active
        policy (what happened before cannot be replayed for it)."""
        if policy.name in self._evaluators:
            raise ValueError(f"a policy named {policy.name!r} is already compared")
        active = self._evaluators[self.active]
        self._evaluators[policy.name] = PolicyEvaluator(
            policy,
            [PlantModel.from_config(p, policy) for p in plants],
            run_start_ms,
            x=dict(active.x),
            keep_rows=False,
        )
        self._money[policy.name] = policy.money.label
        self._summaries[policy.name] = RunningSummary(policy.name, money=policy.money.label)

    def remove(self, name: str) -> None:
        if name == self.active:
            raise ValueError("the active policy is always compared")
        if name not in self._evaluators:
            raise ValueError(f"no shadow policy {name!r}")
        del self._evaluators[name]
        del self._summaries[name]

    def step(
        self,
        start_ms: int,
        end_ms: int,
        baseline: Mapping[str, StepInput],
        measured_t: float,
    ) -> list[dict[str, Any]]:
        """Advance every policy one period; returns each one's figures so far."""
        self._measured_t += measured_t
        for name, evaluator in self._evaluators.items():
            self._summaries[name].add(evaluator.step(start_ms, end_ms, baseline))
        return self.records()

    def records(self) -> list[dict[str, Any]]:
        """Each policy's figures so far; an undefined ratio (NaN) is None, as JSON has it."""
        records = []
        for name, summary in self._summaries.items():
            record = {
                key: None if isinstance(value, float) and math.isnan(value) else value
                for key, value in summary.record().items()
            }
            record["active"] = name == self.active
            if name == self.active:
                record["measured_emissions_t"] = self._measured_t
            records.append(record)
        return records

    def state(self) -> dict[str, Any]:
        return {
            "measured_t": self._measured_t,
            "policies": {
                name: {
                    "x": evaluator.x,
                    "spent": evaluator.spent,
                    "baseline_seen": evaluator.baseline_seen,
                    "summary": self._summaries[name].state(),
                }
                for name, evaluator in self._evaluators.items()
            },
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self._measured_t = float(state.get("measured_t", 0.0))
        for name, saved in state.get("policies", {}).items():
            evaluator = self._evaluators.get(name)
            if evaluator is None:  # a shadow dropped since: forget it
                continue
            evaluator.x = {p: float(x) for p, x in saved["x"].items()}
            evaluator.spent = float(saved["spent"])
            for plant, seen in saved.get("baseline_seen", {}).items():
                evaluator.baseline_seen[plant] = [float(v) for v in seen]
            self._summaries[name] = RunningSummary.from_state(saved["summary"])
            self._summaries[name].money = self._money[name]
