"""What operators change in a running coordinator (from the API, through the journal):
stage switches and shadow policies added or removed. Kept apart from the loop so the
one place that matches a command is here, and what it changed survives a restart."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from carbonlink import wire
from carbonlink.coordination._commands import AddShadow, Command, RemoveShadow, SwitchStage
from carbonlink.coordination._policy import Policy, StageNumber, load_policy
from carbonlink.coordination._shadows import ShadowBank

__all__ = ["Operations"]

Schedule = Callable[[int, int], StageNumber]


class Operations:
    """Operators' stage switches (from when; a stage, or None for the policy's schedule)
    and the shadow policies they added (by file) or removed (by name)."""

    def __init__(self) -> None:
        self.overrides: list[tuple[int, int | None]] = []
        self.added_shadows: list[str] = []
        self.removed_shadows: list[str] = []

    def stage_at(self, schedule: Schedule, boundary: int, run_start: int) -> StageNumber:
        """The policy's ``schedule``, unless an operator switched the stage since."""
        chosen: int | None = None
        for at_ms, stage in sorted(self.overrides, key=lambda o: o[0]):
            if at_ms <= boundary:
                chosen = stage
        if chosen is None:
            return schedule(boundary, run_start)
        return chosen  # type: ignore[return-value]  # validated to 1, 2 or 3 on arrival

    def shadow_bank(
        self,
        bank: ShadowBank | None,
        make: Callable[[list[Policy]], ShadowBank],
        configured: tuple[Policy, ...],
        add: Callable[[ShadowBank, Policy], None],
    ) -> ShadowBank | None:
        """``bank``, or the bank the configured and added shadows make (None: no shadows)."""
        if bank is not None or not (configured or self.added_shadows):
            return bank
        removed = set(self.removed_shadows)
        bank = make([s for s in configured if s.name not in removed])
        for path in self.added_shadows:
            policy = load_policy(Path(path))
            if policy.name not in removed and policy.name not in bank.policies:
                add(bank, policy)
        return bank

    def apply(
        self,
        command: Command,
        now: int,
        bank: Callable[[bool], ShadowBank | None],
        add: Callable[[ShadowBank, Policy], None],
    ) -> str:
        """Apply one command; the outcome as the journal records it. ``bank(make)`` gives
        the shadow bank, made empty when there is none and ``make`` is true. ValueError or
        ConfigError: refused, and why."""
        match command:
            case SwitchStage(stage=stage, at_ms=at_ms):
                at = at_ms or now
                self.overrides.append((at, stage))
                what = "the policy's schedule" if stage is None else f"stage {stage}"
                return f"applied: {what} from {wire.format_timestamp(at)}"
            case AddShadow(path=path_text):
                policy = load_policy(Path(path_text))
                shadows = bank(True)
                assert shadows is not None  # made on demand
                add(shadows, policy)
                self.added_shadows.append(str(Path(path_text)))
                if policy.name in self.removed_shadows:
                    self.removed_shadows.remove(policy.name)
                return f"applied: {policy.name} compared from {wire.format_timestamp(now)}"
            case RemoveShadow(name=name):
                existing = bank(False)
                if existing is None:
                    raise ValueError(f"no shadow policy {name!r}")
                existing.remove(name)
                self.removed_shadows.append(name)
                return f"applied: {name} no longer compared"

    def state(self) -> dict[str, Any]:
        return {
            "overrides": [list(o) for o in self.overrides],
            "added_shadows": self.added_shadows,
            "removed_shadows": self.removed_shadows,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.overrides = [(int(at), stage) for at, stage in state.get("overrides", [])]
        self.added_shadows = list(state.get("added_shadows", []))
        self.removed_shadows = list(state.get("removed_shadows", []))
