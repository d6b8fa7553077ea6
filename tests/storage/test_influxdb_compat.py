"""``influxdb://`` on a server that will not run ``CREATE DATABASE`` (issue 18).

InfluxDB 2.x answers it on its 1.x compatibility API with HTTP 200 and
``"error": "not implemented: CREATE DATABASE"`` (influxdata/influxdb#22255); a login
without admin rights gets 401 or 403. No 2.x or 3.x server can be installed here, so
these answers come from a **stub** HTTP server, a mock of exactly that answer and nothing
more: it records what is written to it and answers 204. The real InfluxDB 1.x, where
CREATE DATABASE works, is covered by every InfluxDB test of the contract
(tests/storage/test_contract.py).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from carbonlink.errors import StoreError
from carbonlink.storage import StoredBatch, open_store
from tests.storage.test_contract import reading

NOT_IMPLEMENTED = {"results": [{"statement_id": 0, "error": "not implemented: CREATE DATABASE"}]}


@dataclass
class Stub:
    """What /query answers to CREATE DATABASE; what /write received."""

    status: int = 200
    body: object = field(default_factory=lambda: NOT_IMPLEMENTED)
    writes: list[tuple[str, bytes]] = field(default_factory=list)  # (db, line protocol)
    select: dict[str, object] | None = None  # /query's answer to a SELECT (None: empty)
    port: int = 0


@pytest.fixture
def stub() -> Iterator[Stub]:
    state = Stub()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            url = urlsplit(self.path)
            params = parse_qs(url.query)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if url.path == "/write":
                state.writes.append((params["db"][0], body))
                self.send_response(204)
                self.end_headers()
                return
            assert url.path == "/query"
            assert params["q"][0].startswith("CREATE DATABASE")
            payload = json.dumps(state.body).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            # Reads (the store asks which measurements exist, for its rollups): an empty
            # database, as 2.x's 1.x compatibility API answers for a new bucket.
            url = urlsplit(self.path)
            assert url.path == "/query"
            selecting = parse_qs(url.query)["q"][0].startswith("SELECT")
            answer = state.select if selecting and state.select is not None else {}
            payload = json.dumps({"results": [{"statement_id": 0} | answer]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass  # pytest shows the store's own log

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, NOT_IMPLEMENTED),
        (401, {"error": "authorization failed"}),
        (403, {"error": "user not authorized to execute statement 'CREATE DATABASE'"}),
    ],
    ids=["2.x-not-implemented", "401", "403"],
)
def test_open_skips_create_database_it_may_not_run_and_writes(
    stub: Stub, status: int, body: object, caplog: pytest.LogCaptureFixture
) -> None:
    stub.status, stub.body = status, body
    with caplog.at_level(logging.WARNING):
        store = open_store(f"influxdb://127.0.0.1:{stub.port}/carbonlink")
    try:
        store.write_batch(StoredBatch.from_readings([reading("p1", "m1", 0, 1.5, 3.0)]))
    finally:
        store.close()
    warning = caplog.text
    assert "CREATE DATABASE skipped" in warning
    assert f"HTTP {status}" in warning
    assert [db for db, _ in stub.writes] == ["carbonlink"] * len(stub.writes)
    assert any(b"plant=p1" in lines for _, lines in stub.writes)


@pytest.mark.parametrize(
    ("status", "body", "retryable"),
    [
        (200, {"results": [{"statement_id": 0, "error": "database name required"}]}, False),
        (400, {"error": "bad request"}, False),
        (503, {"error": "unavailable"}, True),
    ],
)
def test_any_other_refusal_stops_the_opening_naming_the_store(
    stub: Stub, status: int, body: object, retryable: bool
) -> None:
    stub.status, stub.body = status, body
    url = f"influxdb://127.0.0.1:{stub.port}/carbonlink"
    with pytest.raises(StoreError) as caught:
        open_store(url)
    assert str(caught.value).startswith(f"influxdb {url}: CREATE DATABASE: ")
    assert caught.value.retryable is retryable
    assert stub.writes == []


def test_a_point_read_while_it_is_written_is_not_shown(stub: Stub) -> None:
    """InfluxDB 1.x writes a point's fields one by one; a read racing another worker's
    write can get ``value`` without ``duration_s`` (CI saw it with two workers). The
    real server shows this only by chance, so the stub answers exactly that."""
    stub.status, stub.body = 200, {"results": [{"statement_id": 0}]}
    columns = ["time", "plant", "meter", "value", "unit", "duration_s", "quality"]
    stub.select = {"series": [{"name": "activity", "columns": columns, "values": [
        [60_000, "p1", "kiln-coal", 0.25, "t", 60.0, "good"],
        [120_000, "p1", "kiln-coal", 0.25, None, None, None],  # being written
    ]}]}  # fmt: skip
    store = open_store(f"influxdb://127.0.0.1:{stub.port}/carbonlink")
    try:
        frame = store.activity("p1")
    finally:
        store.close()
    assert frame["duration_s"].tolist() == [60.0]
    assert frame["unit"].tolist() == ["t"]
