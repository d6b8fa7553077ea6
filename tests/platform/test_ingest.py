"""The platform re-checks telemetry and applies the plant's factor set (no broker needed)."""

from __future__ import annotations

import json

import pytest

from carbonlink import wire
from carbonlink.config import load_config
from carbonlink.platform import Ingestor
from tests.configs import REPO_CONFIG

TS = 1_795_420_800_000


@pytest.fixture(scope="module")
def ingestor() -> Ingestor:
    return Ingestor.from_settings(load_config(REPO_CONFIG / "carbonlink.yaml"))


def telemetry(
    plant: str, *rows: tuple[str, float, str], topic_plant: str | None = None
) -> tuple[str, bytes]:
    readings = tuple(
        wire.Reading(meter, TS + k * 60_000, value, unit, 60_000)
        for k, (meter, value, unit) in enumerate(rows)
    )
    batch = wire.TelemetryBatch(plant, f"agent-{plant}", 1, TS, readings)
    return wire.telemetry_topic(topic_plant or plant), wire.encode_telemetry(batch)


def test_factor_set_applied_and_recorded(ingestor: Ingestor) -> None:
    result = ingestor.ingest(
        *telemetry("steel-01", ("eaf-power", 1000.0, "kWh"), ("steel-output", 2.0, "t"))
    )
    power, steel = result.stored
    assert power.emission is not None
    assert power.emission.co2e_kg == pytest.approx(1000 * 0.6361)  # CN-North 2023, kg/kWh
    assert (power.emission.scope, power.emission.source) == (2, "electricity")
    assert (power.emission.factor_set, power.emission.gwp) == ("ipcc2006-cn2023", "AR5")
    assert steel.emission is not None
    assert steel.emission.co2_kg == pytest.approx(2.0 * 80)  # EAF 0.08 t CO2 per t steel
    assert (steel.emission.scope, steel.emission.category) == (1, "2.C.1")


def test_output_only_meter_stored_without_emission(ingestor: Ingestor) -> None:
    result = ingestor.ingest(*telemetry("textiles-01", ("fabric-output", 0.07, "t")))
    assert [r.emission for r in result.stored] == [None]


def test_bad_rows_rejected_with_reasons_good_rows_kept(ingestor: Ingestor) -> None:
    result = ingestor.ingest(
        *telemetry(
            "cement-01",
            ("kiln-coal", 0.3, "t"),
            ("ghost", 1.0, "t"),
            ("kiln-coal", 0.3, "kg"),
            ("kiln-coal", -0.3, "t"),
            ("kiln-petcoke", 0.07, "t"),
        )
    )
    assert [(r.meter, r.value) for r in result.stored] == [
        ("kiln-coal", 0.3),
        ("kiln-petcoke", 0.07),
    ]
    assert [(e.reason, e.meter) for e in result.rejected] == [
        ("unknown_meter", "ghost"),
        ("wrong_unit", "kiln-coal"),
        ("negative", "kiln-coal"),
    ]


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (*telemetry("nowhere", ("x", 1.0, "t")), "unknown_plant"),
        (
            *telemetry("cement-01", ("kiln-coal", 1.0, "t"), topic_plant="steel-01"),
            "topic_mismatch",
        ),
        (wire.telemetry_topic("cement-01"), b"\x00garbage", "malformed_json"),
        (
            wire.telemetry_topic("cement-01"),
            json.dumps({"v": 1, "plant": "cement-01"}).encode(),
            "bad_schema",
        ),
    ],
)
def test_unusable_messages_rejected_whole(
    ingestor: Ingestor, topic: str, payload: bytes, reason: str
) -> None:
    result = ingestor.ingest(topic, payload)
    assert result.stored == ()
    assert [e.reason for e in result.rejected] == [reason]
