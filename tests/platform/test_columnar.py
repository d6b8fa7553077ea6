"""The columnar hot path gives exactly what the row-by-row reference path gives.

The platform checks a telemetry message column by column and computes its emissions as
one numpy product per batch; any message with a bad row falls back to the reference
path. Both must store the same values to the last bit, refuse the same rows for the
same reasons, and write the same points to InfluxDB.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbonlink import wire
from carbonlink.config import load_config
from carbonlink.platform import Ingestor
from carbonlink.platform._spill import SpillFile, decode_item, encode_batch, encode_stored
from carbonlink.storage import StoredBatch
from carbonlink.storage._influxdb_v1 import batch_lines, reading_lines
from tests.configs import REPO_CONFIG

TS = 1_795_420_800_000
SETTINGS = load_config(REPO_CONFIG / "carbonlink.yaml")


@pytest.fixture(scope="module")
def ingestor() -> Ingestor:
    return Ingestor.from_settings(SETTINGS)


def payload(plant: str, rows: list[list[object]]) -> tuple[str, bytes]:
    """A telemetry message whose rows are (meter, ts, value, unit, dur_ms, q), raw."""
    columns = {name: [row[n] for row in rows] for n, name in enumerate(wire.TELEMETRY_COLUMNS)}
    body = {"v": 1, "plant": plant, "agent": f"agent-{plant}", "seq": 7, "sent_ms": TS,
            "readings": columns}  # fmt: skip
    return wire.telemetry_topic(plant), json.dumps(body, allow_nan=True).encode()


def every_meter_rows(count: int) -> list[tuple[str, list[list[object]]]]:
    """Valid rows for every meter of every configured plant, awkward values included (as
    shares of what the meter can plausibly measure in the interval)."""
    shares = [0.0, 1e-7, 0.38, 1.0 / 3.0, 2 / 3, 0.999_999, 5e-324, 0.123456789]
    out = []
    for plant in SETTINGS.plants.values():
        rows: list[list[object]] = [
            [m.id, TS + k * 60_000, shares[(k + j) % len(shares)] * m.ceiling(60_000), m.unit,
             60_000, "estimated" if k % 3 else "measured"]
            for k in range(count)
            for j, m in enumerate(plant.meters)
        ]  # fmt: skip
        out.append((plant.id, rows))
    return out


def test_valid_messages_take_the_columnar_path_with_identical_results(ingestor: Ingestor) -> None:
    for plant, rows in every_meter_rows(12):
        topic, body = payload(plant, rows)
        fast = ingestor.ingest(topic, body)
        reference = ingestor.ingest(topic, body, columnar=False)
        assert fast.rejected == reference.rejected == ()
        assert fast.stored == reference.stored  # dataclass equality: floats bit for bit
        assert np.array_equal(fast.batch.numbers, reference.batch.numbers)
        sources = {m.id for m in SETTINGS.plants[plant].meters if m.activity is not None}
        assert {r.meter for r in fast.stored if r.emission is not None} == sources


def test_the_columnar_emissions_are_the_factor_libraries_own(ingestor: Ingestor) -> None:
    topic, body = payload("cement-01", [["kiln-coal", TS, 0.38, "t", 60_000, "measured"]])
    (reading,) = ingestor.ingest(topic, body).stored
    assert reading.emission is not None
    # 0.38 t x 25.8 GJ/t; IPCC 2006 94,600 kg CO2/TJ, AR5 (docs/wire-format.md).
    assert reading.emission.co2_kg == pytest.approx(0.38 * 25.8e-3 * 94_600)
    assert reading.emission.co2e_kg == pytest.approx(934.1, abs=0.05)


ODD_ITEMS = st.one_of(
    st.none(), st.booleans(), st.text(max_size=3), st.lists(st.integers(), max_size=1),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)  # fmt: skip


@st.composite
def messy_rows(draw: st.DrawFn) -> tuple[str, list[list[object]]]:
    plant = draw(st.sampled_from(sorted(SETTINGS.plants)))
    meters = SETTINGS.plants[plant].meters
    rows = []
    for _ in range(draw(st.integers(0, 8))):
        meter = draw(st.sampled_from(meters))
        row: list[object] = [
            meter.id, TS + draw(st.integers(0, 10**6)) * 1000,
            draw(st.floats(min_value=0, max_value=1e6)), meter.unit, 60_000, "measured",
        ]  # fmt: skip
        if draw(st.booleans()):  # spoil one field
            position = draw(st.integers(0, 5))
            row[position] = draw(st.one_of(ODD_ITEMS, st.sampled_from(["ghost", "kg", -1.5])))
        rows.append(row)
    return plant, rows


@settings(max_examples=300, deadline=None)
@given(messy_rows())
def test_bad_rows_are_refused_alike_and_good_rows_kept_alike(
    case: tuple[str, list[list[object]]],
) -> None:
    ingestor = Ingestor.from_settings(SETTINGS)
    plant, rows = case
    topic, body = payload(plant, rows)
    fast = ingestor.ingest(topic, body)
    reference = ingestor.ingest(topic, body, columnar=False)
    assert fast.stored == reference.stored
    assert [(e.reason, e.detail, e.meter) for e in fast.rejected] == [
        (e.reason, e.detail, e.meter) for e in reference.rejected
    ]
    assert len(fast.stored) + len(fast.rejected) == len(rows)


def _parse_line(line: str) -> tuple[str, dict[str, str], dict[str, object], int]:
    """(measurement, tags, fields with numbers as floats, timestamp) of one line."""
    head, fields_text, ts = line.rsplit(" ", 2)
    measurement, *tag_pairs = head.split(",")
    fields: dict[str, object] = {}
    for pair in fields_text.split(","):
        key, value = pair.split("=", 1)
        fields[key] = value if value.startswith('"') else float(value)
    return measurement, dict(p.split("=", 1) for p in tag_pairs), fields, int(ts)


def test_batch_line_protocol_matches_the_per_reading_lines(ingestor: Ingestor) -> None:
    for plant, rows in every_meter_rows(9):
        batch = ingestor.ingest(*payload(plant, rows)).batch
        fast = [_parse_line(line.decode()) for line in batch_lines(batch)]
        reference = [_parse_line(line) for r in batch.readings() for line in reading_lines(r)]
        assert fast == reference


def test_stored_batch_converts_losslessly(ingestor: Ingestor) -> None:
    batches = [ingestor.ingest(*payload(p, rows)).batch for p, rows in every_meter_rows(3)]
    joined = StoredBatch.concat(batches)
    assert joined.readings() == [r for b in batches for r in b.readings()]
    again = StoredBatch.from_readings(joined.readings())
    assert again.readings() == joined.readings()
    assert len(StoredBatch.concat([])) == 0


def test_spill_items_round_trip_and_old_items_still_read(
    ingestor: Ingestor, tmp_path: Path
) -> None:
    batch = StoredBatch.concat(
        [ingestor.ingest(*payload(p, rows)).batch for p, rows in every_meter_rows(4)]
    )
    assert decode_item(encode_batch(batch)).readings() == batch.readings()
    old_style = batch.readings()[0]
    assert decode_item(encode_stored(old_style)).readings() == [old_style]
    spill = SpillFile(tmp_path / "spill.sqlite")
    try:
        spill.add(batch)
        spill.add(batch)
        last_id, first = spill.oldest(len(batch))  # the limit stops after one item
        assert first.readings() == batch.readings()
        spill.remove_through(last_id)
        assert len(spill) == 1
    finally:
        spill.close()


def test_huge_and_non_finite_values_are_refused_not_crashing(ingestor: Ingestor) -> None:
    rows: list[list[object]] = [
        ["kiln-coal", TS, 10**400, "t", 60_000, "measured"],
        ["kiln-coal", TS + 1, math.inf, "t", 60_000, "measured"],
        ["kiln-coal", TS + 2, 1.7976931348623157e308, "t", 60_000, "measured"],  # CO2e: inf
        ["kiln-coal", TS + 3, 0.5, "t", 60_000, "measured"],
    ]
    topic, body = payload("cement-01", rows)
    result = ingestor.ingest(topic, body)
    assert [r.value for r in result.stored] == [0.5]
    # Too large for a float, infinite, and finite but beyond the meter's rating.
    assert [e.reason for e in result.rejected] == ["not_finite", "not_finite", "implausible"]
