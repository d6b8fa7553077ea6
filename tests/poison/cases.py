"""Running one bad-input case through the real pipeline and checking its outcome exactly.

A case is a few messages published to the broker (meter readings for the plant whose
agent runs, telemetry for the plant the test plays the agent of, status or directives,
or topics nobody should use), then a canary on the path the case tests. The outcome
checked for each case:

- the canary is stored within ``CANARY_TIMEOUT_S``: nothing stopped ingestion;
- both services are still running;
- each service's refusal counters moved by exactly the expected reasons and counts;
- a dead letter with the right stage and reason arrived for each refusal;
- the store gained exactly the canary and the valid readings the case expects to keep.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Final, Literal

from tests.poison.pipeline import CANARY_TIMEOUT_S, Pipeline
from tests.waiting import WaitTimeoutError, wait_for

DEADLETTER_TIMEOUT_S: Final = 10.0
Path_ = Literal["meter", "telemetry"]


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool = False


@dataclass(frozen=True)
class Expect:
    """What one case must produce: refusals by stage and reason, and readings kept."""

    agent: dict[str, int] = field(default_factory=dict)
    platform: dict[str, int] = field(default_factory=dict)
    simulator: dict[str, int] = field(default_factory=dict)  # seen in its dead letters
    kept: int = 0  # valid readings of the case stored beside its refusals

    @property
    def total(self) -> int:
        return sum(self.agent.values()) + sum(self.platform.values()) + sum(self.simulator.values())

    @property
    def letters(self) -> Counter[tuple[str, str]]:
        return Counter(
            {("agent", r): n for r, n in self.agent.items()}
            | {("platform", r): n for r, n in self.platform.items()}
            | {("simulator", r): n for r, n in self.simulator.items()}
        )


@dataclass(frozen=True)
class Outcome:
    refused: dict[str, dict[str, int]]
    deadletters: Counter[tuple[str, str]]
    stored: dict[str, int]  # plant -> readings gained, the canary included
    alive: dict[str, bool]
    seconds: float


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {
        k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)
    }


def run(pipe: Pipeline, messages: list[Message], expect: Expect, path: Path_) -> Outcome:
    """Publish ``messages``, then a canary on ``path``; return what happened."""
    started = time.monotonic()
    plants = (pipe.meter_plant, pipe.direct_plant)
    rows_before = {p: len(pipe.stored(p)) for p in plants}
    refused_before = pipe.refusals()
    letters_before = pipe.observer.count()
    for message in messages:
        pipe.publisher.publish(message.topic, message.payload, retain=message.retain)
    canary = pipe.send_meter_canary() if path == "meter" else pipe.send_telemetry_canary()
    pipe.wait_stored(canary, CANARY_TIMEOUT_S)
    wanted = {"agent": expect.agent, "platform": expect.platform}

    def observed() -> tuple[dict[str, dict[str, int]], Counter[tuple[str, str]]]:
        after = pipe.refusals()
        refused = {s: _delta(after[s], refused_before[s]) for s in after}
        letters = Counter(
            (str(d.get("stage")), str(d.get("reason"))) for d in pipe.observer.since(letters_before)
        )
        return refused, letters

    # The canary is in, so the refusals are made; their counters and dead letters may
    # still be on their way. If they never add up, check() below says what differs.
    with contextlib.suppress(WaitTimeoutError):
        wait_for(
            lambda: (seen := observed())[0] == wanted and sum(seen[1].values()) >= expect.total,
            "the refusals counted and dead-lettered", DEADLETTER_TIMEOUT_S,
        )  # fmt: skip
    refused, letters = observed()
    stored = {p: len(pipe.stored(p)) - rows_before[p] for p in plants}
    return Outcome(refused, letters, stored, pipe.alive(), time.monotonic() - started)


def check(outcome: Outcome, expect: Expect, path: Path_, pipe: Pipeline) -> None:
    """Assert the outcome is exactly what the case expects."""
    assert all(outcome.alive.values()), (
        f"a service died: {outcome.alive}\n{pipe.platform.log_tail()}\n{pipe.agent.log_tail()}"
        f"\n{pipe.simulator.log_tail()}"
    )
    assert outcome.refused == {"agent": expect.agent, "platform": expect.platform}
    assert outcome.deadletters == expect.letters
    plant = pipe.meter_plant if path == "meter" else pipe.direct_plant
    other = pipe.direct_plant if path == "meter" else pipe.meter_plant
    assert outcome.stored == {plant: 1 + expect.kept, other: 0}
