"""An agent's status: retained, so whoever subscribes sees each agent's latest state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from carbonlink.errors import RejectedReading
from carbonlink.wire._bounds import MAX_COUNTER, MAX_STATUS_REASONS
from carbonlink.wire._json import WIRE_VERSION, dumps, integer, load_object, shown, text
from carbonlink.wire._reasons import Reason
from carbonlink.wire._topics import Kind, address_of

STATES: Final = ("online", "offline")
STATUS_COUNTERS: Final = ("received", "accepted", "baselines", "forwarded", "dropped_oldest")


@dataclass(frozen=True, slots=True)
class AgentStatus:
    plant: str
    agent: str
    state: str
    counters: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    outbox_depth: int | None = None

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


def encode_status(status: AgentStatus) -> bytes:
    body: dict[str, object] = {"v": WIRE_VERSION, "state": status.state, "agent": status.agent}
    if status.state == "online":
        body["counters"] = dict(status.counters) | {"rejected": dict(status.rejected)}
        body["outbox_depth"] = status.outbox_depth
    return dumps(body)


def decode_status(topic: str, payload: bytes) -> AgentStatus:
    """An agent's status, every field bounded; a refusal names what is wrong with it."""
    address = address_of(topic)
    if address.kind is not Kind.STATUS:
        raise RejectedReading(Reason.TOPIC_MISMATCH, f"not a status topic: {shown(topic)}")
    data = load_object(payload)
    state = data.get("state")
    if not isinstance(state, str) or state not in STATES:
        raise RejectedReading(Reason.BAD_SCHEMA, f"state {shown(state)}, expected {STATES}")
    agent = text(data.get("agent"), "`agent`")
    counters: dict[str, int] = {}
    rejected: dict[str, int] = {}
    raw = data.get("counters")
    if raw is not None:
        if not isinstance(raw, dict):
            raise RejectedReading(Reason.BAD_SCHEMA, "`counters` must be an object")
        for name in STATUS_COUNTERS:
            if name in raw:
                counters[name] = integer(raw[name], f"counters.{name}", 0, MAX_COUNTER)
        reasons = raw.get("rejected", {})
        if not isinstance(reasons, dict) or len(reasons) > MAX_STATUS_REASONS:
            raise RejectedReading(
                Reason.BAD_SCHEMA, f"counters.rejected: an object of at most {MAX_STATUS_REASONS}"
            )
        for reason, count in reasons.items():
            rejected[text(reason, "a reason", limit=64)] = integer(
                count, f"counters.rejected[{shown(reason)}]", 0, MAX_COUNTER
            )
    depth = data.get("outbox_depth")
    outbox_depth = None if depth is None else integer(depth, "`outbox_depth`", 0, MAX_COUNTER)
    return AgentStatus(address.plant, agent, state, counters, rejected, outbox_depth)
