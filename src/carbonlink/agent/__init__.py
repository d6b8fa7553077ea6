"""Factory-side agent: collects a plant's meters, validates them, forwards telemetry."""

from carbonlink.agent._service import Agent, AgentCounters
from carbonlink.agent._sparkplug import SparkplugHost, SparkplugOutcome
from carbonlink.agent._validation import MeterValidator, Verdict
from carbonlink.agent._view import create_view_app

__all__ = [
    "Agent",
    "AgentCounters",
    "MeterValidator",
    "SparkplugHost",
    "SparkplugOutcome",
    "Verdict",
    "create_view_app",
]
