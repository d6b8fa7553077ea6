"""The coordination service: closes the loop from stored emissions to plant directives.

Periods lie on a fixed grid of ``period_s`` from the run's start. Every step the
coordinator:

1. reads every period that ended at least ``read_lag_s`` ago and is not yet recorded
   (readings whose interval ends in it, under each plant's current factor set
   version): the lag lets readings in flight land first, so a period is read once, whole;
2. updates what it knows of each plant from the stream (policies with ``estimation``):
   baseline, observed abatement, F, v_E, and RLS estimates of a_M, a_P*F and delta;
3. records the period under the decision that was in force: emissions, projected and
   observed abatement, subsidy claims (stage 2), settlement transfers (stage 3);
4. hands the records to the :class:`SharingGate`, which releases the reports the stage's
   sharing rule allows; the :class:`Government` receives them (and only them), pays
   claims within its budget, and the reports are appended to the hash-chained ledger;
5. steps the shadow policies on the same stream;
6. decides the next period under the stage now in force and publishes every plant's
   directive (retained; simulators obey it from ``effective_ms``);
7. commits the reports, period rows, shadow figures and its own state in one
   transaction, then publishes the ledger's head as a retained anchor.

If anything fails before the commit (a broker lost mid-publish, say), the in-memory
state is reloaded from the last commit, so the next step redoes the same period instead
of counting part of it twice. A restarted coordinator resumes from the same state.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import aiomqtt

from carbonlink import wire
from carbonlink.config import PlantConfig, Settings
from carbonlink.coordination._accounting import period_outcome, period_record
from carbonlink.coordination._counterfactual import StepInput
from carbonlink.coordination._flows import relational_params
from carbonlink.coordination._government import Government
from carbonlink.coordination._journal import Journal, PeriodRow
from carbonlink.coordination._operations import Operations
from carbonlink.coordination._policy import Policy, StageNumber
from carbonlink.coordination._run import STATE_KEY, InForce
from carbonlink.coordination._shadows import ShadowBank
from carbonlink.coordination._sharing import PeriodRecord, SharingGate
from carbonlink.coordination._signing import key_id, sign_anchor
from carbonlink.coordination._status import STAGE_WIRE_NAMES, STATUS_STATE_KEY, status_view
from carbonlink.coordination._stream import PeriodData, PlantStream
from carbonlink.coordination.model import (
    CoordinationParams,
    StageResult,
    decide,
)
from carbonlink.core.clock import wall_clock_ms
from carbonlink.core.metrics import Metric, counter, gauge, registry_reading
from carbonlink.errors import CarbonlinkError
from carbonlink.mqtt.client import BrokerAddress, make_client
from carbonlink.mqtt.reconnect import keep_connected
from carbonlink.storage import Store, readings_ending_in

__all__ = ["DEFAULT_PERIOD_S", "Coordinator"]

log = logging.getLogger(__name__)

DEFAULT_PERIOD_S: Final = 900.0  # a quarter hour, the usual metering interval
#: How long after a period ends it is read: agents batch for ~0.5 s and a reconnecting
#: one flushes its outbox, so a minute covers the normal case; late readings are still
#: counted (timeliness) and flagged when a report is re-derived from storage.
DEFAULT_READ_LAG_S: Final = 60.0
MS_PER_S: Final = 1000
KG_PER_T: Final = 1000.0


class Coordinator:
    """Runs ``policy`` against the plants of ``settings``: ``await run()`` until cancelled.

    ``clock_ms`` is the time the policy and the directives use (pass a SimClock's
    ``now_ms`` to steer simulators); ``wall_period_s`` is how long to wait between
    periods in real time (default ``period_s``; shorter for an accelerated clock).
    ``shadows`` are evaluated live beside the active policy.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        broker: BrokerAddress,
        policy: Policy,
        journal: Journal,
        *,
        plants: Sequence[str] | None = None,
        shadows: Sequence[Policy] = (),
        clock_ms: Callable[[], int] = wall_clock_ms,
        period_s: float = DEFAULT_PERIOD_S,
        wall_period_s: float | None = None,
        read_lag_s: float = DEFAULT_READ_LAG_S,
        client_id: str = "carbonlink-coordinator",
    ) -> None:
        if period_s <= 0:
            raise ValueError("period_s must be > 0")
        if read_lag_s < 0:
            raise ValueError("read_lag_s must be >= 0")
        for checked in (policy, *shadows):
            checked.check_plants(settings.plants)  # a typo in a plant's terms: fail now
        self.policy = policy
        self.journal = journal
        self.connected = asyncio.Event()
        self.periods = 0
        self._settings = settings
        self._plants: dict[str, PlantConfig] = {
            p: settings.plant(p) for p in (plants if plants is not None else settings.plants)
        }
        self._store = store
        self._broker = broker
        self._clock_ms = clock_ms
        self._period_s = period_s
        self._period_ms = round(period_s * MS_PER_S)
        self._read_lag_ms = round(read_lag_s * MS_PER_S)
        self._wall_period_s = period_s if wall_period_s is None else wall_period_s
        self._client_id = client_id
        self._shadow_policies = tuple(shadows)
        # Wall-clock time each plant's latest directive was published, and how many:
        # Prometheus' directive age (a stalled coordinator shows as a growing age).
        self._directive_wall_ms: dict[str, int] = {}
        self._directives_sent: dict[str, int] = {}
        self.metrics = registry_reading(self._metric_families)
        self._versions = {}
        for plant in self._plants:
            factor_set = settings.factor_set(plant)
            self._versions[plant] = (factor_set.name, factor_set.version)
        # Stores are blocking and some are bound to one thread: one worker for all reads.
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coordinator")
        self._fresh()
        self._restore()

    # --- what the status view reads (StatusSource) ---------------------------------------

    @property
    def start_ms(self) -> int | None:
        return self._start_ms

    @property
    def period_s(self) -> float:
        return self._period_s

    @property
    def plants(self) -> Mapping[str, PlantConfig]:
        return self._plants

    @property
    def streams(self) -> Mapping[str, PlantStream]:
        return self._streams

    @property
    def shadows(self) -> ShadowBank | None:
        return self._shadows

    @property
    def shadow_policies(self) -> tuple[Policy, ...]:
        return self._shadow_policies

    @property
    def overrides(self) -> list[tuple[int, int | None]]:
        return self._operations.overrides

    @property
    def gate(self) -> SharingGate:
        return self._gate

    @property
    def government(self) -> Government:
        return self._government

    @property
    def in_force(self) -> Mapping[str, InForce]:
        return self._in_force

    # --- state ---------------------------------------------------------------------------

    def _prior(self, plant: str) -> CoordinationParams:
        return self.policy.params_for(self._plants[plant])

    def _fresh(self) -> None:
        self._start_ms: int | None = None
        self._last_ms: int | None = None  # the grid time the decision in force began
        # Periods decided but not yet read: (start, end, the decisions in force).
        self._unrecorded: list[tuple[int, int, dict[str, InForce]]] = []
        self._x = dict.fromkeys(self._plants, self.policy.params.X0)
        self._in_force: dict[str, InForce] = {}
        self._gate = SharingGate(self.policy.sharing)
        self._government = Government(self.policy)
        self._streams: dict[str, PlantStream] = {}
        estimation = self.policy.estimation
        if estimation is not None:
            source = str(self.policy.source or self.policy.name)
            self._streams = {
                plant_id: PlantStream.create(
                    plant,
                    self._prior(plant_id),
                    estimation,
                    self._period_s,
                    self._settings.factor_set(plant_id),
                    source,
                )
                for plant_id, plant in self._plants.items()
            }
        self._shadows: ShadowBank | None = None
        self._operations = Operations()

    def _shadow_bank(self, run_start_ms: int, *, make: bool = False) -> ShadowBank | None:
        """The shadow bank; with ``make``, an empty one when nothing is compared yet."""
        plants = list(self._plants.values())

        def new(shadows: list[Policy]) -> ShadowBank:
            return ShadowBank(self.policy, shadows, plants, run_start_ms, self.stage_at)

        def add(bank: ShadowBank, policy: Policy) -> None:
            bank.add(policy, plants, run_start_ms)

        self._shadows = self._operations.shadow_bank(self._shadows, new, self._shadow_policies, add)
        if self._shadows is None and make:
            self._shadows = new([])
        return self._shadows

    def stage_at(self, boundary: int, run_start: int) -> StageNumber:
        """The policy's schedule, unless an operator switched the stage since."""
        return self._operations.stage_at(self.policy.stage_at, boundary, run_start)

    def _apply_commands(self, now: int, run_start: int) -> list[tuple[int, str]]:
        """Take in the API's queued commands; returns (id, outcome) to record."""
        plants = list(self._plants.values())

        def bank(make: bool) -> ShadowBank | None:
            return self._shadow_bank(run_start, make=make)

        def add(shadows: ShadowBank, policy: Policy) -> None:
            shadows.add(policy, plants, run_start)

        settled = []
        for command_id, command in self.journal.pending_commands():
            if isinstance(command, str):  # no command at all: refused, and said why
                outcome = f"refused: {command}"
            else:
                try:
                    outcome = self._operations.apply(command, now, bank, add)
                except (ValueError, CarbonlinkError) as exc:
                    outcome = f"refused: {exc}"
            log.info("coordinator: command %d: %s", command_id, outcome)
            settled.append((command_id, outcome))
        return settled

    def _snapshot(self) -> dict[str, Any]:
        return {
            "policy": self.policy.name,
            "start_ms": self._start_ms,
            "last_ms": self._last_ms,
            "periods": self.periods,
            "x": self._x,
            "in_force": {p: d.state() for p, d in self._in_force.items()},
            "unrecorded": [
                [start, end, {p: d.state() for p, d in decisions.items()}]
                for start, end, decisions in self._unrecorded
            ],
            "gate": self._gate.snapshot(),
            "government": self._government.state(),
            "streams": {p: s.state() for p, s in self._streams.items()},
            "shadows": None if self._shadows is None else self._shadows.state(),
        } | self._operations.state()

    def _restore(self) -> None:
        """Back to the last committed state (or a fresh run if there is none for us)."""
        self._fresh()
        state = self.journal.load_state(STATE_KEY)
        if state is None:
            return
        if state.get("policy") != self.policy.name:
            log.warning(
                "coordinator: the journal was left by policy %r; starting a new run of %r "
                "(the ledger chain continues)",
                state.get("policy"),
                self.policy.name,
            )
            return
        self._start_ms, self._last_ms = state["start_ms"], state["last_ms"]
        self.periods = int(state["periods"])
        self._x.update({p: float(x) for p, x in state["x"].items() if p in self._plants})
        self._in_force = {
            p: InForce.from_state(d) for p, d in state["in_force"].items() if p in self._plants
        }
        self._unrecorded = [
            (int(start), int(end), {p: InForce.from_state(d) for p, d in decisions.items()})
            for start, end, decisions in state.get("unrecorded", [])
        ]
        self._operations.restore(state)
        self._gate.restore(state["gate"])
        self._government.restore(state["government"])
        for plant, saved in state.get("streams", {}).items():
            if plant in self._streams:
                self._streams[plant].restore(saved)
        if state.get("shadows") is not None and self._start_ms is not None:
            bank = self._shadow_bank(self._start_ms)
            if bank is not None:
                bank.restore(state["shadows"])

    # --- the loop --------------------------------------------------------------------------

    def _metric_families(self) -> Iterator[Metric]:
        now = wall_clock_ms()
        yield counter("carbonlink_coordinator_periods", "Periods stepped", self.periods)
        yield counter(
            "carbonlink_coordinator_directives", "Directives published, per plant",
            {(p,): float(n) for p, n in self._directives_sent.items()}, ("plant",),
        )  # fmt: skip
        yield gauge(
            "carbonlink_coordinator_directive_age_seconds",
            "Wall-clock seconds since the plant's latest directive was published",
            {(p,): (now - ms) / MS_PER_S for p, ms in self._directive_wall_ms.items()},
            ("plant",),
        )  # fmt: skip
        yield gauge("carbonlink_coordinator_connected", "1 when connected", self.connected.is_set())

    async def run(self) -> None:
        try:
            await keep_connected(
                self._session, what="coordinator", log=log, lost=self.connected.clear
            )
        finally:
            self._reader.shutdown(wait=False)

    async def _session(self, connected: Callable[[], None]) -> None:
        async with make_client(self._broker, self._client_id) as client:
            self.connected.set()
            connected()
            while True:
                await self.step(client)
                await asyncio.sleep(self._wall_delay_to_next())

    def _wall_delay_to_next(self) -> float:
        """Wall seconds until the clock reaches the next grid time (0 when behind)."""
        if self._last_ms is None:
            return self._wall_period_s
        ahead_ms = self._last_ms + self._period_ms - self._clock_ms()
        return max(0.0, ahead_ms / self._period_ms * self._wall_period_s)

    async def step(self, client: aiomqtt.Client) -> list[dict[str, Any]]:
        """One period: record the period that just ended, publish the next directives.

        Returns the reports released to the government this step.
        """
        try:
            return await self._step(client)
        except BaseException:
            self._restore()
            raise

    async def _step(self, client: aiomqtt.Client) -> list[dict[str, Any]]:
        now = self._clock_ms()
        if self._start_ms is None:
            self._start_ms = now
        run_start = self._start_ms
        boundary = self._boundary(now)
        if boundary is None:
            return []  # woke before the next grid time: nothing to do yet
        settled = self._apply_commands(now, run_start)
        if self._last_ms is not None and self._in_force:
            self._unrecorded.append((self._last_ms, boundary, self._in_force))
        released: list[dict[str, Any]] = []
        rows: list[PeriodRow] = []
        shadow_records: list[dict[str, Any]] = []
        due = [p for p in self._unrecorded if p[1] <= now - self._read_lag_ms]
        for start, end, decisions in due:
            data = await self._read(start, end)
            await self._fit_baselines(end, run_start)
            records = []
            for plant in self._plants:
                record, row = self._record_period(plant, start, end, decisions[plant], data[plant])
                records.append(record)
                rows.append(row)
                if record.stage == 2:
                    self._government.expect(record.subsidy_claimed)
            self._gate.add(records)
            shadow_records = self._step_shadows(start, end, data, rows[-len(records) :], run_start)
        self._unrecorded = self._unrecorded[len(due) :]
        released = [self._government.receive(body) for body in self._gate.due(now)]
        stage = self.stage_at(boundary, run_start)
        decisions_now = self._decide(stage, boundary, run_start)
        for plant, decision in decisions_now.items():
            directive = self._directive(plant, now, decision.result, now, run_start)
            await client.publish(
                wire.directive_topic(plant), wire.encode_directive(directive), qos=1, retain=True
            )
            self._directive_wall_ms[plant] = wall_clock_ms()
            self._directives_sent[plant] = self._directives_sent.get(plant, 0) + 1
        self._last_ms, self._in_force = boundary, decisions_now
        self.periods += 1
        with self.journal.transaction():
            for body in released:
                self.journal.ledger.append(body)
            self.journal.record_periods(rows)
            if shadow_records:
                self.journal.record_shadows(rows[-1].end_ms, shadow_records)
            for command_id, outcome in settled:
                self.journal.settle_command(command_id, now, outcome)
            self.journal.save_state(STATE_KEY, self._snapshot())
            self.journal.save_state(STATUS_STATE_KEY, status_view(self, now, stage))
        await self._publish_anchor(client, now)
        log.info(
            "coordinator: stage %d for %d plants; %d periods recorded, %d reports released",
            stage,
            len(decisions_now),
            len(due),
            len(released),
        )
        return released

    def _boundary(self, now: int) -> int | None:
        """The grid time this step starts a period at (None: too early)."""
        if self._last_ms is None:
            return now
        whole = (now - self._last_ms) // self._period_ms
        # A stalled coordinator makes one longer period, not several empty ones.
        return None if whole < 1 else self._last_ms + whole * self._period_ms

    # --- reading the stream --------------------------------------------------------------

    async def _read(self, start_ms: int, end_ms: int) -> dict[str, PeriodData]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, self._read_sync, start_ms, end_ms)

    def _read_sync(self, start_ms: int, end_ms: int) -> dict[str, PeriodData]:
        first, after = readings_ending_in(start_ms, end_ms)
        result = {}
        for plant in self._plants:
            name, version = self._versions[plant]
            emissions = self._store.emissions(
                plant, start_ms=first, end_ms=after, factor_set=name, factor_version=version
            )
            activity = self._store.activity(plant, start_ms=first, end_ms=after)
            recount = None
            stream = self._streams.get(plant)
            if stream is not None and stream.previous_window is not None:
                previous = readings_ending_in(*stream.previous_window)
                recount = len(self._store.activity(plant, start_ms=previous[0], end_ms=previous[1]))
            result[plant] = PeriodData(start_ms, end_ms, emissions, activity, recount)
        return result

    async def _fit_baselines(self, now: int, run_start: int) -> None:
        estimation = self.policy.estimation
        if estimation is None:
            return
        start = estimation.reference_start.resolve(run_start)
        end = estimation.reference_end.resolve(run_start)
        waiting = [s for s in self._streams.values() if s.baseline is None]
        if not waiting or now < end:
            return
        reference = await self._read(start, end)
        for stream in waiting:
            stream.fit(reference[stream.plant.id])

    # --- recording a period ----------------------------------------------------------------

    def _record_period(
        self, plant: str, start_ms: int, end_ms: int, decision: InForce, data: PeriodData
    ) -> tuple[PeriodRecord, PeriodRow]:
        result, params = decision.result, decision.params
        config = self._plants[plant]
        stream = self._streams.get(plant)
        x_obs = (
            stream.observe(data, (result.E_M, result.E_P, result.sigma))
            if stream is not None
            else None
        )
        periods = (end_ms - start_ms) / MS_PER_S / config.simulation.abatement.period_s
        x_start = self._x[plant]
        # Settles on what was measured when there is a baseline to measure it against.
        outcome = period_outcome(params, result, x_start, x_obs, periods)
        self._x[plant] = outcome.x_end
        x_mean = outcome.x_mean
        name, version = self._versions[plant]
        used = params.model_dump()
        carbon_price = self.policy.carbon_price_at(start_ms, self._start_ms or start_ms)
        availability = stream.availability.value if stream and stream.availability else None
        row = PeriodRow(
            plant=plant,
            start_ms=start_ms,
            end_ms=end_ms,
            policy=self.policy.name,
            stage=result.stage,
            **result.decision(),
            carbon_price=carbon_price,
            x_projected=x_mean,
            x_observed=x_obs,
            tco2e=data.tco2e,
            readings=len(data.emissions),
            functional_availability=availability,
            parameters=used | {f"source_{k}": v for k, v in decision.sources.items()},
            stage_name=result.name,
            x_start=x_start,
            model_periods=periods,
            factor_set=name,
            factor_version=version,
            counted=data.counted,
            money=self.policy.money.label,
        )
        record = period_record(row, result, outcome, used)
        return record, row

    def _step_shadows(
        self,
        start_ms: int,
        end_ms: int,
        data: Mapping[str, PeriodData],
        rows: Sequence[PeriodRow],
        run_start: int,
    ) -> list[dict[str, Any]]:
        bank = self._shadow_bank(run_start)
        if bank is None:
            return []
        baseline = {}
        for row in rows:
            config = self._plants[row.plant]
            fixed_meters = {m.id for m in config.meters if m.output}
            frame = data[row.plant].emissions
            fixed_t = float(frame[frame["meter"].isin(fixed_meters)]["co2e_kg"].sum()) / KG_PER_T
            abatable_t = data[row.plant].tco2e - fixed_t
            # What the active policy avoided: measured where there is a baseline, else
            # the model's projection.
            x = row.x_observed if row.x_observed is not None else row.x_projected
            abate = config.simulation.abatement
            avoided_t = abate.tonnes(max(0.0, x), (end_ms - start_ms) / MS_PER_S)
            baseline[row.plant] = StepInput(abatable_t + avoided_t, fixed_t)
        measured = sum(d.tco2e for d in data.values())
        return bank.step(start_ms, end_ms, baseline, measured)

    # --- deciding ------------------------------------------------------------------------

    def _decide(self, stage: int, now: int, run_start: int) -> dict[str, InForce]:
        firm_params, sources = {}, {}
        for plant in self._plants:
            stream = self._streams.get(plant)
            base, used = stream.params() if stream is not None else (self._prior(plant), {})
            params = relational_params(self.policy, base, plant, stage)
            firm_params[plant] = self.policy.params_at(params, now, run_start)
            sources[plant] = used | ({"R": "sharing"} if self.policy.sharing_sets_r else {})
        government = None
        budget = None
        if stage == 2:
            # The government decides on what it has been told, not on the firms' data.
            government = {
                plant: self.policy.params_at(
                    relational_params(
                        self.policy,
                        self._government.view(plant, self._prior(plant)),
                        plant,
                        stage,
                    ),
                    now,
                    run_start,
                )
                for plant in self._plants
            }
            budget = self._government.budget_per_s(self._period_s)
        fixed = {
            plant: rates
            for plant, config in self._plants.items()
            if (rates := self.policy.subsidy_rates_for(config)) is not None
        }
        results = decide(
            stage,
            firm_params,
            objective=self.policy.government,
            government_params=government,
            budget_per_s=budget,
            period_s={p: c.simulation.abatement.period_s for p, c in self._plants.items()},
            fixed_rates=fixed,
        )
        return {
            plant: InForce(results[plant], firm_params[plant], sources[plant])
            for plant in self._plants
        }

    def _directive(
        self, plant: str, now: int, result: StageResult, effective_ms: int, run_start: int
    ) -> wire.Directive:
        return wire.Directive(
            plant=plant,
            issued_ms=now,
            effective_ms=effective_ms,
            stage=STAGE_WIRE_NAMES[result.stage],
            **result.decision(),
            carbon_price=self.policy.carbon_price_at(now, run_start),
            policy=self.policy.name,
        )

    # --- telling the world ------------------------------------------------------------------

    async def _publish_anchor(self, client: aiomqtt.Client, now: int) -> None:
        next_index, head = self.journal.ledger.head()
        payload: dict[str, Any] = {
            "v": wire.WIRE_VERSION,
            "policy": self.policy.name,
            "next_index": next_index,
            "head": head,
            "updated_ms": now,
        }
        key = self.journal.ledger.signing_key
        if key is not None:  # so nobody else can pass off a shorter chain's head
            payload |= {"key_id": key_id(key), "signature": sign_anchor(key, next_index, head)}
        await client.publish(
            wire.LEDGER_ANCHOR_TOPIC, json.dumps(payload).encode(), qos=1, retain=True
        )
