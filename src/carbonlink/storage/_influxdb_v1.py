"""InfluxDB through the 1.x HTTP API (``/write``, ``/query``).

Served by InfluxDB 1.x natively, and by 2.x and 3.x through their 1.x compatibility
endpoints (with a DBRP mapping on 2.x). Points are keyed by measurement, tag set and
timestamp, so writing the same reading again overwrites it: idempotent by design.

Opening it runs ``CREATE DATABASE``, best effort: 2.x answers "not implemented" (HTTP 200,
influxdata/influxdb#22255), and a login without admin rights gets 401 or 403; the store
then opens anyway, with a warning, on the database (or DBRP mapping) made beforehand.
"""

from __future__ import annotations

import logging
import math
import socket
import ssl
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import httpx
import numpy as np
import numpy.typing as npt
import orjson
import pandas as pd

from carbonlink.core.clock import wall_clock_ms
from carbonlink.core.tls import client_context
from carbonlink.errors import StoreError
from carbonlink.storage import _rollup_influxql as rollup
from carbonlink.storage._base import (
    ACTIVITY_COLUMNS,
    ACTIVITY_FIELDS,
    ACTIVITY_MEASUREMENT,
    ASSIGNMENT_MEASUREMENT,
    EMISSION_COLUMNS,
    EMISSIONS_MEASUREMENT,
    SEQUENCES_MEASUREMENT,
    ClosedOnExit,
    EmissionTags,
    FactorVersions,
    StoredBatch,
    StoredReading,
    check_field,
    empty_series,
    totals_frame,
    typed_frame,
)
from carbonlink.storage._buckets import DAY_MS, HOUR_MS, hours_touched

log = logging.getLogger(__name__)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S: Final = 10.0
# Above ~5,000 lines per request InfluxDB's own guidance sees no further gain.
WRITE_CHUNK_LINES: Final = 5_000
# Requests in flight at once while writing one batch. InfluxDB 1.x answers a write
# after its WAL fsync, so one connection leaves it idle between requests: two writers
# took it from ~33,000 to ~59,000 readings/s on the benchmark machine, four no further
# (docs/performance.md).
DEFAULT_WRITE_CONCURRENCY: Final = 2
# Re-rolls of the hours written are gathered this long and run together, off the write
# path: re-rolling per batch doubled the cost of a 10,000-reading batch of 1 s data
# (each re-roll reads its whole hour). Other processes see rollups this much behind
# (plus the re-roll's own time); this store's own queries re-roll first.
ROLLUP_COALESCE_S: Final = 2.0

# A write request's body goes to the socket in pieces of this many lines (~70 KiB),
# never joined into one buffer. Joined 5,000-line bodies (~1.5 MiB each, which httpcore
# sends by slicing off what each send() took: a dozen more transient buffers of up to
# 1.5 MiB) made the platform's RSS grow 5-9 MiB per 10 minutes for as long as it wrote,
# while Python's heap and the live malloc'd bytes (heaptrack) stayed flat. Neither
# MALLOC_ARENA_MAX=1 nor a fixed mmap threshold stopped it; not making the big buffers
# did. Bisection and figures: docs/performance.md, "Flat memory".
BODY_PIECE_LINES: Final = 256
# An activity point read with any of these missing is one still being written (activity).
HALF_WRITTEN_FIELDS: Final = ("value", "duration_s", "unit")

_TAG_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "=": r"\="})


def _tag(value: str) -> str:
    return value.translate(_TAG_ESCAPES)


