"""Directives: what coordination asks of each plant (retained, latest wins)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from carbonlink.errors import RejectedReading
from carbonlink.wire._bounds import MAX_DIRECTIVE_NUMBER
from carbonlink.wire._json import WIRE_VERSION, load_object, number, parse_timestamp, shown, text
from carbonlink.wire._reasons import Reason
from carbonlink.wire._topics import Kind, address_of


@dataclass(frozen=True, slots=True)
class Directive:
    """What coordination asks of a plant from ``effective_ms`` on (retained, latest wins).

    Efforts are the E_M and E_P of the coordination model (docs/coordination.md);
    ``sigma`` is its stage multiplier (1 outside advanced symbiosis).
    """

    plant: str
    issued_ms: int
    effective_ms: int
    stage: str
    effort_firm: float
    effort_platform: float
    sigma: float = 1.0
    subsidy_rate_firm: float = 0.0
    subsidy_rate_platform: float = 0.0
    carbon_price: float = 0.0
    policy: str = ""


_DIRECTIVE_NUMBERS: Final = (
    "effort_firm",
    "effort_platform",
    "sigma",
    "subsidy_rate_firm",
    "subsidy_rate_platform",
    "carbon_price",
)


def encode_directive(directive: Directive) -> bytes:
    body = {"v": WIRE_VERSION} | {
        name: getattr(directive, name) for name in Directive.__dataclass_fields__
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode_directive(topic: str, payload: bytes) -> Directive:
    address = address_of(topic)
    if address.kind is not Kind.DIRECTIVES:
        raise RejectedReading(Reason.TOPIC_MISMATCH, f"not a directives topic: {shown(topic)}")
    plant = address.plant
    data = load_object(payload)
    if data.get("plant") != plant:
        raise RejectedReading(Reason.TOPIC_MISMATCH, f"directive for {shown(data.get('plant'))}")
    numbers = {}
    for name in _DIRECTIVE_NUMBERS:
        value = number(data.get(name, 1.0 if name == "sigma" else 0.0), name)
        if value < 0:
            raise RejectedReading(Reason.NEGATIVE, f"{name} = {value} < 0")
        if value > MAX_DIRECTIVE_NUMBER:
            raise RejectedReading(
                Reason.IMPLAUSIBLE, f"{name} = {value:g} exceeds {MAX_DIRECTIVE_NUMBER:g}"
            )
        numbers[name] = value
    stage = text(data.get("stage"), "`stage`")
    policy = text(data.get("policy", ""), "`policy`", empty=True)
    return Directive(
        plant=plant,
        issued_ms=parse_timestamp(data.get("issued_ms")),
        effective_ms=parse_timestamp(data.get("effective_ms")),
        stage=stage,
        policy=policy,
        **numbers,
    )
