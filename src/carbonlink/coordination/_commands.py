"""What an operator may ask the running coordinator, typed (the API queues these in the
journal; the coordinator takes them in at its next step).

The journal keeps each command as a kind and a JSON body; :func:`command_from` turns
them back into a command, or raises ValueError naming what is wrong, which the
coordinator records as the command's outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

__all__ = ["AddShadow", "Command", "RemoveShadow", "SwitchStage", "body_of", "command_from"]


@dataclass(frozen=True, slots=True)
class SwitchStage:
    """Force a stage from ``at_ms`` on; ``stage=None`` returns to the policy's schedule."""

    kind: ClassVar[str] = "stage"
    stage: Literal[1, 2, 3] | None
    at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class AddShadow:
    """Compare a policy (its file) live beside the active one."""

    kind: ClassVar[str] = "add_shadow"
    path: str
    policy: str


@dataclass(frozen=True, slots=True)
class RemoveShadow:
    """Stop comparing a shadow policy."""

    kind: ClassVar[str] = "remove_shadow"
    name: str


Command = SwitchStage | AddShadow | RemoveShadow
_KINDS: dict[str, type[SwitchStage] | type[AddShadow] | type[RemoveShadow]] = {
    c.kind: c for c in (SwitchStage, AddShadow, RemoveShadow)
}


def body_of(command: Command) -> dict[str, Any]:
    return asdict(command)


def command_from(kind: str, body: Mapping[str, Any]) -> Command:
    """The command a journal row holds; ValueError if it is none."""
    shape = _KINDS.get(kind)
    if shape is None:
        raise ValueError(f"unknown command {kind!r} (known: {', '.join(sorted(_KINDS))})")
    if shape is SwitchStage:
        stage = body.get("stage")
        if stage not in (1, 2, 3, None):
            raise ValueError(f"stage must be 1, 2, 3 or null (the schedule), got {stage!r}")
        at_ms = body.get("at_ms")
        if at_ms is not None and (isinstance(at_ms, bool) or not isinstance(at_ms, int)):
            raise ValueError(f"at_ms must be epoch ms, got {at_ms!r}")
        return SwitchStage(stage, at_ms)
    if shape is AddShadow:
        return AddShadow(str(body["path"]), str(body.get("policy", "")))
    return RemoveShadow(str(body["name"]))
