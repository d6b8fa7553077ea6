"""Every MQTT topic carbonlink uses, and how a topic is read back (docs/wire-format.md).

Topics live here and nowhere else: a service builds a topic with these functions and
reads one with :func:`parse_topic`, so the layout has one definition.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from carbonlink.errors import RejectedReading
from carbonlink.wire._json import WIRE_VERSION, dumps, shown
from carbonlink.wire._reasons import Reason

TOPIC_ROOT: Final = f"carbonlink/v{WIRE_VERSION}"
_ID: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # config.ID_PATTERN, as topic levels


class Kind(StrEnum):
    """The last level of a plant's topics (``meters`` has one more: the meter id)."""

    METERS = "meters"
    TELEMETRY = "telemetry"
    STATUS = "status"
    DEADLETTER = "deadletter"
    DIRECTIVES = "directives"
    SIM_STATUS = "sim-status"


def meter_topic(plant: str, meter: str) -> str:
    return f"{TOPIC_ROOT}/{plant}/{Kind.METERS}/{meter}"


def meter_subscription(plant: str) -> str:
    return f"{TOPIC_ROOT}/{plant}/{Kind.METERS}/+"


def telemetry_topic(plant: str) -> str:
    return f"{TOPIC_ROOT}/{plant}/{Kind.TELEMETRY}"


def status_topic(plant: str) -> str:
    return f"{TOPIC_ROOT}/{plant}/{Kind.STATUS}"


def deadletter_topic(plant: str) -> str:
    return f"{TOPIC_ROOT}/{plant}/{Kind.DEADLETTER}"


def directive_topic(plant: str) -> str:
    return f"{TOPIC_ROOT}/{plant}/{Kind.DIRECTIVES}"


def sim_status_topic(plant: str) -> str:
    return f"{TOPIC_ROOT}/{plant}/{Kind.SIM_STATUS}"


TELEMETRY_SUBSCRIPTION: Final = f"{TOPIC_ROOT}/+/{Kind.TELEMETRY}"
STATUS_SUBSCRIPTION: Final = f"{TOPIC_ROOT}/+/{Kind.STATUS}"
EVERYTHING: Final = f"{TOPIC_ROOT}/#"
PLATFORM_DEADLETTER: Final = f"{TOPIC_ROOT}/_platform/{Kind.DEADLETTER}"
"""Where the platform dead-letters what names no configured plant."""
LEDGER_ANCHOR_TOPIC: Final = f"{TOPIC_ROOT}/_coordination/ledger"
"""The coordinator's retained ledger anchor (the head of its report chain)."""
PROBE_TOPIC: Final = f"{TOPIC_ROOT}/_probe/{Kind.TELEMETRY}"
"""The platform's startup probe. It is a telemetry topic of no plant ("_probe" is no plant
id), so it reaches a platform worker through the very subscription its telemetry takes,
shared group included: a broker that accepts that subscription and delivers nothing
(NATS 2.9 and RabbitMQ 3.10 with ``$share/...``) is caught before any data is lost."""
SERVICE_TOPICS: Final = frozenset({PLATFORM_DEADLETTER, LEDGER_ANCHOR_TOPIC, PROBE_TOPIC})
"""Topics of the services themselves, outside any plant (ids never start with "_")."""


def shared(group: str, subscription: str) -> str:
    """An MQTT 5 shared subscription: the group's members split the messages."""
    return f"$share/{group}/{subscription}"


def encode_probe(sender: str, nonce: str) -> bytes:
    """A probe's payload: who sent it and a nonce, for whoever reads the broker's log;
    the platform treats any message on :data:`PROBE_TOPIC` as proof of delivery."""
    return dumps({"v": WIRE_VERSION, "probe": sender, "nonce": nonce})


def agent_id(plant: str) -> str:
    """The one agent a plant has: its MQTT client id and the ``agent`` of its telemetry."""
    return f"agent-{plant}"


@dataclass(frozen=True, slots=True)
class Address:
    plant: str
    kind: Kind
    meter: str | None = None


def parse_topic(topic: str) -> tuple[str, str, str | None]:
    """Split ``carbonlink/v1/PLANT/KIND[/METER]`` into (plant, kind, meter)."""
    address = address_of(topic)
    return address.plant, address.kind.value, address.meter


def address_of(topic: str) -> Address:
    """What a topic addresses, or ``misaddressed``/``topic_mismatch`` if it is no topic
    of ours: a well-formed plant id, a known kind, and a meter id for (only) meters."""
    parts = topic.split("/")
    if len(parts) < 3 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT:
        raise RejectedReading(Reason.TOPIC_MISMATCH, f"not a {TOPIC_ROOT} topic: {shown(topic)}")
    if len(parts) < 4:
        raise RejectedReading(Reason.MISADDRESSED, f"no plant and kind in {shown(topic)}")
    plant, kind = parts[2], parts[3]
    if not _ID.fullmatch(plant):
        raise RejectedReading(
            Reason.MISADDRESSED,
            f"{shown(plant)} is not a plant id (lowercase letters, digits, - and _)",
        )
    try:
        known = Kind(kind)
    except ValueError:
        kinds = ", ".join(k.value for k in Kind)
        raise RejectedReading(
            Reason.MISADDRESSED, f"{shown(kind)} is not a topic kind ({kinds})"
        ) from None
    if known is Kind.METERS:
        if len(parts) != 5 or not _ID.fullmatch(parts[4]):
            raise RejectedReading(
                Reason.MISADDRESSED, f"a meter topic is {TOPIC_ROOT}/PLANT/meters/METER, "
                f"got {shown(topic)}",
            )  # fmt: skip
        return Address(plant, known, parts[4])
    if len(parts) != 4:
        raise RejectedReading(
            Reason.MISADDRESSED, f"nothing may follow {shown(kind)} in {shown(topic)}"
        )
    return Address(plant, known)
