"""Factory-side agent: collects a plant's meters, validates them, forwards telemetry."""

from carbonlink.agent._service import Agent, AgentCounters
from carbonlink.agent._validation import MeterValidator, Verdict

__all__ = ["Agent", "AgentCounters", "MeterValidator", "Verdict"]
