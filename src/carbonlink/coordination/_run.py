"""What a coordinator run keeps between steps, as the journal stores it: the decision in
force per plant (``InForce``), under ``STATE_KEY``, and the directive history read back
from it by backtests and verification.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from carbonlink.coordination._journal import Journal
from carbonlink.coordination._ledger import parse_anchor
from carbonlink.coordination.model import CoordinationParams, StageResult

__all__ = ["STATE_KEY", "InForce", "decode_anchor", "directive_history"]

STATE_KEY: Final = "coordinator"


@dataclass
class InForce:
    """The decision a plant runs under until the next step, and what it was based on."""

    result: StageResult
    params: CoordinationParams
    sources: dict[str, str] = field(default_factory=dict)

    def state(self) -> dict[str, Any]:
        return {
            "result": asdict(self.result),
            "params": self.params.model_dump(),
            "sources": self.sources,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> InForce:
        return cls(
            StageResult.from_record(state["result"]),
            CoordinationParams.model_validate(state["params"]),
            dict(state["sources"]),
        )


def directive_history(
    journal: Journal, plant: str, end_ms: int
) -> list[tuple[int, int, float, float, float]]:
    """(start, end, E_M, E_P, sigma) of every period up to ``end_ms``: the recorded ones,
    those decided but not yet read (in the coordinator's state), and the decision still
    in force, which holds until the next one (directives are retained).

    Every period returned has a positive length: the decision in force is left out when
    it began at or after ``end_ms`` (a window that ends before the coordinator's last
    step), which would otherwise be a period of no length."""
    rows = journal.periods(plant, end_ms=end_ms)
    history = [
        (int(a), int(b), float(e_m), float(e_p), float(sigma))
        for a, b, e_m, e_p, sigma in rows[
            ["start_ms", "end_ms", "effort_firm", "effort_platform", "sigma"]
        ].itertuples(index=False)
    ]
    state = journal.load_state(STATE_KEY)
    if state is None:
        return history
    decided = [(a, b, d.get(plant)) for a, b, d in state.get("unrecorded", [])]
    if state.get("last_ms") is not None and state["last_ms"] < end_ms:
        decided.append((state["last_ms"], end_ms, state["in_force"].get(plant)))
    recorded_until = history[-1][1] if history else None
    for start, end, decision in decided:
        if decision is None or (recorded_until is not None and end <= recorded_until):
            continue
        result = decision["result"]
        history.append(
            (
                int(start),
                int(end),
                float(result["E_M"]),
                float(result["E_P"]),
                float(result["sigma"]),
            )
        )
    return history


def decode_anchor(payload: bytes) -> tuple[int, str]:
    """(next index, head hash) from a retained ledger anchor message."""
    anchor = parse_anchor(payload)
    return anchor.next_index, anchor.head
