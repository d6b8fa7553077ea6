"""Simulators on a real Mosquitto: reproducible payloads, faults, directives, replay."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import aiomqtt
import pytest

from carbonlink import wire
from carbonlink.abatement import x_at
from carbonlink.config import PlantConfig
from carbonlink.core.clock import SimClock
from carbonlink.mqtt.client import BrokerAddress
from carbonlink.simulators import (
    Fault,
    FaultKind,
    Fleet,
    SimulationStats,
    abatement_inflow,
    emission_factors,
    load_replay,
    load_replay_from_store,
    parse_fault,
    replay,
    simulate,
)
from carbonlink.storage import SqliteStore, StoredReading
from carbonlink.wire import encode_samples
from tests.servers import MosquittoServer
from tests.simulators.helpers import plants_for, record, samples_of

START_MS = 1_780_000_000_000
HOUR = 3_600_000


def meters_topic(plant: str) -> str:
    return f"carbonlink/v1/{plant}/#"


def test_fast_encoder_decodes_like_the_wire_module() -> None:
    payload = encode_samples(
        "kWh", "interval", 3, [(START_MS, 1.5), (START_MS + 60_000, 2.25)], 60.0
    )
    message = wire.decode_meter_message("carbonlink/v1/p/meters/m", payload)
    assert message.seq == 3
    assert message.unit == "kWh"
    assert not message.rejected
    assert [(s.ts_ms, s.value, s.duration_ms) for s in message.samples] == [
        (START_MS, 1.5, 60_000),
        (START_MS + 60_000, 2.25, 60_000),
    ]


def test_same_seed_byte_identical_on_the_wire(
    mosquitto: MosquittoServer, tmp_path: Path, topic_prefix: str
) -> None:
    runs = []
    for index, seed in enumerate((4, 4, 5)):
        plant_id = f"{topic_prefix}-p"  # the plant id seeds its generator too
        plants = plants_for(tmp_path / str(index), {plant_id: "cement-01"}, mosquitto.url)

        async def run(
            broker: BrokerAddress, p: tuple[PlantConfig, ...] = plants, s: int = seed
        ) -> SimulationStats:
            clock = SimClock(START_MS, speed=None)
            return await simulate(p, broker, clock, seed=s, duration_ms=HOUR, batch_samples=7)

        _, seen = asyncio.run(record(mosquitto.url, [f"carbonlink/v1/{plant_id}/meters/#"], run))
        runs.append(sorted((m.topic.split("/", 3)[3], m.payload) for m in seen))
    assert len(runs[0]) > 30
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_every_fault_appears_on_the_wire(
    mosquitto: MosquittoServer, tmp_path: Path, topic_prefix: str
) -> None:
    cement, steel = f"{topic_prefix}-c", f"{topic_prefix}-s"
    plants = plants_for(tmp_path, {cement: "cement-01", steel: "steel-01"}, mosquitto.url)
    m = 60_000
    faults = [
        Fault(kind=FaultKind.DROPOUT, plant=cement, meter="kiln-coal", start=600, duration=300),
        Fault(kind=FaultKind.STUCK, plant=cement, meter="kiln-petcoke", start=600, duration=600),
        parse_fault(f"spike:{cement}/clinker-output@30m+1m,factor=50"),
        parse_fault(f"drift:{steel}/reheat-gas@1h+2h,drift_per_hour=0.5"),
        parse_fault(f"counter_reset:{steel}/eaf-power@40m"),
        parse_fault(f"clock_skew:{steel}/steel-output@20m+1m,skew_s=900"),
        parse_fault(f"duplicate:{cement}/kiln-petcoke@50m+3m"),
        parse_fault(f"out_of_order:{cement}/grid-main@45m+4m"),
        parse_fault(f"malformed:{steel}/steel-output@70m+2m"),
        parse_fault(f"offline:{steel}@100m+10m"),
        parse_fault(f"broker_disconnect:{cement}@130m+10m"),
    ]
    stats, seen = asyncio.run(
        record(
            mosquitto.url,
            [meters_topic(cement), meters_topic(steel)],
            lambda b: simulate(
                plants,
                b,
                SimClock(START_MS, speed=None),
                seed=1,
                duration_ms=3 * HOUR,
                faults=faults,
            ),
        )
    )
    t0 = START_MS

    def series(plant: str, meter: str) -> list[tuple[int, float]]:
        msgs = [x for x in seen if x.topic == wire.meter_topic(plant, meter)]
        return [(s["ts"], s["value"]) for s in samples_of(msgs, meter)]

    coal = dict(series(cement, "kiln-coal"))
    assert not [t for t in coal if t0 + 600_000 <= t < t0 + 900_000]  # dropout
    assert t0 + 600_000 - m in coal
    assert t0 + 900_000 in coal
    petcoke = series(cement, "kiln-petcoke")
    stuck = {v for t, v in petcoke if t0 + 600_000 <= t < t0 + 1_200_000}
    assert len(stuck) == 1  # stuck
    clinker = dict(series(cement, "clinker-output"))
    assert clinker[t0 + 30 * m] > 20 * clinker[t0 + 29 * m]  # spike
    gas = dict(series(steel, "reheat-gas"))
    assert gas[t0 + 179 * m] > 1.5 * gas[t0 + 59 * m] * 0.8  # drift (+~100% after 2 h)
    eaf = series(steel, "eaf-power")
    at_reset = next(v for t, v in eaf if t == t0 + 40 * m)
    before = next(v for t, v in eaf if t == t0 + 39 * m)
    assert at_reset < before  # counter_reset: register restarts at 0
    assert at_reset < 2_000
    output_ts = [t for t, _ in series(steel, "steel-output")]
    assert t0 + 20 * m + 900_000 in output_ts  # clock_skew
    assert t0 + 20 * m not in output_ts
    dup = [x.payload for x in seen if x.topic == wire.meter_topic(cement, "kiln-petcoke")]
    assert len(dup) - len(set(dup)) == 3  # duplicate: 3 messages in the window, twice each
    grid_ts = [t for t, _ in series(cement, "grid-main")]
    assert any(b < a for a, b in itertools.pairwise(grid_ts))  # out_of_order
    bad = 0
    for x in seen:
        if x.topic == wire.meter_topic(steel, "steel-output"):
            try:
                json.loads(x.payload)
            except ValueError:
                bad += 1
    assert bad == 2  # malformed
    status = [x.json()["state"] for x in seen if x.topic.endswith(f"{steel}/sim-status")]
    assert "offline" in status  # offline: the broker sent the will
    steel_ts = {t for t, _ in series(steel, "reheat-gas")}
    assert not [t for t in steel_ts if t0 + 100 * m <= t < t0 + 110 * m]  # offline: data lost
    cement_status = [x.json()["state"] for x in seen if x.topic.endswith(f"{cement}/sim-status")]
    assert cement_status.count("online") >= 1  # reconnected
    assert "offline" in cement_status
    coal_after = [t for t in coal if t0 + 130 * m <= t < t0 + 140 * m]
    assert len(coal_after) == 10  # broker_disconnect: nothing lost, sent after reconnecting
    assert stats.faults.keys() >= {k.value for k in FaultKind}


def test_directives_lower_emissions_by_the_predicted_amount(
    mosquitto: MosquittoServer, tmp_path: Path, topic_prefix: str
) -> None:
    base_id, steered_id = f"{topic_prefix}-b", f"{topic_prefix}-d"
    plants = plants_for(tmp_path, {base_id: "cement-01", steered_id: "cement-01"}, mosquitto.url)
    effective = START_MS + HOUR
    directive = wire.Directive(
        plant=steered_id,
        issued_ms=START_MS,
        effective_ms=effective,
        stage="advanced_symbiosis",
        effort_firm=4.58,
        effort_platform=2.93,
        sigma=1.25,
    )

    async def scenario(address: BrokerAddress) -> list[SimulationStats]:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.publish(
                wire.directive_topic(steered_id),
                wire.encode_directive(directive),
                qos=1,
                retain=True,
            )
        runs = []
        for plant in plants:
            # Separate runs, same seed and start: the plant id seeds the noise, so compare
            # each with itself: baseline = the same plant without the directive.
            runs.append(
                await simulate(
                    [plant], address, SimClock(START_MS, speed=None), seed=2, duration_ms=6 * HOUR
                )
            )
        return runs

    runs, seen = asyncio.run(record(mosquitto.url, [meters_topic(steered_id)], scenario))
    assert runs[1].directives == 1
    coal = {s["ts"]: s["value"] for s in samples_of(seen, "kiln-coal")}
    biomass = {s["ts"]: s["value"] for s in samples_of(seen, "kiln-biomass")}
    # Re-run the steered plant's own baseline offline: the fleet without the directive.
    plant = plants[1]
    factor = emission_factors()
    base = Fleet([plant], 2, START_MS, factor)
    base_coal, base_biomass = {}, {}
    for tick in base.advance(START_MS + 6 * HOUR):
        for meter, value in zip(tick.meters.tolist(), tick.values.tolist(), strict=True):
            meter_id = base.meter_refs[meter][1].id
            if meter_id == "kiln-coal":
                base_coal[tick.ts_ms] = value
            elif meter_id == "kiln-biomass":
                base_biomass[tick.ts_ms] = value
    abate = plant.simulation.abatement
    switch = abate.fuel_switch
    assert switch is not None
    inflow = abatement_inflow(abate, 4.58, 2.93, 1.25)
    ref = [m for m in plant.meters if m.activity and not m.output]
    total = sum(m.nominal_per_hour * factor(plant, m).co2e_kg_per_unit for m in ref)
    coal_meter, biomass_meter = plant.meter("kiln-coal"), plant.meter("kiln-biomass")
    assert coal_meter is not None
    assert biomass_meter is not None
    coal_f, wood_f = factor(plant, coal_meter), factor(plant, biomass_meter)
    saving_per_tj = coal_f.co2e_kg_per_unit / coal_f.conversion - (
        wood_f.co2e_kg_per_unit / wood_f.conversion
    )
    for ts in (effective - 60_000, effective + HOUR, START_MS + 6 * HOUR):
        x = float(x_at(0.0, inflow, abate.delta, max(ts - effective, 0) / HOUR))
        # Efficiency: kiln-coal's emission share of (1 - share) X; switching: share X
        # moved to wood as energy. Both in tonnes per one-minute sample.
        efficiency = (1 - switch.share) * x * 1000 * coal_meter.nominal_per_hour / total / 60
        switched_tj = switch.share * x * 1000 / saving_per_tj / 60
        expected = efficiency + switched_tj / coal_f.conversion
        assert base_coal[ts] - coal[ts] == pytest.approx(expected, rel=1e-3, abs=1e-6)
        # Wood gains the switched heat; like every emitting fuel it also takes its (small,
        # CH4 and N2O only) emission share of the efficiency cut.
        wood_efficiency = (
            (1 - switch.share) * x * 1000 * biomass_meter.nominal_per_hour / total / 60
        )
        wood_rise = switched_tj / wood_f.conversion - wood_efficiency
        assert biomass[ts] - base_biomass[ts] == pytest.approx(wood_rise, rel=1e-3, abs=1e-6)
    end = START_MS + 6 * HOUR
    assert base_coal[end] - coal[end] > 0.2 * base_coal[end]  # a fifth of the coal: sizeable
    assert biomass[end] > 3 * base_biomass[end]  # the switch is visible on the wire


def test_replay_publishes_a_recorded_csv(
    mosquitto: MosquittoServer, tmp_path: Path, topic_prefix: str
) -> None:
    plant_id = f"{topic_prefix}-r"
    plants = {p.id: p for p in plants_for(tmp_path, {plant_id: "textiles-01"}, mosquitto.url)}
    csv_path = tmp_path / "series.csv"
    csv_path.write_text(
        "time,plant,meter,value,unit\n"
        f"2026-05-28T08:01:00Z,{plant_id},boiler-coal,0.5,t\n"
        f"2026-05-28T08:00:00Z,{plant_id},boiler-coal,0.4,t\n"
        f"2026-05-28T08:00:00Z,{plant_id},grid-main,100,kWh\n"
        f"2026-05-28T08:01:00Z,{plant_id},grid-main,120,kWh\n"
    )
    rows = load_replay(csv_path, plants)
    clock = SimClock(rows[0].ts_ms, speed=600.0)  # one minute in 0.1 s
    _, seen = asyncio.run(
        record(
            mosquitto.url,
            [f"carbonlink/v1/{plant_id}/meters/#"],
            lambda b: replay(rows, plants, b, clock),
        )
    )
    assert [s["value"] for s in samples_of(seen, "boiler-coal")] == [0.4, 0.5]
    assert [s["value"] for s in samples_of(seen, "grid-main")] == [100.0, 220.0]  # counter


def test_replay_publishes_a_store_query(
    mosquitto: MosquittoServer, tmp_path: Path, topic_prefix: str
) -> None:
    """What the platform stored goes back on the wire: only the asked-for window, in time
    order, counters summed back into a register, meters gone from the config left out."""
    plant_id = f"{topic_prefix}-s"
    plants = {p.id: p for p in plants_for(tmp_path, {plant_id: "textiles-01"}, mosquitto.url)}
    store = SqliteStore(tmp_path / "recorded.sqlite")
    t0 = START_MS

    def stored(meter: str, minute: int, value: float, unit: str) -> StoredReading:
        return StoredReading(
            plant_id, meter, t0 + minute * 60_000, value, unit, 60_000, "measured", None
        )

    store.write(
        [
            stored("boiler-coal", 2, 0.5, "t"),
            stored("boiler-coal", 1, 0.4, "t"),
            stored("boiler-coal", 9, 9.9, "t"),  # outside the window
            stored("grid-main", 1, 100.0, "kWh"),
            stored("grid-main", 2, 120.0, "kWh"),
            stored("retired-meter", 1, 1.0, "t"),  # no longer configured
        ]
    )
    rows = load_replay_from_store(store, plants, start_ms=t0, end_ms=t0 + 5 * 60_000)
    store.close()
    assert [(r.meter, r.value) for r in rows if r.meter == "boiler-coal"] == [
        ("boiler-coal", 0.4),
        ("boiler-coal", 0.5),
    ]
    assert {r.meter for r in rows} == {"boiler-coal", "grid-main"}
    clock = SimClock(rows[0].ts_ms, speed=600.0)
    _, seen = asyncio.run(
        record(
            mosquitto.url,
            [f"carbonlink/v1/{plant_id}/meters/#"],
            lambda b: replay(rows, plants, b, clock),
        )
    )
    assert [s["value"] for s in samples_of(seen, "boiler-coal")] == [0.4, 0.5]
    assert [s["value"] for s in samples_of(seen, "grid-main")] == [100.0, 220.0]  # counter
