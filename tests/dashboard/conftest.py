"""Fixtures for the dashboard tests: a live pipeline, and headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from carbonlink.config import Settings, load_config
from tests.configs import write_config
from tests.dashboard.live import LiveDashboard
from tests.servers import MosquittoServer

CHROMIUM: Final = Path("/usr/bin/chromium")
# The machine may have no network at all: keep Chromium from trying to reach anything.
CHROMIUM_ARGS: Final = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTIFACTS: Final = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Module, not session: Playwright's sync API keeps an event loop running in the main
    # thread while it is open, and every later test calling asyncio.run() would fail.
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is not installed: run scripts/test (it installs chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def two_plants(tmp_path: Path, topic_prefix: str, broker: MosquittoServer) -> Settings:
    """The settings of a cement and a steel plant on ``broker``, ids unique to the test."""
    plants = {f"{topic_prefix}-cement": "cement-01", f"{topic_prefix}-steel": "steel-01"}
    config = write_config(
        tmp_path / "config", plants=plants, broker_url=broker.url,
        client_id=f"platform-{topic_prefix}",
    )  # fmt: skip
    return load_config(config)


@pytest.fixture
def viewport() -> dict[str, int]:
    """The browser window's size; a test module overrides it where it needs more room."""
    return {"width": 1440, "height": 900}


@pytest.fixture
def page(browser: Browser, viewport: dict[str, int]) -> Iterator[Page]:
    """A fresh page; the test fails on any JavaScript error the page raised."""
    context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]  # a TypedDict
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], f"JavaScript errors: {errors}"


@pytest.fixture
def live(
    tmp_path: Path, topic_prefix: str, mosquitto_private: MosquittoServer
) -> Iterator[LiveDashboard]:
    """Two plants (cement, steel) streaming on a simulated clock, with the dashboard."""
    settings = two_plants(tmp_path, topic_prefix, mosquitto_private)
    status = {f"{topic_prefix}-cement": "online", f"{topic_prefix}-steel": "offline"}
    with LiveDashboard(settings, mosquitto_private.url, tmp_path, status) as dashboard:
        yield dashboard