def _text_field(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def reading_lines(reading: StoredReading) -> list[str]:
    """Line protocol for one reading: its activity point and, if any, its emission point."""
    r = reading
    lines = [
        f"{ACTIVITY_MEASUREMENT},plant={_tag(r.plant)},meter={_tag(r.meter)} "
        f"value={r.value!r},duration_s={r.duration_ms / 1000!r},unit={_text_field(r.unit)},"
        f"quality={_text_field(r.quality)} {r.ts_ms}"
    ]
    if (e := r.emission) is not None:
        lines.append(
            f"{EMISSIONS_MEASUREMENT},plant={_tag(r.plant)},meter={_tag(r.meter)},"
            f"activity={_tag(e.activity)},source={_tag(e.source)},scope={e.scope},"
            f"category={_tag(e.category)},factor_set={_tag(e.factor_set)},"
            f"factor_version={_tag(e.factor_version)},gwp={_tag(e.gwp)} "
            f"co2_kg={e.co2_kg!r},ch4_kg={e.ch4_kg!r},n2o_kg={e.n2o_kg!r},co2e_kg={e.co2e_kg!r},"
            f"biogenic_co2_kg={e.biogenic_co2_kg!r},converted_amount={e.converted_amount!r},"
            f"u95_factor_lower_kg={e.u95_factor_lower_kg!r},"
            f"u95_factor_upper_kg={e.u95_factor_upper_kg!r},u95_meter_kg={e.u95_meter_kg!r},"
            f"converted_unit={_text_field(e.converted_unit)} {r.ts_ms}"
        )
    return lines


def sequence_lines(rows: Sequence[tuple[str, int]]) -> list[str]:
    """A point per (agent, seq), at time ``seq`` ms: a repeat overwrites itself."""
    return [f"{SEQUENCES_MEASUREMENT},agent={_tag(agent)} seq={seq}i {seq}" for agent, seq in rows]


def assignment_lines(versions: FactorVersions, ts_ms: int) -> list[str]:
    """One point per plant: the factor set and version it counts under now (as tags, so
    ``SHOW TAG VALUES`` gives them to Grafana's variables)."""
    return [
        f"{ASSIGNMENT_MEASUREMENT},plant={_tag(plant)},factor_set={_tag(factor_set)},"
        f"factor_version={_tag(factor_version)} assigned=true {ts_ms}"
        for plant, (factor_set, factor_version) in sorted(versions.items())
    ]


def _number_texts(values: Sequence[float] | npt.NDArray[np.float64]) -> list[bytes]:
    """Each number as line-protocol text, formatted by orjson: the shortest text that
    reads back as the same double, as ``repr`` gives, at about a sixth of repr's cost."""
    if len(values) == 0:
        return []
    if isinstance(values, np.ndarray):
        text = orjson.dumps(np.ascontiguousarray(values), option=orjson.OPT_SERIALIZE_NUMPY)
    else:
        text = orjson.dumps(values)
    return text[1:-1].split(b",")


def batch_lines(batch: StoredBatch) -> list[bytes]:
    """Line protocol for a whole batch, reading by reading as ``reading_lines`` gives it
    (a test holds every tag, timestamp and field value equal), with tag prefixes and text
    fields built once per series and numbers formatted a column at a time.

    Floats may be spelt differently from ``repr`` (``1e-7`` for ``1e-07``); InfluxDB
    reads both as the same double.
    """
    lines: list[bytes] = []
    append = lines.append
    activity_prefixes: dict[tuple[str, str], bytes] = {}
    emission_prefixes: dict[tuple[str, str, EmissionTags], bytes] = {}
    texts: dict[str, bytes] = {}
    durations: dict[int, bytes] = {}
    numbers = batch.numbers
    columns = [_number_texts(numbers[:, j]) for j in range(numbers.shape[1])]
    rows = zip(
        batch.plant, batch.meter, _number_texts(batch.ts_ms), _number_texts(batch.value),
        batch.unit, batch.duration_ms, batch.quality, batch.tags, *columns, strict=True,
    )  # fmt: skip
    for (
        plant, meter, ts, value, unit, duration_ms, quality, tags,
        amount, co2, ch4, n2o, co2e, biogenic, u_low, u_high, u_meter,
    ) in rows:  # fmt: skip
        prefix = activity_prefixes.get((plant, meter))
        if prefix is None:
            prefix = (
                f"{ACTIVITY_MEASUREMENT},plant={_tag(plant)},meter={_tag(meter)} value="
            ).encode()
            activity_prefixes[plant, meter] = prefix
        unit_text = texts.get(unit) or texts.setdefault(unit, _text_field(unit).encode())
        quality_text = texts.get(quality) or texts.setdefault(
            quality, _text_field(quality).encode()
        )
        duration = durations.get(duration_ms) or durations.setdefault(
            duration_ms, repr(duration_ms / 1000).encode()
        )
        append(
            b"%s%s,duration_s=%s,unit=%s,quality=%s %s"
            % (prefix, value, duration, unit_text, quality_text, ts)
        )
        if tags is None:
            continue
        eprefix = emission_prefixes.get((plant, meter, tags))
        if eprefix is None:
            eprefix = (
                f"{EMISSIONS_MEASUREMENT},plant={_tag(plant)},meter={_tag(meter)},"
                f"activity={_tag(tags.activity)},source={_tag(tags.source)},scope={tags.scope},"
                f"category={_tag(tags.category)},factor_set={_tag(tags.factor_set)},"
                f"factor_version={_tag(tags.factor_version)},gwp={_tag(tags.gwp)} co2_kg="
            ).encode()
            emission_prefixes[plant, meter, tags] = eprefix
        converted = texts.get(tags.converted_unit) or texts.setdefault(
            tags.converted_unit, _text_field(tags.converted_unit).encode()
        )
        append(
            b"%s%s,ch4_kg=%s,n2o_kg=%s,co2e_kg=%s,biogenic_co2_kg=%s,converted_amount=%s,"
            b"u95_factor_lower_kg=%s,u95_factor_upper_kg=%s,u95_meter_kg=%s,"
            b"converted_unit=%s %s"
            % (
                eprefix, co2, ch4, n2o, co2e, biogenic, amount, u_low, u_high, u_meter,
                converted, ts,
            )
        )  # fmt: skip
    return lines


_NOT_IMPLEMENTED: Final = "not implemented"
_NOT_ALLOWED: Final = (401, 403)


class InfluxDBV1Store(ClosedOnExit):
    """``read_only``: never create the database; a missing one is a StoreError."""

    def __init__(
        self,
        base_url: str,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        write_concurrency: int = DEFAULT_WRITE_CONCURRENCY,
        read_only: bool = False,
    ) -> None:
        self.url = f"influxdb://{base_url.split('://', 1)[1]}/{database}"
        self.database = database
        auth = {"u": username, "p": password} if username else {}
        self._params: dict[str, str] = {k: v for k, v in auth.items() if v is not None}
        # Verify against $CARBONLINK_CA_FILE when named, like every other connection.
        verify: ssl.SSLContext | bool = client_context() if base_url.startswith("https") else True
        # TCP_NODELAY: a body goes out in pieces (BODY_PIECE_LINES); with Nagle's
        # algorithm each piece's last partial segment waited for the server's delayed
        # ACK, ~40 ms a piece, which cut the write rate to a tenth.
        transport = httpx.HTTPTransport(
            verify=verify, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        )
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, transport=transport)
        self._writers = ThreadPoolExecutor(
            max(1, write_concurrency), thread_name_prefix="carbonlink-influxdb"
        )
        # Re-rolls run one at a time: each reads the raw points after its own batch
        # landed, so the last one to run sees every batch written before it.
        self._reroll_lock = threading.RLock()
        # Hours written and not yet re-rolled, per plant: re-rolled together by a
        # background thread every ROLLUP_COALESCE_S (one re-roll per hour, not per
        # batch), and before this store answers any rollup query.
        self._dirty: dict[str, set[int]] = {}
        self._dirty_lock = threading.Lock()
        self._dirty_event = threading.Event()
        self._closing = threading.Event()
        self._roller: threading.Thread | None = None
        if read_only:
            self._check_database()
        else:
            self._create_database()
        self._has_rollups = self._rollups_ready(read_only)

    def _create_database(self) -> None:
        """``CREATE DATABASE``, skipped with a warning where it cannot be run: "not
        implemented" (the 1.x compatibility API of InfluxDB 2.x and 3.x), 401 or 403 (a
        login that may write but not administer). Any other refusal stops the opening."""
        params = {"q": f'CREATE DATABASE "{self.database}"', **self._params}
        try:
            response = self._request("POST", "/query", params=params)
        except StoreError:
            self.close()
            raise
        answer = response.text[:300]
        if response.status_code == 200:
            try:
                error = response.json()["results"][0].get("error")
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                error = f"unreadable answer: {answer}"
            if not error:
                return
            if not str(error).startswith(_NOT_IMPLEMENTED):
                self.close()
                raise StoreError(f"influxdb {self.url}: CREATE DATABASE: {error}", retryable=False)
        elif response.status_code not in _NOT_ALLOWED:
            self.close()
            raise StoreError(
                f"influxdb {self.url}: CREATE DATABASE: HTTP {response.status_code}: {answer}",
                retryable=response.status_code >= 500,
            )
        log.warning(
            "influxdb %s: CREATE DATABASE skipped (%s); writing to %r as it exists (on "
            "InfluxDB 2.x: a bucket with a DBRP mapping for it, docs/operations.md)",
            self.url, f"HTTP {response.status_code}: {answer}", self.database,
        )  # fmt: skip

    def _check_database(self) -> None:
        shown = self._influxql("SHOW DATABASES")
        names = {row[0] for series in shown.get("series", []) for row in series.get("values", [])}
        if self.database not in names:
            self.close()
            known = ", ".join(sorted(names)) or "none"
            raise StoreError(
                f"no database {self.database!r} on {self.url} (databases: {known})",
                retryable=False,
            )

    def write(self, readings: Sequence[StoredReading]) -> None:
        self.write_batch(StoredBatch.from_readings(readings))

    def write_batch(self, batch: StoredBatch) -> None:
        lines = batch_lines(batch)
        chunks = [
            lines[start : start + WRITE_CHUNK_LINES]
            for start in range(0, len(lines), WRITE_CHUNK_LINES)
        ]
        if len(chunks) == 1:
            self._post_chunk(chunks[0])
        else:
            # Every chunk is attempted; the first failure is raised once all have ended,
            # so a retry (or the spill) covers the whole batch. Points are idempotent.
            failures = [
                error
                for error in self._writers.map(self._post_chunk_catching, chunks)
                if error is not None
            ]
            if failures:
                raise failures[0]
        # Marked only once the raw points are in: a re-roll that takes them reads them.
        with self._dirty_lock:
            for plant, hours in hours_touched(batch.plant, batch.ts_ms).items():
                self._dirty.setdefault(plant, set()).update(hours)
            if self._roller is None:
                self._roller = threading.Thread(
                    target=self._roll_in_background, name="carbonlink-rollups", daemon=True
                )
                self._roller.start()
        self._dirty_event.set()

    def flush_rollups(self) -> None:
        """Re-roll every hour written since the last re-roll (and its day), now."""
        with self._reroll_lock:
            with self._dirty_lock:
                taken, self._dirty = self._dirty, {}
                self._dirty_event.clear()
            try:
                self._reroll(taken)
            except BaseException:
                with self._dirty_lock:  # still to do: kept for the next attempt
                    for plant, hours in taken.items():
                        self._dirty.setdefault(plant, set()).update(hours)
                    self._dirty_event.set()
                raise

    def _roll_in_background(self) -> None:
        while not self._closing.is_set():
            self._dirty_event.wait()
            if self._closing.wait(ROLLUP_COALESCE_S):
                return
            try:
                self.flush_rollups()
            except StoreError as exc:  # kept dirty; the next round tries again
                log.warning("influxdb rollups: re-roll failed, retrying: %s", exc)
            except Exception:  # a bug must not end the re-rolls for good: say it, go on
                log.exception("influxdb rollups: re-roll failed, retrying")

    def _reroll(self, touched: dict[str, set[int]]) -> None:
        """Re-roll ``touched`` hours, then their days (``_rollup_influxql``): four
        requests, whatever the number of plants and hours."""
        if not touched:
            return
        with self._reroll_lock:  # reentrant callers hold it already (RLock)
            for make in (rollup.hour_queries, rollup.day_queries):
                jobs = [
                    (plant, target, query)
                    for plant, hours in sorted(touched.items())
                    for target, query in make(_quote_literal(plant), hours)
                ]
                results = self._influxql_all(";".join(query for _, _, query in jobs))
                lines = [
                    line
                    for (plant, target, _), result in zip(jobs, results, strict=True)
                    for line in rollup.rollup_lines(target, plant, result, _tag, _text_field)
                ]
                for start in range(0, len(lines), WRITE_CHUNK_LINES):
                    self._post_chunk(lines[start : start + WRITE_CHUNK_LINES])

    def _rollups_ready(self, read_only: bool) -> bool:
        """Whether the rollups cover the stored points: a database written before they
        existed is rolled up now, or, read-only, read raw (None from ``rollups``)."""
        shown = self._influxql("SHOW MEASUREMENTS")
        names = {row[0] for series in shown.get("series", []) for row in series["values"]}
        if ACTIVITY_MEASUREMENT not in names:
            return True
        if rollup.measurement(ACTIVITY_MEASUREMENT, HOUR_MS) in names:
            if not read_only:  # a writer that stopped before its last re-roll: redo it
                self._reroll_recent()
            return True
        if read_only:
            return False
        plants = self._influxql(f'SHOW TAG VALUES FROM "{ACTIVITY_MEASUREMENT}" WITH KEY = "plant"')
        for series in plants.get("series", []):
            for _, plant in series["values"]:
                span = self.time_range(plant)
                if span is None:
                    continue
                first = (span[0] - 1) // HOUR_MS * HOUR_MS
                for chunk in range(first, span[1], 30 * DAY_MS):
                    hours = range(chunk, min(chunk + 30 * DAY_MS, span[1]), HOUR_MS)
                    self._reroll({plant: set(hours)})
        return True

    def _reroll_recent(self) -> None:
        plants = self._influxql(f'SHOW TAG VALUES FROM "{ACTIVITY_MEASUREMENT}" WITH KEY = "plant"')
        recent: dict[str, set[int]] = {}
        for series in plants.get("series", []):
            for _, plant in series["values"]:
                span = self.time_range(plant)
                if span is not None:
                    last = (span[1] - 1) // HOUR_MS * HOUR_MS
                    recent[plant] = {last - HOUR_MS, last}
        self._reroll(recent)

    def rollups(
        self,
        kind: str,
        step_ms: int,
        plant: str | None,
        first_ms: int,
        end_ms: int | None,
        *,
        factor_set: str | None = None,
        factor_version: str | None = None,
    ) -> pd.DataFrame | None:
        """Rollup rows of buckets of ``step_ms`` starting in [first_ms, end_ms), stamped
        with the bucket's end; None when the rollups do not cover the stored points."""
        if not self._has_rollups:
            return None
        self.flush_rollups()  # what this process wrote is in the answer
        where = _where(plant, None, first_ms, end_ms)
        if kind == EMISSIONS_MEASUREMENT:
            where += _factor_where(factor_set, factor_version)
        result = self._influxql(rollup.select(kind, step_ms, where))
        frames = [
            pd.DataFrame(series["values"], columns=series["columns"])
            for series in result.get("series", [])
        ]
        if not frames:
            return pd.DataFrame()
        frame = pd.concat(frames, ignore_index=True)
        frame["time"] = frame["time"] + step_ms
        if kind == EMISSIONS_MEASUREMENT:
            frame["scope"] = frame["scope"].astype(int)
        return frame

    def _post_chunk_catching(self, lines: list[bytes]) -> StoreError | None:
        try:
            self._post_chunk(lines)
        except StoreError as exc:
            return exc
        return None

    def _post_chunk(self, lines: list[bytes]) -> None:
        """One write request for ``lines``, its body streamed in BODY_PIECE_LINES pieces
        with the length stated up front (no chunked encoding: one request as before)."""
        length = sum(map(len, lines)) + len(lines)  # each line and its newline
        self._post_lines(_body_pieces(lines), length)

    def _post_lines(self, body: bytes | Iterator[bytes], length: int | None = None) -> None:
        params = {"db": self.database, "precision": "ms", **self._params}
        headers = {"Content-Length": str(length)} if length is not None else None
        response = self._request("POST", "/write", params=params, content=body, headers=headers)
        if response.status_code != 204:
            raise StoreError(
                f"influxdb write: HTTP {response.status_code}: {response.text[:300]}",
                retryable=response.status_code >= 500,
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
        where = _where(plant, meter, start_ms, end_ms)
        if measurement == EMISSIONS_MEASUREMENT:
            where += _factor_where(factor_set, factor_version)
        result = self._influxql(
            f'SELECT "{field}" FROM "{measurement}" WHERE {where} GROUP BY "plant", "meter"'
        )
        frames = []
        for series in result.get("series", []):
            tags = series.get("tags", {})
            values = series["values"]
            frames.append(
                pd.DataFrame(
                    {
                        "time": pd.to_datetime([v[0] for v in values], unit="ms", utc=True),
                        "plant": tags.get("plant", plant),
                        "meter": tags.get("meter", ""),
                        "value": [float(v[1]) for v in values],
                    }
                )
            )
        if not frames:
            return empty_series()
        frame = pd.concat(frames, ignore_index=True)
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
        where = _where(plant, None, start_ms, end_ms) + _factor_where(factor_set, factor_version)
        frame = self._select(EMISSIONS_MEASUREMENT, EMISSION_COLUMNS, where)
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
        where = _where(plant, meter, start_ms, end_ms)
        frame = self._select(ACTIVITY_MEASUREMENT, ACTIVITY_COLUMNS, where)
        if not frame.empty:
            # InfluxDB 1.x keeps each field of a point as a series of its own and writes
            # them one by one, so a read racing a write (another worker's) can see a
            # point with a field still missing. Such a point is not stored yet, and its
            # write decides what it holds: it is not shown.
            frame = frame.dropna(subset=[f for f in HALF_WRITTEN_FIELDS if f in frame])
        return typed_frame(ACTIVITY_COLUMNS, frame)

    def _select(self, measurement: str, columns: dict[str, str], where: str) -> pd.DataFrame:
        # Without GROUP BY, InfluxQL returns one series whose columns hold tags and fields.
        selected = ", ".join(f'"{c}"' for c in columns if c != "time")
        result = self._influxql(f'SELECT {selected} FROM "{measurement}" WHERE {where}')
        frames = [
            pd.DataFrame(series["values"], columns=series["columns"])
            for series in result.get("series", [])
        ]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def totals(
        self,
        versions: FactorVersions,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> pd.DataFrame:
        where = _where(None, None, start_ms, end_ms)
        counts = self._grouped_scalar(
            f'SELECT count("value") FROM "{ACTIVITY_MEASUREMENT}" WHERE {where} GROUP BY "plant"'
        )
        co2e: dict[str, float] = {}
        for plant, (factor_set, factor_version) in versions.items():
            chosen = _where(plant, None, start_ms, end_ms) + _factor_where(
                factor_set, factor_version
            )
            co2e |= self._grouped_scalar(
                f'SELECT sum("co2e_kg") FROM "{EMISSIONS_MEASUREMENT}" WHERE {chosen} '
                'GROUP BY "plant"'
            )
        return totals_frame(versions, {p: int(n) for p, n in counts.items()}, co2e)

    def assign_factors(self, versions: FactorVersions) -> None:
        # One series per plant: drop the plant's earlier one, so SHOW TAG VALUES (what
        # Grafana's variables read) names only the current factor set and version.
        for plant in sorted(versions):
            self._influxql(
                f'DROP SERIES FROM "{ASSIGNMENT_MEASUREMENT}" WHERE "plant" = '
                f"{_quote_literal(plant)}",
                method="POST",
            )
        self._post_lines("\n".join(assignment_lines(versions, wall_clock_ms())).encode())

    def assigned_factors(self) -> dict[str, tuple[str, str]]:
        result = self._influxql(
            f'SELECT last("assigned") FROM "{ASSIGNMENT_MEASUREMENT}" '
            'GROUP BY "plant", "factor_set", "factor_version"'
        )
        latest: dict[str, tuple[int, str, str]] = {}
        for series in result.get("series", []):
            tags = series.get("tags", {})
            ts = int(series["values"][0][0])
            plant = tags["plant"]
            if plant not in latest or ts > latest[plant][0]:
                latest[plant] = (ts, tags["factor_set"], tags["factor_version"])
        return {plant: (fs, fv) for plant, (_, fs, fv) in latest.items()}

    def record_sequences(self, rows: Sequence[tuple[str, int]]) -> None:
        if rows:
            self._post_lines("\n".join(sequence_lines(rows)).encode())

    def sequence_gaps(self, max_gap: int) -> dict[str, int]:
        # Gaps counted on the server (points come in seq order: their time is seq), so the
        # answer is a row per agent however many batches were recorded.
        steps = (
            f'SELECT difference("seq") - 1 AS "gap" FROM "{SEQUENCES_MEASUREMENT}" GROUP BY "agent"'
        )
        result = self._influxql(
            f'SELECT sum("gap") FROM ({steps}) WHERE "gap" > 0 AND "gap" <= {int(max_gap)} '
            'GROUP BY "agent"'
        )
        gaps = {
            series["tags"]["agent"]: int(series["values"][0][1] or 0)
            for series in result.get("series", [])
        }
        agents = self._influxql(
            f'SHOW TAG VALUES FROM "{SEQUENCES_MEASUREMENT}" WITH KEY = "agent"'
        )
        return {
            str(value): gaps.get(str(value), 0)
            for series in agents.get("series", [])
            for _, value in series.get("values", [])
        }

    def count_readings(self, plant: str | None = None) -> int:
        where = _where(plant, None, None, None)
        counts = self._grouped_scalar(
            f'SELECT count("value") FROM "{ACTIVITY_MEASUREMENT}" WHERE {where} GROUP BY "plant"'
        )
        return int(sum(counts.values()))

    def time_range(self, plant: str | None = None) -> tuple[int, int] | None:
        where = _where(plant, None, None, None)
        ends = []
        for selector in ("first", "last"):
            result = self._influxql(
                f'SELECT {selector}("value") FROM "{ACTIVITY_MEASUREMENT}" WHERE {where}'
            )
            series = result.get("series", [])
            if not series or not series[0]["values"]:
                return None
            ends.append(int(series[0]["values"][0][0]))
        return ends[0], ends[1]

    def close(self) -> None:
        self._closing.set()
        self._dirty_event.set()
        if self._roller is not None:
            self._roller.join()
            try:
                self.flush_rollups()
            except StoreError as exc:  # the raw points are stored; a later write re-rolls
                log.warning("influxdb rollups: hours left unrolled at close: %s", exc)
        self._writers.shutdown(wait=True)
        self._http.close()

    # --- internals ----------------------------------------------------------------

    def _grouped_scalar(self, query: str) -> dict[str, float]:
        result = self._influxql(query)
        return {
            s["tags"]["plant"]: float(s["values"][0][1] or 0.0)
            for s in result.get("series", [])
            if s["values"]
            and not (isinstance(s["values"][0][1], float) and math.isnan(s["values"][0][1]))
        }

    def _influxql(self, query: str, *, method: str = "GET") -> dict[str, Any]:
        params = {"db": self.database, "q": query, "epoch": "ms", **self._params}
        response = self._request(method, "/query", params=params)
        if response.status_code != 200:
            raise StoreError(
                f"influxdb query: HTTP {response.status_code}: {response.text[:300]}",
                retryable=response.status_code >= 500,
            )
        statement: dict[str, Any] = response.json()["results"][0]
        if "error" in statement:
            raise StoreError(f"influxdb query: {statement['error']}", retryable=False)
        return statement

    def _influxql_all(self, query: str) -> list[dict[str, Any]]:
        """Several statements in one request; their results in order."""
        params = {"db": self.database, "epoch": "ms", **self._params}
        response = self._request("POST", "/query", params=params, data={"q": query})
        if response.status_code != 200:
            raise StoreError(
                f"influxdb query: HTTP {response.status_code}: {response.text[:300]}",
                retryable=response.status_code >= 500,
            )
        statements: list[dict[str, Any]] = response.json()["results"]
        for statement in statements:
            if "error" in statement:
                raise StoreError(f"influxdb query: {statement['error']}", retryable=False)
        return statements

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise StoreError(f"influxdb unreachable: {exc}", retryable=True) from exc


def _body_pieces(lines: list[bytes]) -> Iterator[bytes]:
    for start in range(0, len(lines), BODY_PIECE_LINES):
        yield b"\n".join(lines[start : start + BODY_PIECE_LINES]) + b"\n"


def _factor_where(factor_set: str | None, factor_version: str | None) -> str:
    clauses = ""
    if factor_set is not None:
        clauses += f' AND "factor_set" = {_quote_literal(factor_set)}'
    if factor_version is not None:
        clauses += f' AND "factor_version" = {_quote_literal(factor_version)}'
    return clauses


def _where(plant: str | None, meter: str | None, start_ms: int | None, end_ms: int | None) -> str:
    clauses = []
    if plant is not None:
        clauses.append(f'"plant" = {_quote_literal(plant)}')
    if meter is not None:
        clauses.append(f'"meter" = {_quote_literal(meter)}')
    clauses.append(f"time >= {start_ms if start_ms is not None else 0}ms")
    if end_ms is not None:
        clauses.append(f"time < {end_ms}ms")
    return " AND ".join(clauses)
