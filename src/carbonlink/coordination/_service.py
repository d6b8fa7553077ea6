"""The coordination service: closes the loop from stored emissions to plant directives.

Every period, for each plant, the coordinator reads the period's emissions from the
store, takes the stage the policy puts in force at the current (possibly simulated)
time, solves it, publishes a retained :class:`~carbonlink.wire.Directive` (which the
simulators obey from ``effective_ms`` on) and appends a report to the hash-chained
ledger, with the period's zero-sum transfers.

The model is fed from the policy's parameters only: estimating a_M, a_P*F, delta, F
and R from the stream (coordination-model.md, "Feeding the model from the stream") is
not done here. The abatement X used for settlement is the model's projection under the
directives issued, the same dynamics the simulators follow, not an observed baseline gap.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

import aiomqtt

from carbonlink import wire
from carbonlink._clock import wall_clock_ms
from carbonlink._mqtt import BrokerAddress, is_connection_loss, make_client, next_backoff
from carbonlink.config import PlantConfig
from carbonlink.coordination._cooperative import shapley
from carbonlink.coordination._flows import period_transfers
from carbonlink.coordination._ledger import Ledger, Report
from carbonlink.coordination._params import Party
from carbonlink.coordination._policy import Policy, StageNumber
from carbonlink.coordination._stages import StageResult
from carbonlink.platform.storage import Store

__all__ = ["DEFAULT_PERIOD_S", "Coordinator", "period_transfers"]

log = logging.getLogger(__name__)

DEFAULT_PERIOD_S: Final = 900.0  # a quarter hour, the usual metering interval
MS_PER_S: Final = 1000
KG_PER_T: Final = 1000.0
STAGE_WIRE_NAMES: Final[dict[int, str]] = {
    1: "primary_neutrality",
    2: "intermediate_dependence",
    3: "advanced_symbiosis",
}


@dataclass
class _PlantState:
    config: PlantConfig
    x: float
    inflow: float = 0.0  # of the directive in force, model units of X per period


class Coordinator:
    """Runs the policy against the plants: ``await run()`` until cancelled.

    ``clock_ms`` is the time the policy and the directives use (pass a SimClock's
    ``now_ms`` to steer simulators); ``wall_period_s`` is how long to wait between
    periods in real time (default ``period_s``; shorter for an accelerated clock).
    """

    def __init__(
        self,
        plants: Sequence[PlantConfig],
        store: Store,
        broker: BrokerAddress,
        policy: Policy,
        ledger: Ledger,
        *,
        clock_ms: Callable[[], int] = wall_clock_ms,
        period_s: float = DEFAULT_PERIOD_S,
        wall_period_s: float | None = None,
        client_id: str = "carbonlink-coordinator",
    ) -> None:
        if period_s <= 0:
            raise ValueError("period_s must be > 0")
        self.policy = policy
        self.ledger = ledger
        self.connected = asyncio.Event()
        self.periods = 0
        self._store = store
        self._broker = broker
        self._clock_ms = clock_ms
        self._period_ms = round(period_s * MS_PER_S)
        self._wall_period_s = period_s if wall_period_s is None else wall_period_s
        self._client_id = client_id
        self._split = shapley(policy.params)
        self._plants = {p.id: _PlantState(p, policy.params.X0) for p in plants}
        self._start_ms: int | None = None
        self._last_ms: int | None = None
        self._in_force: StageResult | None = None
        # Stores are blocking and some are bound to one thread: one worker for all reads.
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coordinator")

    async def run(self) -> None:
        backoff = 0.0
        try:
            while True:
                try:
                    async with make_client(self._broker, self._client_id) as client:
                        self.connected.set()
                        backoff = 0.0
                        while True:
                            await self.step(client)
                            await asyncio.sleep(self._wall_period_s)
                except Exception as exc:
                    if not is_connection_loss(exc):
                        raise
                    self.connected.clear()
                    backoff = next_backoff(backoff)
                    log.warning("coordinator: broker lost (%s); retry in %.1fs", exc, backoff)
                    await asyncio.sleep(backoff)
        finally:
            self._reader.shutdown(wait=False)

    async def step(self, client: aiomqtt.Client) -> list[Report]:
        """One period: report the period that just ended, publish the next directives.

        A report covers [previous step, now) under the stage that was in force; the
        first step has no such period and only publishes. State moves on only after all
        directives are out, so a broker lost midway makes the next step redo the same
        period instead of leaving a gap in the ledger.
        """
        now = self._clock_ms()
        start_run = self._start_ms if self._start_ms is not None else now
        stage: StageNumber = self.policy.stage_at(now, start_run)
        result = self.policy.solve_stage(stage)
        reports, abatement = [], {}
        for plant_id, state in self._plants.items():
            directive = self._directive(plant_id, now, result)
            await client.publish(
                wire.directive_topic(plant_id),
                wire.encode_directive(directive),
                qos=1,
                retain=True,
            )
            if self._last_ms is None or self._in_force is None:
                continue
            model_period_ms = state.config.simulation.abatement.period_s * MS_PER_S
            periods = max(now - self._last_ms, 0) / model_period_ms
            x = self._advance(state, periods)
            abatement[plant_id] = x
            tco2e = await self._emissions_t(plant_id, self._last_ms, now)
            transfers = period_transfers(
                self.policy.params, self._in_force, self._split, x, periods
            )
            reports.append(
                self._report(plant_id, self._last_ms, now, self._in_force, tco2e, x, transfers)
            )
        for report in reports:
            self.ledger.append(report)
        for plant_id, state in self._plants.items():
            state.x = abatement.get(plant_id, state.x)
            state.inflow = result.inflow
        self._start_ms, self._last_ms, self._in_force = start_run, now, result
        self.periods += 1
        log.info("coordinator: stage %d (%s) for %d plants", stage, result.name, len(self._plants))
        return reports

    def _advance(self, state: _PlantState, periods: float) -> float:
        """X after ``periods`` model periods under the inflow in force (exact step)."""
        decay = math.exp(-self.policy.params.delta * periods)
        return decay * state.x + (1.0 - decay) * state.inflow / self.policy.params.delta

    async def _emissions_t(self, plant: str, start_ms: int, end_ms: int) -> float:
        loop = asyncio.get_running_loop()
        frame = await loop.run_in_executor(
            self._reader,
            lambda: self._store.emissions(plant, start_ms=start_ms, end_ms=end_ms),
        )
        return float(frame["co2e_kg"].sum()) / KG_PER_T if len(frame) else 0.0

    def _directive(self, plant: str, now: int, result: StageResult) -> wire.Directive:
        return wire.Directive(
            plant=plant,
            issued_ms=now,
            effective_ms=now,
            stage=STAGE_WIRE_NAMES[result.stage],
            effort_firm=result.E_M,
            effort_platform=result.E_P,
            sigma=result.sigma,
            subsidy_rate_firm=result.theta_M,
            subsidy_rate_platform=result.theta_P,
            carbon_price=self.policy.carbon_price,
            policy=self.policy.name,
        )

    def _report(
        self,
        plant: str,
        start: int,
        end: int,
        result: StageResult,
        tco2e: float,
        x: float,
        transfers: dict[Party, float],
    ) -> Report:
        return Report(
            period_start_ms=start,
            period_end_ms=end,
            plant=plant,
            policy=self.policy.name,
            stage=result.stage,
            stage_name=result.name,
            reported_tco2e=tco2e,
            effort_firm=result.E_M,
            effort_platform=result.E_P,
            sigma=result.sigma,
            subsidy_rate_firm=result.theta_M,
            subsidy_rate_platform=result.theta_P,
            carbon_price=self.policy.carbon_price,
            projected_abatement=x,
            transfers=transfers,
        )
