"""The MQTT wire format, version 1: topics, payloads and refusals (docs/wire-format.md).

One decode boundary per message type, used by every service that reads it:

- :func:`decode_meter_message`: a meter's readings, read by the agent;
- :func:`decode_mapped`: a meter's bare number or JSON of another shape (``payload:``);
- :func:`decode_telemetry_columns` / :func:`decode_telemetry`: an agent's batch, read by
  the platform (which checks it again: it does not trust agents);
- :func:`decode_status`: an agent's retained status, read by the platform;
- :func:`decode_directive`: coordination's retained directive, read by the plants;
- :func:`decode_sparkplug`: a Sparkplug B edge node's payload, read by the agent.

Each bounds size, nesting, every number, text and list (``_bounds.py``) and returns a
value or raises :class:`~carbonlink.RejectedReading` with a stable :class:`Reason`;
nothing else escapes. Decoders of messages with many readings never refuse a whole
message for one bad reading: they return the good ones with a refusal for each bad one.
"""

from carbonlink.wire._bounds import (
    MAX_EPOCH_MS,
    MAX_INTERVAL_MS,
    MAX_PAYLOAD_BYTES,
    MAX_SAMPLES_PER_MESSAGE,
    MAX_SEQ,
    MAX_TELEMETRY_READINGS,
    MIN_EPOCH_MS,
    MIN_INTERVAL_MS,
)
from carbonlink.wire._deadletter import encode_rejection
from carbonlink.wire._directive import Directive, decode_directive, encode_directive
from carbonlink.wire._json import (
    WIRE_VERSION,
    format_timestamp,
    parse_query_time,
    parse_timestamp,
    shown,
)
from carbonlink.wire._mapped import (
    EpochUnit,
    PayloadFormat,
    PayloadMapping,
    check_jsonpath,
    decode_mapped,
)
from carbonlink.wire._meter import (
    QUALITIES,
    READING_KINDS,
    MeterMessage,
    Sample,
    decode_meter_message,
    duration_ms_of,
    encode_meter_message,
    encode_samples,
)
from carbonlink.wire._reasons import REASONS, Reason
from carbonlink.wire._sparkplug import (
    BD_SEQ,
    REBIRTH,
    SEQ_MODULUS,
    SPARKPLUG_NAMESPACE,
    SparkplugMetricValue,
    SparkplugPayload,
    SparkplugTopic,
    SparkplugType,
    decode_sparkplug,
    encode_rebirth,
    encode_state,
    ncmd_topic,
    parse_sparkplug_topic,
    sparkplug_subscription,
    state_topic,
)
from carbonlink.wire._status import AgentStatus, decode_status, encode_status
from carbonlink.wire._telemetry import (
    TELEMETRY_COLUMNS,
    Reading,
    TelemetryBatch,
    TelemetryColumns,
    decode_telemetry,
    decode_telemetry_columns,
    encode_telemetry,
    fits,
    telemetry_reading,
    telemetry_readings,
)
from carbonlink.wire._topics import (
    EVERYTHING,
    LEDGER_ANCHOR_TOPIC,
    PLATFORM_DEADLETTER,
    PROBE_TOPIC,
    SERVICE_TOPICS,
    STATUS_SUBSCRIPTION,
    TELEMETRY_SUBSCRIPTION,
    TOPIC_ROOT,
    Address,
    Kind,
    address_of,
    agent_id,
    deadletter_topic,
    directive_topic,
    encode_probe,
    meter_subscription,
    meter_topic,
    parse_topic,
    shared,
    sim_status_topic,
    status_topic,
    telemetry_topic,
)

__all__ = [
    "BD_SEQ",
    "EVERYTHING",
    "LEDGER_ANCHOR_TOPIC",
    "MAX_EPOCH_MS",
    "MAX_INTERVAL_MS",
    "MAX_PAYLOAD_BYTES",
    "MAX_SAMPLES_PER_MESSAGE",
    "MAX_SEQ",
    "MAX_TELEMETRY_READINGS",
    "MIN_EPOCH_MS",
    "MIN_INTERVAL_MS",
    "PLATFORM_DEADLETTER",
    "PROBE_TOPIC",
    "QUALITIES",
    "READING_KINDS",
    "REASONS",
    "REBIRTH",
    "SEQ_MODULUS",
    "SERVICE_TOPICS",
    "SPARKPLUG_NAMESPACE",
    "STATUS_SUBSCRIPTION",
    "TELEMETRY_COLUMNS",
    "TELEMETRY_SUBSCRIPTION",
    "TOPIC_ROOT",
    "WIRE_VERSION",
    "Address",
    "AgentStatus",
    "Directive",
    "EpochUnit",
    "Kind",
    "MeterMessage",
    "PayloadFormat",
    "PayloadMapping",
    "Reading",
    "Reason",
    "Sample",
    "SparkplugMetricValue",
    "SparkplugPayload",
    "SparkplugTopic",
    "SparkplugType",
    "TelemetryBatch",
    "TelemetryColumns",
    "address_of",
    "agent_id",
    "check_jsonpath",
    "deadletter_topic",
    "decode_directive",
    "decode_mapped",
    "decode_meter_message",
    "decode_sparkplug",
    "decode_status",
    "decode_telemetry",
    "decode_telemetry_columns",
    "directive_topic",
    "duration_ms_of",
    "encode_directive",
    "encode_meter_message",
    "encode_probe",
    "encode_rebirth",
    "encode_rejection",
    "encode_samples",
    "encode_state",
    "encode_status",
    "encode_telemetry",
    "fits",
    "format_timestamp",
    "meter_subscription",
    "meter_topic",
    "ncmd_topic",
    "parse_query_time",
    "parse_sparkplug_topic",
    "parse_timestamp",
    "parse_topic",
    "shared",
    "shown",
    "sim_status_topic",
    "sparkplug_subscription",
    "state_topic",
    "status_topic",
    "telemetry_reading",
    "telemetry_readings",
    "telemetry_topic",
]
