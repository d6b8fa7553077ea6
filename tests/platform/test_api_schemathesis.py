"""schemathesis against the API's own OpenAPI document, as an operator would run it: the
`schemathesis run` command against a real server (uvicorn) that serves recorded data, a
coordination journal and the API token, so the state-changing endpoints are exercised
too. Every operation gets generated requests, valid and invalid; none may get a 5xx, and
every answer must be one the document describes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import aiomqtt
import pytest

from carbonlink.config import load_config
from carbonlink.coordination import Coordinator, Journal, load_policy
from carbonlink.mqtt.client import parse_broker_url
from carbonlink.platform import open_store
from carbonlink.web.api import create_app
from carbonlink.web.server import serve
from tests.configs import REPO_CONFIG
from tests.coordination.recording import HOUR, START_MS, flat_settings, record
from tests.platform.test_api import _wait_until_up
from tests.servers import HOST, MosquittoServer, free_port

TOKEN: Final = "schemathesis-token"
EXAMPLES: Final = "25"
SEED: Final = "20261201"  # the same requests on every run
RUN_TIMEOUT_S: Final = 600
# Left out, for reasons of our API and of the framework, not laziness:
# - positive_data_acceptance: a request can fit the schema and still be wrong (a time of
#   month 13, an end before its start), and the API says so with a 422 naming the field;
# - unsupported_method, allow_header_conformance: Starlette answers 405 per route, so a
#   path served by two routes (GET and POST of /coordination/shadows) lists only one
#   route's methods in Allow.
EXCLUDED: Final = "positive_data_acceptance,unsupported_method,allow_header_conformance"


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server over four recorded hours of a plant and a coordinator's journal."""
    work = tmp_path_factory.mktemp("schemathesis")
    settings = flat_settings(work / "config", {"cement-01": "cement-01"})
    shutil.copytree(REPO_CONFIG / "policies", work / "config" / "policies")
    settings = load_config(settings.path)
    store = open_store(f"sqlite:///{work / 'store.sqlite'}")
    record(settings, store, list(settings.plants.values()), START_MS, 4)
    journal_path = work / "journal.sqlite"
    with MosquittoServer(work / "broker") as broker, Journal(journal_path) as journal:
        clock = [START_MS]
        coordinator = Coordinator(
            settings, store, parse_broker_url(broker.url),
            load_policy(settings.policies_dir() / "switch-1-to-3.yaml"), journal,
            shadows=[load_policy(settings.policies_dir() / "stage1.yaml")],
            clock_ms=lambda: clock[0], period_s=900.0, read_lag_s=0.0,
        )  # fmt: skip

        async def run() -> None:
            async with aiomqtt.Client(broker.host, broker.port) as client:
                for k in range(13):
                    clock[0] = START_MS + k * HOUR // 4
                    await coordinator.step(client)

        asyncio.run(run())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CARBONLINK_API_TOKEN", TOKEN)  # read when the app is made
        app = create_app(store, settings, journal_path=journal_path, clock_ms=lambda: START_MS)
    port = free_port()
    loop = asyncio.new_event_loop()
    task = loop.create_task(serve(app, HOST, port))

    def serve_forever() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # how the fixture stops it
            loop.run_until_complete(task)
        loop.close()

    thread = threading.Thread(target=serve_forever, daemon=True)
    thread.start()
    base = f"http://{HOST}:{port}"
    try:
        _wait_until_up(f"{base}/api/v1/health")
        yield base
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(timeout=10)
        store.close()


def test_api_answers_as_its_document_says(api_url: str, tmp_path: Path) -> None:
    schemathesis = Path(sys.executable).with_name("schemathesis")
    done = subprocess.run(
        [str(schemathesis), "run", f"{api_url}/openapi.json", "--checks", "all",
         "--exclude-checks", EXCLUDED, "--header", f"Authorization: Bearer {TOKEN}",
         "--max-examples", EXAMPLES, "--seed", SEED, "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=tmp_path,  # its cache
        env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    summary = done.stdout[-3000:]
    print(summary)  # the run's summary in the test output (pytest -s)
    assert done.returncode == 0, summary + done.stderr[-2000:]
    assert "No issues found" in done.stdout or "passed" in done.stdout.lower()
