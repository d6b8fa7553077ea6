"""The agent's local view over HTTP: what the factory floor sees even with the uplink down."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from carbonlink.agent._service import Agent


def create_view_app(agent: Agent) -> FastAPI:
    app = FastAPI(
        title=f"carbonlink agent {agent.plant.id}",
        description="Latest reading per meter, running CO2e, and the agent's health counters.",
        version="1",
    )

    @app.get("/view", summary="Latest value per meter and running CO2e")
    def view() -> dict[str, Any]:
        return agent.view()

    @app.get("/health", summary="Connection, outbox depth and counters")
    def health() -> dict[str, Any]:
        return {
            "connected": agent.connected.is_set(),
            "outbox_depth": agent.outbox_depth,
            "counters": agent.counters.as_dict(),
        }

    return app
