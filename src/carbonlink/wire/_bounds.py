"""The limits every decoded number, string and list must respect, with why.

They bound what one message can make a service do (memory, time, float overflow), so
each is far above anything a real plant sends and far below what would hurt.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

MAX_PAYLOAD_BYTES: Final = 1_048_576
"""One MQTT message: a 10,000-reading telemetry batch is ~700 KB."""

MAX_SAMPLES_PER_MESSAGE: Final = 10_000
"""Samples in one meter message, and readings in one telemetry batch."""

MAX_TELEMETRY_READINGS: Final = MAX_SAMPLES_PER_MESSAGE

MAX_JSON_DEPTH: Final = 1024
"""Nesting of arrays and objects (orjson's own limit; our payloads need 3). Nothing
walks a decoded payload deeper than its schema, and every wire value shown in a refusal
goes through a bounded repr, so no decoder, log line or dead letter recurses into one."""

MIN_EPOCH_MS: Final = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000)
MAX_EPOCH_MS: Final = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp() * 1000)
"""Timestamps outside [2000, 2100) come from a clock that is not set, or from seconds or
microseconds sent as milliseconds: no plant ever metered then."""

MAX_SEQ: Final = 2**53 - 1
"""Sequence numbers: the largest integer every JSON reader holds exactly."""

MIN_INTERVAL_MS: Final = 1
MAX_INTERVAL_MS: Final = 7 * 24 * 3_600_000
"""An interval is at least a millisecond and at most a week (the agent keeps a week);
each meter then bounds it by its own period."""

MAX_TEXT: Final = 128
"""Identifiers, units, agent names, stages and policies."""

MAX_COUNTER: Final = MAX_SEQ
"""Counts in an agent's status."""

MAX_STATUS_REASONS: Final = 64
"""Reasons in an agent's status counters: there are fewer than 30."""

MAX_DIRECTIVE_NUMBER: Final = 1e9
"""Efforts, rates and prices in a directive: finite, and small enough that a plant's
dynamics cannot overflow whatever it is told."""
