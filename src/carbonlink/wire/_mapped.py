"""Meter payloads in the shapes plant tools already send, mapped to carbonlink's readings.

Many devices and Node-RED flows publish a bare number (``0.38``); Telegraf, ThingsBoard
and gateways publish JSON of their own shape. A meter whose plant file says so
(``payload:`` in docs/wire-format.md) is read here instead of as carbonlink's envelope:

- ``bare``: the whole payload is one JSON number; the agent stamps it with its arrival
  time and the meter's configured unit and kind;
- ``json``: a JSON object (or array) in which a JSONPath finds the value and, optionally,
  the timestamp (epoch in the configured unit, or RFC 3339 text); no path: stamped on
  arrival.

Every refusal says what was expected, so the sender can see the mistake.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import orjson
from jsonpath_ng import JSONPath
from jsonpath_ng.parser import parse as parse_jsonpath

from carbonlink.errors import RejectedReading
from carbonlink.wire._bounds import MAX_EPOCH_MS, MAX_PAYLOAD_BYTES, MIN_EPOCH_MS
from carbonlink.wire._json import number, parse_timestamp, shown
from carbonlink.wire._meter import MeterMessage, Sample
from carbonlink.wire._reasons import Reason
from carbonlink.wire._topics import Kind, address_of


class PayloadFormat(StrEnum):
    ENVELOPE = "envelope"  # carbonlink's own {"v": 1, ...} (docs/wire-format.md)
    BARE = "bare"  # one JSON number, stamped on arrival
    JSON = "json"  # any JSON; JSONPaths find the value and the timestamp


class EpochUnit(StrEnum):
    """What a numeric timestamp found by a JSONPath counts: Telegraf's JSON serializer
    writes seconds by default (``json_timestamp_units = "1s"``), ThingsBoard milliseconds."""

    S = "s"
    MS = "ms"
    US = "us"
    NS = "ns"


_MS_PER: Final = {EpochUnit.S: 1000.0, EpochUnit.MS: 1.0, EpochUnit.US: 1e-3, EpochUnit.NS: 1e-6}


@dataclass(frozen=True, slots=True)
class PayloadMapping:
    """How one meter's payloads are read (its plant file's ``payload:``)."""

    format: PayloadFormat = PayloadFormat.ENVELOPE
    value: str | None = None  # JSONPath of the value (json)
    ts: str | None = None  # JSONPath of the timestamp (json); None: stamped on arrival
    ts_unit: EpochUnit = EpochUnit.MS


def check_jsonpath(path: str) -> str:
    """``path`` if it is a JSONPath this decoder can use; raises ValueError otherwise
    (config validation calls it, so a bad path stops the service at startup)."""
    _compiled(path)
    return path


@functools.lru_cache(maxsize=256)
def _compiled(path: str) -> JSONPath:
    try:
        return parse_jsonpath(path)
    except Exception as exc:  # jsonpath-ng's lexer and parser raise several kinds
        raise ValueError(f"not a JSONPath: {path!r} ({exc})") from None


def decode_mapped(
    topic: str,
    payload: bytes,
    mapping: PayloadMapping,
    *,
    unit: str,
    kind: str,
    arrival_ms: int,
) -> MeterMessage:
    """A meter message from a ``bare`` or ``json`` payload, in the meter's configured unit
    and kind (the payload carries neither); raises :class:`RejectedReading`."""
    address = address_of(topic)
    if address.kind is not Kind.METERS or address.meter is None:
        raise RejectedReading(Reason.TOPIC_MISMATCH, f"not a meter topic: {shown(topic)}")
    meter = address.meter
    try:
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise RejectedReading(
                Reason.PAYLOAD_TOO_LARGE, f"{len(payload)} bytes, over {MAX_PAYLOAD_BYTES}"
            )
        if mapping.format is PayloadFormat.BARE:
            sample = _bare(payload, meter, arrival_ms)
        elif mapping.format is PayloadFormat.JSON:
            sample = _json(payload, mapping, arrival_ms)
        else:
            raise ValueError("decode_mapped reads bare and json payloads, not the envelope")
    except RejectedReading as exc:
        raise RejectedReading(exc.reason, exc.detail, meter=meter) from None
    return MeterMessage(address.plant, meter, unit, kind, None, (sample,))


def _load(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        pass
    text = payload.decode("utf-8", errors="replace").strip()
    try:
        # What JSON cannot spell but a device may send: NaN, Infinity, 1e999.
        if not math.isfinite(float(text)):
            raise RejectedReading(Reason.NOT_FINITE, f"value is {shown(text)}")
    except ValueError:
        pass
    return _NotJson(text)


@dataclass(frozen=True, slots=True)
class _NotJson:
    text: str


def _bare(payload: bytes, meter: str, arrival_ms: int) -> Sample:
    expected = f"meter {meter!r} takes a bare number such as 0.38 (payload.format: bare)"
    if not payload.strip():
        raise RejectedReading(Reason.BAD_SCHEMA, f"empty payload: {expected}")
    data = _load(payload)
    if isinstance(data, _NotJson):
        raise RejectedReading(
            Reason.MALFORMED_JSON, f"{shown(data.text)} is not a number: {expected}"
        )
    if isinstance(data, str):
        # Some flows quote their numbers; a quoted number is still a number.
        try:
            data = float(data.strip())
        except ValueError:
            raise RejectedReading(
                Reason.BAD_SCHEMA, f"{shown(data)} is not a number: {expected}"
            ) from None
    if isinstance(data, dict | list):
        raise RejectedReading(
            Reason.BAD_SCHEMA,
            f"got JSON {type(data).__name__ if isinstance(data, list) else 'object'}, "
            f"but {expected}; for JSON set payload.format: json with a value path",
        )
    return Sample(arrival_ms, number(data, "the bare value"))


def _json(payload: bytes, mapping: PayloadMapping, arrival_ms: int) -> Sample:
    data = _load(payload)
    if isinstance(data, _NotJson):
        raise RejectedReading(Reason.MALFORMED_JSON, f"not JSON: {shown(data.text)}")
    assert mapping.value is not None  # config validation requires it
    value = _find(data, mapping.value, "value")
    if mapping.ts is None:
        return Sample(arrival_ms, number(value, f"value at {mapping.value}"))
    raw_ts = _find(data, mapping.ts, "timestamp")
    if isinstance(raw_ts, int | float) and not isinstance(raw_ts, bool):
        scaled = raw_ts * _MS_PER[mapping.ts_unit]
        if scaled != scaled or abs(scaled) > 2**62:  # NaN, or beyond any epoch in range
            raise RejectedReading(Reason.BAD_TIMESTAMP, f"timestamp {shown(raw_ts)}")
        try:
            ts_ms = parse_timestamp(round(scaled))
        except RejectedReading as exc:
            unit = _likely_unit(round(raw_ts))
            if unit is None or unit is mapping.ts_unit:
                raise
            raise RejectedReading(
                exc.reason,
                f"{shown(raw_ts)} read as {mapping.ts_unit} is out of range; "
                f"it looks like epoch {unit}: set payload.ts_unit: {unit}",
            ) from None
    else:
        ts_ms = parse_timestamp(raw_ts)
    return Sample(ts_ms, number(value, f"value at {mapping.value}"))


def _likely_unit(epoch: int) -> EpochUnit | None:
    """Which unit puts a numeric time within the wire's years, if one does."""
    for unit in EpochUnit:
        if MIN_EPOCH_MS <= epoch * _MS_PER[unit] < MAX_EPOCH_MS:
            return unit
    return None


def _find(data: Any, path: str, what: str) -> Any:
    matches = [match.value for match in _compiled(path).find(data)]
    if not matches:
        keys = f" (top-level keys: {shown(sorted(data))})" if isinstance(data, dict) else ""
        raise RejectedReading(Reason.BAD_SCHEMA, f"no {what} at {path}{keys}")
    if len(matches) > 1:
        raise RejectedReading(
            Reason.BAD_SCHEMA, f"{path} finds {len(matches)} {what}s, expected one"
        )
    return matches[0]
