"""InfluxDB 2.x through its native API (``/api/v2/write``, Flux on ``/api/v2/query``).

Points are the same line protocol as the 1.x backend writes, so a bucket filled by one
path reads back through the other (given a DBRP mapping). Points are keyed by
measurement, tag set and timestamp: writing a reading again overwrites it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import pandas as pd
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from carbonlink.core.clock import wall_clock_ms
from carbonlink.core.tls import ca_file
from carbonlink.errors import StoreError
from carbonlink.storage._base import (
    ACTIVITY_COLUMNS,
    ACTIVITY_FIELDS,
    ACTIVITY_MEASUREMENT,
    ASSIGNMENT_MEASUREMENT,
    EMISSION_COLUMNS,
    EMISSIONS_MEASUREMENT,
    SEQUENCES_MEASUREMENT,
    ClosedOnExit,
    FactorVersions,
    StoredBatch,
    StoredReading,
    check_field,
    empty_series,
    totals_frame,
    typed_frame,
)
from carbonlink.storage._influxdb_v1 import (
    WRITE_CHUNK_LINES,
    assignment_lines,
    batch_lines,
    sequence_lines,
)

DEFAULT_TIMEOUT_S: Final = 10.0
# Flux's range() needs both ends; these stand for "unbounded" (stop is exclusive).
_RANGE_START_NS: Final = 0
_RANGE_STOP_NS: Final = 7_258_118_400 * 10**9  # 2200-01-01T00:00:00Z
_NS_PER_MS: Final = 1_000_000
_HTTP_SERVER_ERROR: Final = 500


def _flux_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{escaped}"'


class InfluxDBV2Store(ClosedOnExit):
    """``read_only``: a missing bucket is a StoreError (a writer needs it to exist too)."""

    def __init__(
        self,
        base_url: str,
        bucket: str,
        org: str,
        token: str | None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        read_only: bool = False,
    ) -> None:
        scheme = "influxdb2+https" if base_url.startswith("https") else "influxdb2"
        self.url = f"{scheme}://{base_url.split('://', 1)[1]}/{bucket}?org={org}"
        self.bucket = bucket
        self.org = org
        self._client = InfluxDBClient(
            url=base_url,
            token=token or "",
            org=org,
            timeout=int(timeout_s * 1000),
            # Verify against $CARBONLINK_CA_FILE when named, like every other connection.
            ssl_ca_cert=ca_file(),
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._query_api = self._client.query_api()
        if read_only:
            found = self._call("query", self._client.buckets_api().find_bucket_by_name, bucket)
            if found is None:
                self.close()
                raise StoreError(f"no bucket {bucket!r} on {self.url}", retryable=False)

    def write(self, readings: Sequence[StoredReading]) -> None:
        self.write_batch(StoredBatch.from_readings(readings))

    def write_batch(self, batch: StoredBatch) -> None:
        lines = batch_lines(batch)
        for start in range(0, len(lines), WRITE_CHUNK_LINES):
            chunk = lines[start : start + WRITE_CHUNK_LINES]
            self._call(
                "write",
                self._write_api.write,
                bucket=self.bucket,
                org=self.org,
                record=chunk,
                write_precision=WritePrecision.MS,
            )

    def series(
        self,
        plant: str,
        *,
        field: str = "co2e_kg",
        meter: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        factor_set: str | None = None,
        factor_version: str | None = None,
    ) -> pd.DataFrame:
        check_field(field)
        measurement = ACTIVITY_MEASUREMENT if field in ACTIVITY_FIELDS else EMISSIONS_MEASUREMENT
        tags = {"plant": plant, "meter": meter}
        if measurement == EMISSIONS_MEASUREMENT:
            tags |= {"factor_set": factor_set, "factor_version": factor_version}
        flux = self._from(measurement, start_ms, end_ms, tags, fields=(field,))
        frame = self._frame(flux + ' |> keep(columns: ["_time", "plant", "meter", "_value"])')
        if frame.empty:
            return empty_series()
        frame = frame.rename(columns={"_time": "time", "_value": "value"})
        frame = frame[["time", "plant", "meter", "value"]].astype({"value": "float64"})
        frame["time"] = pd.to_datetime(frame["time"], utc=True).astype("datetime64[ms, UTC]")
        return frame.sort_values(["time", "meter"], ignore_index=True)

    def emissions(
        self,
        plant: str | None = None,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        factor_set: str | None = None,
        factor_version: str | None = None,
    ) -> pd.DataFrame:
        tags = {"plant": plant, "factor_set": factor_set, "factor_version": factor_version}
        frame = self._pivoted(EMISSIONS_MEASUREMENT, start_ms, end_ms, tags)
        if not frame.empty:
            frame["scope"] = frame["scope"].astype(int)  # a tag, so it comes back as text
        return typed_frame(EMISSION_COLUMNS, frame)

    def activity(
        self,
        plant: str,
        *,
        meter: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> pd.DataFrame:
        tags = {"plant": plant, "meter": meter}
        return typed_frame(
            ACTIVITY_COLUMNS, self._pivoted(ACTIVITY_MEASUREMENT, start_ms, end_ms, tags)
        )

    def totals(
        self,
        versions: FactorVersions,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> pd.DataFrame:
        counts = self._per_plant(ACTIVITY_MEASUREMENT, "value", "count", start_ms, end_ms)
        co2e: dict[str, float] = {}
        for plant, (factor_set, factor_version) in versions.items():
            tags = {"plant": plant, "factor_set": factor_set, "factor_version": factor_version}
            flux = self._from(EMISSIONS_MEASUREMENT, start_ms, end_ms, tags, fields=("co2e_kg",))
            frame = self._frame(flux + ' |> group(columns: ["plant"]) |> sum()')
            co2e[plant] = 0.0 if frame.empty else float(frame["_value"].iloc[0])
        return totals_frame(versions, {p: int(n) for p, n in counts.items()}, co2e)

    def assign_factors(self, versions: FactorVersions) -> None:
        # One series per plant (see the 1.x store): delete the plant's earlier ones.
        delete_api = self._client.delete_api()
        for plant in sorted(versions):
            predicate = f'_measurement="{ASSIGNMENT_MEASUREMENT}" AND plant={_flux_string(plant)}'
            self._call(
                "delete",
                delete_api.delete,
                pd.Timestamp(_RANGE_START_NS, tz="UTC").to_pydatetime(),
                pd.Timestamp(_RANGE_STOP_NS, tz="UTC").to_pydatetime(),
                predicate,
                bucket=self.bucket,
                org=self.org,
            )
        self._call(
            "write",
            self._write_api.write,
            bucket=self.bucket,
            org=self.org,
            record=assignment_lines(versions, wall_clock_ms()),
            write_precision=WritePrecision.MS,
        )

    def assigned_factors(self) -> dict[str, tuple[str, str]]:
        flux = self._from(ASSIGNMENT_MEASUREMENT, None, None, {}, fields=("assigned",))
        frame = self._frame(flux + ' |> group(columns: ["plant"]) |> last()')
        if frame.empty:
            return {}
        return {
            str(p): (str(fs), str(fv))
            for p, fs, fv in zip(
                frame["plant"], frame["factor_set"], frame["factor_version"], strict=True
            )
        }

    def record_sequences(self, rows: Sequence[tuple[str, int]]) -> None:
        # Never run against a real 2.x server (docs/operations.md): like every method here.
        if rows:
            self._call(
                "write", self._write_api.write, bucket=self.bucket, org=self.org,
                record=sequence_lines(rows), write_precision=WritePrecision.MS,
            )  # fmt: skip

    def sequence_gaps(self, max_gap: int) -> dict[str, int]:
        # Gaps counted on the server, as the 1.x store does: a row per agent comes back.
        flux = self._from(SEQUENCES_MEASUREMENT, None, None, {}, fields=("seq",))
        flux += ' |> group(columns: ["agent"]) |> sort(columns: ["_value"])'
        agents = self._frame(flux + " |> last()")
        gaps = self._frame(
            flux + " |> difference() |> map(fn: (r) => ({r with _value: r._value - 1}))"
            f" |> filter(fn: (r) => r._value > 0 and r._value <= {int(max_gap)}) |> sum()"
        )
        found = {} if gaps.empty else dict(zip(gaps["agent"], gaps["_value"], strict=True))
        return {} if agents.empty else {str(a): int(found.get(a, 0)) for a in agents["agent"]}

    def count_readings(self, plant: str | None = None) -> int:
        counts = self._per_plant(ACTIVITY_MEASUREMENT, "value", "count", None, None, plant)
        return int(sum(counts.values()))

    def time_range(self, plant: str | None = None) -> tuple[int, int] | None:
        flux = self._from(ACTIVITY_MEASUREMENT, None, None, {"plant": plant}, fields=("value",))
        ends = []
        for selector in ("first", "last"):
            frame = self._frame(flux + f" |> group() |> {selector}()")
            if frame.empty:
                return None
            ends.append(int(pd.Timestamp(frame["_time"].iloc[0]).value // _NS_PER_MS))
        return ends[0], ends[1]

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    # --- internals ----------------------------------------------------------------

    def _from(
        self,
        measurement: str,
        start_ms: int | None,
        end_ms: int | None,
        tags: Mapping[str, str | None],
        fields: Sequence[str] = (),
    ) -> str:
        start = _RANGE_START_NS if start_ms is None else start_ms * _NS_PER_MS
        stop = _RANGE_STOP_NS if end_ms is None else end_ms * _NS_PER_MS
        conditions = [f"r._measurement == {_flux_string(measurement)}"]
        conditions += [f"r.{k} == {_flux_string(v)}" for k, v in tags.items() if v is not None]
        if fields:
            either = " or ".join(f"r._field == {_flux_string(f)}" for f in fields)
            conditions.append(f"({either})")
        return (
            f"from(bucket: {_flux_string(self.bucket)})"
            f" |> range(start: time(v: {start}), stop: time(v: {stop}))"
            f" |> filter(fn: (r) => {' and '.join(conditions)})"
        )

    def _pivoted(
        self,
        measurement: str,
        start_ms: int | None,
        end_ms: int | None,
        tags: dict[str, str | None],
    ) -> pd.DataFrame:
        flux = self._from(measurement, start_ms, end_ms, tags) + (
            ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
            ' |> drop(columns: ["_start", "_stop", "_measurement"])'
        )
        frame = self._frame(flux)
        return frame.rename(columns={"_time": "time"}) if not frame.empty else frame

    def _per_plant(
        self,
        measurement: str,
        field: str,
        function: str,
        start_ms: int | None,
        end_ms: int | None,
        plant: str | None = None,
    ) -> dict[str, float]:
        flux = self._from(measurement, start_ms, end_ms, {"plant": plant}, fields=(field,))
        frame = self._frame(flux + f' |> group(columns: ["plant"]) |> {function}()')
        if frame.empty:
            return {}
        return {str(p): float(v) for p, v in zip(frame["plant"], frame["_value"], strict=True)}

    def _frame(self, flux: str) -> pd.DataFrame:
        result = self._call("query", self._query_api.query_data_frame, flux, org=self.org)
        # One frame per table schema; several when series differ in their columns.
        tables: list[pd.DataFrame] = result if isinstance(result, list) else [result]
        frames = [f for f in tables if not f.empty]
        if not frames:
            return pd.DataFrame()
        frame = pd.concat(frames, ignore_index=True)
        return frame.drop(columns=["result", "table"], errors="ignore")

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except ApiException as exc:
            status = int(exc.status or 0)
            raise StoreError(
                f"influxdb2 {what}: HTTP {status}: {str(exc.body)[:300]}",
                retryable=status >= _HTTP_SERVER_ERROR,
            ) from exc
        except (Urllib3HTTPError, OSError) as exc:
            raise StoreError(f"influxdb2 unreachable: {exc}", retryable=True) from exc
