"""InfluxDB 1.x rollups: hourly and daily sums written by the store after each batch.

Why written by the store rather than continuous queries: a CQ rolls up only the
intervals just ended (or, with RESAMPLE FOR, a fixed look-back), so a reading arriving a
day late, or a recompute of last month to a new factor version, would never reach its
hour. The store knows which hours each batch touched and re-rolls exactly those, with
``GROUP BY time(1h, 1ms)`` pushed into InfluxDB (the 1 ms offset is the interval-end
rule of ``_buckets``), then those days from their hours. Points of the rollup
measurements have the raw points' tag set, so a re-roll overwrites its bucket in place.

Measurements: ``emissions_1h``, ``emissions_1d``, ``activity_1h``, ``activity_1d``,
stamped with the bucket's start.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

from carbonlink.storage._base import ACTIVITY_MEASUREMENT, EMISSIONS_MEASUREMENT
from carbonlink.storage._buckets import DAY_MS, HOUR_MS, days_of, runs

EMISSION_TAGS: Final = (
    "plant", "meter", "activity", "source", "scope", "category", "factor_set",
    "factor_version", "gwp",
)  # fmt: skip
ACTIVITY_TAGS: Final = ("plant", "meter")
SUMMED: Final = (
    "converted_amount", "co2_kg", "ch4_kg", "n2o_kg", "co2e_kg", "biogenic_co2_kg",
    "u95_factor_lower_kg", "u95_factor_upper_kg", "u95_meter_kg",
)  # fmt: skip
_UNCERTAINTY: Final = ("u95_factor_lower_kg", "u95_factor_upper_kg", "u95_meter_kg")
_INTERVAL: Final = {HOUR_MS: "1h", DAY_MS: "1d"}


def measurement(kind: str, step_ms: int) -> str:
    return f"{kind}_{_INTERVAL[step_ms]}"


def hour_queries(plant_literal: str, hours: Iterable[int]) -> list[tuple[str, str]]:
    """(rollup measurement, InfluxQL) re-rolling each run of ``hours`` from raw points."""
    out = []
    for first, end in runs(hours, HOUR_MS):
        where = f'"plant" = {plant_literal} AND time >= {first + 1}ms AND time < {end + 1}ms'
        out.append((
            measurement(EMISSIONS_MEASUREMENT, HOUR_MS),
            'SELECT count("co2e_kg") AS readings, '
            + ", ".join(f'count("{c}") AS known_{c}' for c in _UNCERTAINTY) + ", "
            + ", ".join(f'sum("{c}") AS {c}' for c in SUMMED)
            + f', first("converted_unit") AS converted_unit FROM "{EMISSIONS_MEASUREMENT}" '
            f"WHERE {where} GROUP BY time(1h, 1ms), {_tags(EMISSION_TAGS[1:])} fill(none)",
        ))  # fmt: skip
        out.append((
            measurement(ACTIVITY_MEASUREMENT, HOUR_MS),
            'SELECT count("value") AS readings, sum("value") AS value, '
            'sum("duration_s") AS duration_s, first("unit") AS unit '
            f'FROM "{ACTIVITY_MEASUREMENT}" WHERE {where} GROUP BY time(1h, 1ms), "meter" '
            "fill(none)",
        ))  # fmt: skip
    return out


def day_queries(plant_literal: str, hours: Iterable[int]) -> list[tuple[str, str]]:
    """(rollup measurement, InfluxQL) re-rolling the days of ``hours`` from their hours."""
    out = []
    for first, end in runs(days_of(hours), DAY_MS):
        where = f'"plant" = {plant_literal} AND time >= {first}ms AND time < {end}ms'
        out.append((
            measurement(EMISSIONS_MEASUREMENT, DAY_MS),
            'SELECT sum("readings") AS readings, sum("unknown") AS unknown, '
            + ", ".join(f'sum("{c}") AS {c}' for c in SUMMED)
            + ', first("converted_unit") AS converted_unit '
            f'FROM "{measurement(EMISSIONS_MEASUREMENT, HOUR_MS)}" WHERE {where} '
            f"GROUP BY time(1d), {_tags(EMISSION_TAGS[1:])} fill(none)",
        ))  # fmt: skip
        out.append((
            measurement(ACTIVITY_MEASUREMENT, DAY_MS),
            'SELECT sum("readings") AS readings, sum("value") AS value, '
            'sum("duration_s") AS duration_s, first("unit") AS unit '
            f'FROM "{measurement(ACTIVITY_MEASUREMENT, HOUR_MS)}" WHERE {where} '
            'GROUP BY time(1d), "meter" fill(none)',
        ))  # fmt: skip
    return out


def rollup_lines(
    target: str, plant: str, result: dict[str, Any], tag: Any, text: Any
) -> list[bytes]:
    """Line protocol for the rollup points of one query's ``result``. The hourly query
    answers bucket starts offset by 1 ms; points are stamped with the bucket start."""
    lines = []
    hourly = target.endswith("_1h")
    for series in result.get("series", []):
        tags = {"plant": plant, **series.get("tags", {})}
        prefix = f"{target}," + ",".join(f"{k}={tag(v)}" for k, v in sorted(tags.items()))
        columns = series["columns"]
        for row in series["values"]:
            values = dict(zip(columns, row, strict=True))
            stamp = int(values.pop("time")) - (1 if hourly else 0)
            if hourly and "known_u95_meter_kg" in values:
                known = min(int(values.pop(f"known_{c}") or 0) for c in _UNCERTAINTY)
                values["unknown"] = int(values["readings"] or 0) - known
            fields = []
            for name, value in values.items():
                if name in ("readings", "unknown"):
                    fields.append(f"{name}={int(value or 0)}i")
                elif name in ("unit", "converted_unit"):
                    fields.append(f"{name}={text(str(value or ''))}")
                else:
                    fields.append(f"{name}={float(value or 0.0)!r}")
            lines.append(f"{prefix} {','.join(fields)} {stamp}".encode())
    return lines


def select(kind: str, step_ms: int, where: str) -> str:
    tags = EMISSION_TAGS if kind == EMISSIONS_MEASUREMENT else ACTIVITY_TAGS
    fields: Sequence[str] = (
        ("readings", "unknown", *SUMMED, "converted_unit")
        if kind == EMISSIONS_MEASUREMENT
        else ("readings", "value", "duration_s", "unit")
    )
    columns = ", ".join(f'"{c}"' for c in (*fields, *tags))
    return f'SELECT {columns} FROM "{measurement(kind, step_ms)}" WHERE {where}'


def _tags(tags: Sequence[str]) -> str:
    return ", ".join(f'"{t}"' for t in tags)
