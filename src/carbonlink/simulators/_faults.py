"""Scripted faults: what goes wrong on the wire, when, and for which plant or meter.

A fault names a kind, a plant, optionally a meter, and a window relative to the start
of the run in simulated time. Sample faults change values or timestamps before
encoding; message faults change what is published; connection faults drop the plant's
MQTT connection. From the command line: ``KIND:PLANT[/METER]@START+DURATION[,k=v...]``,
e.g. ``spike:cement-01/kiln-coal@1h+5m,factor=20`` (see docs/simulators.md).
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Final

from pydantic import Field

from carbonlink.core.durations import Duration
from carbonlink.core.yamlfiles import StrictModel, load_yaml_model
from carbonlink.errors import ConfigError


class FaultKind(StrEnum):
    DROPOUT = "dropout"  # samples in the window are never sent
    STUCK = "stuck"  # the value at the window's start repeats
    SPIKE = "spike"  # values multiplied by `factor`
    DRIFT = "drift"  # values drift by `drift_per_hour` (relative) since the start
    COUNTER_RESET = "counter_reset"  # the register restarts at zero at the start
    CLOCK_SKEW = "clock_skew"  # timestamps shifted by `skew_s`
    DUPLICATE = "duplicate"  # every message sent twice
    OUT_OF_ORDER = "out_of_order"  # consecutive messages swapped in pairs
    MALFORMED = "malformed"  # payload cut in half (invalid JSON)
    OFFLINE = "offline"  # connection dropped without DISCONNECT (last will); data lost
    BROKER_DISCONNECT = "broker_disconnect"  # connection dropped; data kept and re-sent


SAMPLE_FAULTS: Final = frozenset(
    {FaultKind.DROPOUT, FaultKind.STUCK, FaultKind.SPIKE, FaultKind.DRIFT, FaultKind.CLOCK_SKEW}
)
MESSAGE_FAULTS: Final = frozenset(
    {FaultKind.DUPLICATE, FaultKind.OUT_OF_ORDER, FaultKind.MALFORMED}
)
CONNECTION_FAULTS: Final = frozenset({FaultKind.OFFLINE, FaultKind.BROKER_DISCONNECT})


class Fault(StrictModel):
    kind: FaultKind
    plant: str
    meter: str | None = Field(default=None, description="None: every meter of the plant")
    start: Duration = Field(description="Offset from the start of the run (simulated)")
    duration: Duration = 60.0
    factor: float = Field(default=10.0, description="spike: value multiplier")
    drift_per_hour: float = Field(default=0.05, description="drift: relative change per hour")
    skew_s: float = Field(default=600.0, description="clock_skew: seconds added to ts")

    def window_ms(self, run_start_ms: int) -> tuple[int, int]:
        start = run_start_ms + round(self.start * 1000)
        return start, start + round(self.duration * 1000)

    def matches(self, plant: str, meter: str | None) -> bool:
        return plant == self.plant and (self.meter is None or meter is None or meter == self.meter)


class FaultScript(StrictModel):
    """Shape of a faults file (``config/faults/*.yaml``)."""

    faults: tuple[Fault, ...] = ()


def load_faults(path: str | Path) -> tuple[Fault, ...]:
    return load_yaml_model(Path(path), FaultScript).faults


_SPEC = re.compile(
    r"^(?P<kind>[a-z_]+):(?P<plant>[a-z0-9][a-z0-9_-]*)(?:/(?P<meter>[a-z0-9][a-z0-9_-]*))?"
    r"@(?P<start>[^+,]+)(?:\+(?P<duration>[^,]+))?(?P<params>(?:,[a-z_]+=[^,]+)*)$"
)


def parse_fault(spec: str) -> Fault:
    """``KIND:PLANT[/METER]@START[+DURATION][,key=value...]`` -> Fault."""
    match = _SPEC.match(spec.strip())
    if not match:
        raise ConfigError(
            None, "--fault", f"{spec!r}: expected KIND:PLANT[/METER]@START[+DURATION][,k=v]"
        )
    fields: dict[str, object] = {
        "kind": match["kind"],
        "plant": match["plant"],
        "meter": match["meter"],
        "start": match["start"],
    }
    if match["duration"]:
        fields["duration"] = match["duration"]
    for pair in filter(None, match["params"].split(",")):
        key, _, value = pair.partition("=")
        fields[key] = value
    try:
        return Fault.model_validate(fields)
    except ValueError as exc:
        raise ConfigError(None, "--fault", f"{spec!r}: {exc}") from None
