"""What devices, Telegraf and ThingsBoard publish, with mosquitto_pub through a real
Mosquitto into stored emissions; each mistake refused with a hint, then a canary lands."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from carbonlink.core.clock import wall_clock_ms
from tests.plant.conftest import (
    PlantFile,
    co2e_kg_per_unit,
    dead_letters,
    meter,
    plant_settings,
)
from tests.servers import MosquittoServer
from tests.test_end_to_end import Pipeline, mosquitto_pub
from tests.waiting import async_wait_for

COAL_PERIOD_S = 0.1
COAL_T = (0.0006, 0.0004)  # the bare reading and the canary, within the rating per 0.1 s


def _plant_tools(plant: PlantFile) -> None:
    # A device that publishes a bare number of t of kiln coal every 0.1 s.
    meter(plant, "kiln-coal").update(sample_period_s=COAL_PERIOD_S, payload={"format": "bare"})
    # Telegraf's JSON serializer: {"fields":{...},"name":...,"tags":{...},"timestamp":s}.
    meter(plant, "kiln-petcoke")["payload"] = {
        "format": "json", "value": "$.fields.value", "ts": "$.timestamp", "ts_unit": "s",
    }  # fmt: skip
    # ThingsBoard's telemetry: {"ts": ms, "values": {"key": value}}; a kWh register.
    meter(plant, "grid-main")["payload"] = {"format": "json", "value": "values.kwh", "ts": "ts"}


def test_bare_numbers_telegraf_and_thingsboard_json_land_mistakes_are_explained(
    tmp_path: Path, topic_prefix: str, mosquitto: MosquittoServer
) -> None:
    plant = f"{topic_prefix}-tools"
    settings = plant_settings(tmp_path / "config", mosquitto, plant, _plant_tools)
    topic = f"carbonlink/v1/{plant}/meters/{{}}".format
    now_s = wall_clock_ms() // 1000
    hostile = [
        (topic("kiln-coal"), "abc", "malformed_json", "takes a bare number"),
        (topic("kiln-coal"), '{"v":1,"unit":"t","value":1}', "bad_schema", "payload.format: json"),
        (topic("kiln-coal"), "NaN", "not_finite", "NaN"),
        (topic("grid-main"), '{"ts":1,"values":{"kw":5}}', "bad_schema", "no value at values.kwh"),
        (topic("grid-main"), json.dumps({"ts": now_s, "values": {"kwh": 5}}), "bad_timestamp",
         "set payload.ts_unit: s"),
        (topic("kiln-biomass"), '{"unit":"t","ts":"2026-01-01T00:00:00Z","value":1}',
         "bad_schema", 'add "v": 1'),
        (topic("kiln-biomass"), json.dumps({"v": 1, "unit": "t", "ts": now_s, "value": 0.1}),
         "bad_timestamp", "looks like epoch seconds"),
        (topic("kiln-biomass"), json.dumps({"v": 1, "unit": "kg", "ts": now_s * 1000,
         "value": 0.1}), "wrong_unit", "1 kg = 0.001 t"),
    ]  # fmt: skip

    async def scenario() -> dict[str, object]:
        store = f"sqlite:///{tmp_path / 'store.sqlite'}"
        async with (
            Pipeline(settings, mosquitto, store, now_ms=wall_clock_ms) as pipeline,
            dead_letters(mosquitto, plant) as letters,
        ):
            before = wall_clock_ms()
            mosquitto_pub(mosquitto, topic("kiln-coal"), str(COAL_T[0]))
            telegraf = {"fields": {"value": 0.07}, "name": "petcoke", "tags": {"line": "1"},
                        "timestamp": now_s}  # fmt: skip
            mosquitto_pub(mosquitto, topic("kiln-petcoke"), json.dumps(telegraf))
            for register, ago_ms in ((5000.0, 120_000), (5040.0, 60_000)):
                thingsboard = {"ts": now_s * 1000 - ago_ms, "values": {"kwh": register}}
                mosquitto_pub(mosquitto, topic("grid-main"), json.dumps(thingsboard))
            # The unit library knows a tonne is a t.
            synonym = {"v": 1, "unit": "tonne", "ts": now_s * 1000, "value": 0.25, "dur": 60}
            mosquitto_pub(mosquitto, topic("kiln-biomass"), json.dumps(synonym))
            for where, payload, *_ in hostile:
                mosquitto_pub(mosquitto, where, payload)
            # The canary goes last, on the bare meter, a sample period after the first
            # reading: stamped sooner, its interval would overlap that one's, and be refused.
            agent = pipeline.agents[plant]
            await async_wait_for(lambda: "kiln-coal" in agent.latest, "the bare reading taken")
            first_end = agent.latest["kiln-coal"].ts_ms
            period_ms = COAL_PERIOD_S * 1000
            await async_wait_for(lambda: wall_clock_ms() > first_end + period_ms, "a period over")
            mosquitto_pub(mosquitto, topic("kiln-coal"), str(COAL_T[1]))
            await async_wait_for(
                lambda: pipeline.platform.counters.stored == 5, "5 readings stored"
            )
            await async_wait_for(
                lambda: len(letters) == len(hostile), "every refusal dead-lettered"
            )
            after = wall_clock_ms()
            series = {
                name: pipeline.store.series(plant, meter=name, field=field)
                for name in ("kiln-coal", "kiln-petcoke", "grid-main", "kiln-biomass")
                for field in ("value",)
            }
            co2e = pipeline.store.series(plant, meter="kiln-coal", field="co2e_kg")
            grid_co2e = pipeline.store.series(plant, meter="grid-main", field="co2e_kg")
            return {
                "window": (before, after),
                "series": series,
                "co2e": co2e["value"].tolist(),
                "grid_co2e": grid_co2e["value"].tolist(),
                "rejected": dict(pipeline.agents[plant].counters.rejected),
                "counters": pipeline.agents[plant].counters.as_dict(),
                "letters": {str(letter["detail"]): str(letter["reason"]) for letter in letters},
            }

    outcome = asyncio.run(scenario())
    series = outcome["series"]
    coal = series["kiln-coal"]  # type: ignore[index]
    assert coal["value"].tolist() == list(COAL_T)  # the bare reading, then the canary
    before, after = outcome["window"]  # type: ignore[misc]
    stamped = [int(t.timestamp() * 1000) for t in coal["time"]]
    assert all(before <= ts <= after for ts in stamped)  # stamped by the agent on arrival
    energy_tj = [v * 25.8e-3 for v in COAL_T]  # IPCC 2006 coal NCV, GJ/t -> TJ
    assert outcome["co2e"] == pytest.approx([e * (94_600 + 10 * 28 + 1.5 * 265) for e in energy_tj])
    petcoke = series["kiln-petcoke"]  # type: ignore[index]
    assert petcoke["value"].tolist() == [0.07]
    assert [int(t.timestamp()) for t in petcoke["time"]] == [now_s]  # Telegraf's seconds
    grid = series["grid-main"]  # type: ignore[index]
    assert grid["value"].tolist() == [40.0]  # two registers make one interval
    kwh = co2e_kg_per_unit(settings, plant, "grid-main")
    assert outcome["grid_co2e"] == pytest.approx([40.0 * kwh])
    assert series["kiln-biomass"]["value"].tolist() == [0.25]  # type: ignore[index]
    expected = {reason: 0 for _, _, reason, _ in hostile}
    for _, _, reason, _ in hostile:
        expected[reason] += 1
    assert outcome["rejected"] == expected
    counters: dict[str, int] = outcome["counters"]  # type: ignore[assignment]
    # Every reading is accounted for: accepted, refused, or a counter's first register.
    assert counters["received"] == counters["accepted"] + len(hostile) + counters["baselines"]
    assert (counters["accepted"], counters["baselines"]) == (5, 1)
    letters: dict[str, str] = outcome["letters"]  # type: ignore[assignment]
    for _, _, reason, hint in hostile:
        assert any(hint in detail and why == reason for detail, why in letters.items()), (
            reason, hint, letters,
        )  # fmt: skip
