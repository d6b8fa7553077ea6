"""Stable refusal codes: counted, logged and dead-lettered under these names."""

from __future__ import annotations


class Reason:
    """Every reason a message or a reading is refused (docs/wire-format.md lists them).

    They are part of the wire format: operators count and alert on them, so a reason is
    never renamed or reused for something else.
    """

    # What the bytes are
    MALFORMED_JSON = "malformed_json"
    BAD_SCHEMA = "bad_schema"
    UNSUPPORTED_VERSION = "unsupported_version"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    # Where it came from, where it went
    TOPIC_MISMATCH = "topic_mismatch"
    MISADDRESSED = "misaddressed"
    UNKNOWN_PLANT = "unknown_plant"
    UNKNOWN_AGENT = "unknown_agent"
    UNKNOWN_METER = "unknown_meter"
    BAD_STATUS = "bad_status"
    # What a reading says
    WRONG_UNIT = "wrong_unit"
    WRONG_KIND = "wrong_kind"
    BAD_TIMESTAMP = "bad_timestamp"
    NOT_FINITE = "not_finite"
    NEGATIVE = "negative"
    IMPLAUSIBLE = "implausible"
    BAD_QUALITY = "bad_quality"
    # When, and which reading it is
    CLOCK_SKEW = "clock_skew"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    OVERLAP = "overlap"
    OUT_OF_ORDER = "out_of_order"
    COUNTER_RESET = "counter_reset"
    # Sparkplug B sessions (an edge node's births, deaths and sequence numbers)
    MALFORMED_PROTOBUF = "malformed_protobuf"
    SEQ_GAP = "seq_gap"
    NO_BIRTH = "no_birth"
    UNKNOWN_METRIC = "unknown_metric"
    # The service's own trouble with one message: it is refused, never retried forever
    INTERNAL_ERROR = "internal_error"
    POISON = "poison"


REASONS: frozenset[str] = frozenset(
    value for name, value in vars(Reason).items() if not name.startswith("_")
)
