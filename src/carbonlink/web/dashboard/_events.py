"""Server-Sent Events: a tick loop that sends what changed, as named JSON events.

Each stream polls the store every ``refresh_s`` in a worker thread (store calls block)
and sends only news. A comment line goes out when there is none, so a closed browser
tab is noticed on the next write and the stream ends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Final

from starlette.requests import Request

__all__ = ["KEEPALIVE", "SSE_MEDIA_TYPE", "Poll", "event", "event_stream"]

SSE_MEDIA_TYPE: Final = "text/event-stream"
KEEPALIVE: Final = ": keepalive\n\n"
# Tells EventSource how long to wait before reconnecting after the stream drops.
RETRY_MS: Final = 3000

Poll = Callable[[], list[tuple[str, dict[str, object]]]]


def event(name: str, data: object) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def event_stream(
    request: Request, first: Poll, poll: Poll, refresh_s: float
) -> AsyncIterator[str]:
    """``first()`` once, then ``poll()`` every ``refresh_s`` until the browser leaves."""
    yield f"retry: {RETRY_MS}\n\n"
    for name, data in await asyncio.to_thread(first):
        yield event(name, data)
    while not await request.is_disconnected():
        await asyncio.sleep(refresh_s)
        events = await asyncio.to_thread(poll)
        for name, data in events:
            yield event(name, data)
        if not events:
            yield KEEPALIVE
