"""The coordination page in real headless Chromium, on a live pipeline with a coordinator
that switches from stage 1 to stage 3 while the page is open."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from playwright.sync_api import Page, expect

from carbonlink.coordination import load_policy
from tests.configs import REPO_CONFIG
from tests.dashboard.conftest import two_plants
from tests.dashboard.live import LiveDashboard
from tests.servers import MosquittoServer

WAIT_MS: Final = 30_000
# Stage 1 for an hour of simulated time (twelve wall seconds at the live dashboard's speed).
POLICY: Final = f"""
name: quick-switch
description: stage 1, then stage 3 after an hour
params: {REPO_CONFIG / "policies" / "reference.yaml"}
schedule:
  - {{at: "+0s", stage: 1}}
  - {{at: "+1h", stage: 3}}
"""


@pytest.fixture
def coordinated(
    tmp_path: Path, topic_prefix: str, mosquitto_private: MosquittoServer
) -> Iterator[LiveDashboard]:
    settings = two_plants(tmp_path, topic_prefix, mosquitto_private)
    policy_file = tmp_path / "quick-switch.yaml"
    policy_file.write_text(POLICY)
    shadows = [load_policy(REPO_CONFIG / "policies" / f"stage{n}.yaml") for n in (1, 2)]
    status = dict.fromkeys(settings.plants, "online")
    with LiveDashboard(
        settings, mosquitto_private.url, tmp_path, status,
        coordination=(load_policy(policy_file), shadows),
    ) as dashboard:  # fmt: skip
        yield dashboard


@pytest.fixture
def viewport() -> dict[str, int]:
    return {"width": 1440, "height": 1000}  # taller: the coordination page has more panels


def test_page_follows_the_stage_switch_and_verifies_the_ledger(
    coordinated: LiveDashboard, page: Page, artifacts: Path
) -> None:
    page.goto(f"{coordinated.url}/dashboard/coordination")
    stage = page.locator("#stage")
    expect(stage).to_have_text("stage 1: primary neutrality", timeout=WAIT_MS)
    expect(page.locator("nav a.active")).to_have_text("Coordination")
    rows = page.locator("#comparison tbody tr")
    expect(rows).to_have_count(3, timeout=WAIT_MS)  # the active policy and two shadows
    expect(rows.first.locator("td").first).to_have_text("quick-switch (active)")
    expect(page.locator("#directives tbody tr")).to_have_count(2)
    expect(stage).to_have_text("stage 3: advanced symbiosis", timeout=WAIT_MS)
    sigma = page.locator("#directives tbody tr").first.locator("td").nth(4)
    expect(sigma).to_have_text("1.25", timeout=WAIT_MS)
    # Stage 3 shares every period at once: reports reach the ledger while we watch.
    expect(page.locator("#ledger tbody tr").first).to_be_visible(timeout=WAIT_MS)
    first_stage = page.locator("#ledger tbody tr").first.locator("td").nth(3)
    expect(first_stage).to_have_text("3", timeout=WAIT_MS)
    traces = page.evaluate("document.querySelector('#chart-policies').data.length")
    assert traces == 3
    transfer_traces = page.evaluate("document.querySelector('#chart-transfers').data.length")
    assert transfer_traces == 3  # firm, platform, government
    page.locator("#verify").click()
    expect(page.locator("#verify-result")).to_contain_text("chain intact", timeout=WAIT_MS)
    # The page shows the lines `coordinate --verify-ledger --store` prints (the same
    # check, ledger/verify): the chain's verdict and storage's.
    shown = page.locator("#verify-result").inner_text()
    assert shown.startswith("OK: "), shown
    assert "every report signed (key " in shown
    assert ". OK: every report re-derives from sqlite:///" in shown
    assert "quick-switch" in page.locator("#subtitle").inner_text()
    page.screenshot(path=artifacts / "dashboard-coordination.png", full_page=True)


def test_page_says_so_when_no_coordinator_runs(live: LiveDashboard, page: Page) -> None:
    page.goto(f"{live.url}/dashboard/coordination")
    notice = page.locator("#notice")
    expect(notice).to_be_visible(timeout=WAIT_MS)
    expect(notice).to_contain_text("Coordination is not available")
