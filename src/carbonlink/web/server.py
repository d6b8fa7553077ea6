"""Serve a FastAPI app with uvicorn inside an asyncio loop the caller already runs.

Shared by the platform API and the agent's local view.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Final

import uvicorn
from fastapi import FastAPI

__all__ = ["LOG_LEVEL", "SHUTDOWN_TIMEOUT_S", "serve"]

# Open requests get this long to finish when the service stops; then they are cut.
SHUTDOWN_TIMEOUT_S: Final = 5
# Request logs would drown the services' own; errors still show.
LOG_LEVEL: Final = "warning"


async def serve(
    app: FastAPI, host: str, port: int, *, shutdown_timeout_s: int = SHUTDOWN_TIMEOUT_S
) -> None:
    """Serve ``app`` on host:port until cancelled, then shut down gracefully.

    The socket is bound here, so a port in use raises OSError to the caller instead of
    uvicorn's ``sys.exit`` taking the whole service down.
    """
    sock = socket.create_server((host, port), reuse_port=False)
    config = uvicorn.Config(
        app,
        log_level=LOG_LEVEL,
        lifespan="off",
        timeout_graceful_shutdown=shutdown_timeout_s,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        await task
        raise
    finally:
        sock.close()
