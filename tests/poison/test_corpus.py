"""The bad-input corpus through the real pipeline: every case refused with its reason,
counted and dead-lettered exactly, nothing else lost, and every service still running.

The cases (``corpus.py``) run one after the other against the same processes, so each
process survives all of them, not one. The summary at the end checks the totals: every
refusal the services counted was dead-lettered, and the store holds exactly the canaries
and the valid readings the cases kept.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

import pytest

from tests.poison import corpus
from tests.poison.cases import check, run
from tests.poison.pipeline import Pipeline

pytestmark = [pytest.mark.mosquitto, pytest.mark.influxdb, pytest.mark.slow]

CASES: Final = corpus.all_cases()
RESULTS: Counter[str] = Counter()


def test_the_corpus_covers_every_payload_type_and_reason() -> None:
    assert len(CASES) >= 150
    families = Counter(case.id.split("/")[0] for case in CASES)
    assert set(families) == {"meter", "telemetry", "status", "directive", "topic", "yaml"}
    reasons = {r for c in CASES for r in (*c.expect.agent, *c.expect.platform,
                                           *c.expect.simulator)}  # fmt: skip
    # Every reason a message can earn on the wire, but for out_of_order of interval
    # meters past the 4,096-reading window (tests/agent) and the service's own failures.
    from carbonlink import wire

    # Sparkplug B's reasons need an edge node's session (births, seq): each is earned
    # through the broker in tests/plant/test_sparkplug.py instead.
    sparkplug = {"malformed_protobuf", "no_birth", "seq_gap", "unknown_metric"}
    assert wire.REASONS - reasons <= {"internal_error", "poison", *sparkplug}
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_through_the_real_path(pipe: Pipeline, case: corpus.Case) -> None:
    if case.fresh_agent:
        pipe.restart_agent(fresh=True)
    try:
        outcome = run(pipe, case.build(pipe), case.expect, case.path)
        check(outcome, case.expect, case.path, pipe)
    finally:
        if case.cleanup is not None:
            for message in case.cleanup(pipe):
                pipe.publisher.publish(message.topic, message.payload, retain=message.retain)
    RESULTS["cases"] += 1
    RESULTS["refusals"] += case.expect.total
