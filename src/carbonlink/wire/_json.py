"""Reading JSON off the wire: bounded in size and nesting, and every number checked.

Nothing here raises anything but :class:`RejectedReading`: a payload is an object to
decode further, or a refusal with a reason.
"""

from __future__ import annotations

import json
import math
import reprlib
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from carbonlink.errors import RejectedReading
from carbonlink.wire._bounds import (
    MAX_EPOCH_MS,
    MAX_JSON_DEPTH,
    MAX_PAYLOAD_BYTES,
    MAX_SEQ,
    MAX_TEXT,
    MIN_EPOCH_MS,
)
from carbonlink.wire._reasons import Reason

WIRE_VERSION: Final = 1

_SHOW = reprlib.Repr()
_SHOW.maxlevel = 2
_SHOW.maxstring = 60
_SHOW.maxother = 60
_SHOW.maxlong = 40
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxdict = _SHOW.maxset = 4
_EPOCH_SECONDS_MS: Final = (MIN_EPOCH_MS // 1000, MAX_EPOCH_MS // 1000)


def shown(value: object) -> str:
    """A wire value as refusals and logs show it: short, and never recursing far."""
    return _SHOW.repr(value)


def _parse_constant(name: str) -> float:
    return float(name.lower())


def load_object(payload: bytes) -> dict[str, Any]:
    """The payload as a JSON object of wire version 1, or a refusal."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RejectedReading(
            Reason.PAYLOAD_TOO_LARGE, f"{len(payload)} bytes, over {MAX_PAYLOAD_BYTES}"
        )
    try:
        # orjson decodes telemetry 3-5x faster than json (docs/performance.md). It is
        # strict RFC 8259, so what it refuses gets a second chance below: json also reads
        # NaN/Infinity (turned into floats, so that one sample is refused as not_finite,
        # not the whole message) and integers beyond 64 bits.
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        if "recursion" in str(exc):  # orjson's own nesting limit: json would recurse too
            raise RejectedReading(
                Reason.MALFORMED_JSON, f"nested deeper than {MAX_JSON_DEPTH} levels"
            ) from None
        try:
            data = json.loads(payload, parse_constant=_parse_constant)
        except RecursionError:
            raise RejectedReading(Reason.MALFORMED_JSON, "nested too deeply") from None
        except (UnicodeDecodeError, ValueError) as error:
            raise RejectedReading(Reason.MALFORMED_JSON, str(error)[:200]) from None
    if not isinstance(data, dict):
        raise RejectedReading(Reason.BAD_SCHEMA, "payload must be a JSON object")
    if "v" not in data:
        raise RejectedReading(Reason.BAD_SCHEMA, f'`v` is missing: add "v": {WIRE_VERSION}')
    version = data["v"]
    if version != WIRE_VERSION or isinstance(version, bool):
        raise RejectedReading(
            Reason.UNSUPPORTED_VERSION, f"v={shown(version)}, expected {WIRE_VERSION}"
        )
    return data


def number(raw: object, what: str) -> float:
    """A finite JSON number as a float."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise RejectedReading(Reason.BAD_SCHEMA, f"{what} must be a number, got {shown(raw)}")
    try:
        value = float(raw)
    except OverflowError:  # an integer beyond any float
        raise RejectedReading(Reason.NOT_FINITE, f"{what} is too large: {shown(raw)}") from None
    if not math.isfinite(value):
        raise RejectedReading(Reason.NOT_FINITE, f"{what} is {raw!r}")
    return value


def integer(raw: object, what: str, low: int = 0, high: int = MAX_SEQ) -> int:
    """A JSON integer within [low, high]."""
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise RejectedReading(Reason.BAD_SCHEMA, f"{what} must be an integer, got {shown(raw)}")
    if not low <= raw <= high:
        raise RejectedReading(
            Reason.BAD_SCHEMA, f"{what} = {shown(raw)} is outside [{low}, {high}]"
        )
    return raw


def text(raw: object, what: str, *, limit: int = MAX_TEXT, empty: bool = False) -> str:
    """A JSON string of at most ``limit`` characters."""
    if not isinstance(raw, str) or (not raw and not empty):
        raise RejectedReading(
            Reason.BAD_SCHEMA, f"{what} must be a non-empty string, got {shown(raw)}"
        )
    if len(raw) > limit:
        raise RejectedReading(Reason.BAD_SCHEMA, f"{what} is longer than {limit} characters")
    return raw


def parse_timestamp(raw: object) -> int:
    """RFC 3339 text with a UTC offset, or integer Unix epoch milliseconds, in
    [2000, 2100): epoch ms."""
    if isinstance(raw, bool):
        raise RejectedReading(Reason.BAD_TIMESTAMP, "timestamp is a boolean")
    if isinstance(raw, int):
        ts_ms = raw
    elif isinstance(raw, str):
        moment = _moment(raw)
        try:
            ts_ms = round(moment.timestamp() * 1000)
        except (OverflowError, ValueError):  # year 1 with a positive offset, say
            raise RejectedReading(Reason.BAD_TIMESTAMP, f"out of range: {shown(raw)}") from None
    else:
        raise RejectedReading(
            Reason.BAD_TIMESTAMP, f"timestamp must be text or integer ms: {shown(raw)}"
        )
    if not MIN_EPOCH_MS <= ts_ms < MAX_EPOCH_MS:
        raise RejectedReading(Reason.BAD_TIMESTAMP, _out_of_range(raw, ts_ms))
    return ts_ms


def parse_query_time(text: str) -> int:
    """A time a user types (API parameter, CLI option): ASCII digits as epoch ms, or RFC 3339
    with an offset; anything from 1970 up to 2100 (a query may start at the beginning)."""
    if text.isascii() and text.isdigit():
        if len(text) > len(str(MAX_EPOCH_MS)):
            raise RejectedReading(Reason.BAD_TIMESTAMP, f"{shown(text)} is too many digits")
        ts_ms = int(text)
    else:
        moment = _moment(text)
        ts_ms = round(moment.timestamp() * 1000)
    if not 0 <= ts_ms < MAX_EPOCH_MS:
        raise RejectedReading(Reason.BAD_TIMESTAMP, f"{shown(text)} is outside 1970..2100")
    return ts_ms


def _moment(text: str) -> datetime:
    if len(text) > MAX_TEXT:
        raise RejectedReading(Reason.BAD_TIMESTAMP, "timestamp text is too long")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RejectedReading(
            Reason.BAD_TIMESTAMP, f"not RFC 3339 or epoch ms: {shown(text)}"
        ) from None
    if moment.tzinfo is None:
        raise RejectedReading(Reason.BAD_TIMESTAMP, f"timestamp without UTC offset: {shown(text)}")
    return moment


def _out_of_range(raw: object, ts_ms: int) -> str:
    detail = f"{shown(raw)} is outside 2000-01-01..2100-01-01"
    if isinstance(raw, int) and _EPOCH_SECONDS_MS[0] <= ts_ms < _EPOCH_SECONDS_MS[1]:
        return f"{detail}: it looks like epoch seconds; send milliseconds (x 1000) or RFC 3339"
    if isinstance(raw, int) and MIN_EPOCH_MS * 1000 <= ts_ms < MAX_EPOCH_MS * 1000:
        return f"{detail}: it looks like epoch microseconds; send milliseconds"
    return detail


def format_timestamp(ts_ms: int) -> str:
    return (
        datetime.fromtimestamp(ts_ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def dumps(body: object) -> bytes:
    """Compact JSON, as every encoder sends it."""
    return json.dumps(body, separators=(",", ":")).encode()
