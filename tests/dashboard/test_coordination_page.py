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
    expect(page.locator("#stage-meaning")).to_contain_text("nobody pays anybody")
    expect(page.locator("nav a.active")).to_have_text("Coordination")
    rows = page.locator("#comparison tbody tr")
    expect(rows).to_have_count(3, timeout=WAIT_MS)  # the active policy and two shadows
    expect(rows.first.locator("td").first).to_have_text("quick-switch (in force)")
    expect(page.locator("#directives tbody tr")).to_have_count(2)
    expect(stage).to_have_text("stage 3: advanced symbiosis", timeout=WAIT_MS)
    sigma = page.locator("#directives tbody tr").first.locator("td").nth(4)
    expect(sigma).to_have_text("\u00d71.25", timeout=WAIT_MS)
    # Stage 3 shares every period at once: reports reach the ledger while we watch.
    expect(page.locator("#ledger tbody tr").first).to_be_visible(timeout=WAIT_MS)
    first_stage = page.locator("#ledger tbody tr").first.locator("td").nth(3)
    expect(first_stage).to_have_text("3", timeout=WAIT_MS)
    expect(page.locator("#chart-transfers")).to_be_visible(timeout=WAIT_MS)
    traces = page.evaluate("document.querySelector('#chart-policies').data.length")
    assert traces == 3
    transfer_traces = page.evaluate("document.querySelector('#chart-transfers').data.length")
    assert transfer_traces == 3  # firm, platform, government
    # The time axis spans at least a period either side: never a span of milliseconds.
    span = page.evaluate(
        "(() => { const r = document.querySelector('#chart-transfers').layout.xaxis.range;"
        " return new Date(r[1]) - new Date(r[0]); })()"
    )
    assert span >= 2 * 300_000
    page.locator("#verify").click()
    expect(page.locator("#verify-result")).to_contain_text("chain intact", timeout=WAIT_MS)
    # The page shows the lines `coordinate --verify-ledger --store` prints (the same
    # check, ledger/verify): the chain's verdict and storage's.
    shown = page.locator("#verify-result").inner_text()
    assert shown.startswith("OK: "), shown
    assert "every report signed (key " in shown
    assert ". OK: every report re-derives from sqlite:///" in shown
    assert "quick-switch" in page.locator("#subtitle").inner_text()
    # Units and plain words: money in kCNY, tonnes of CO2e, times in the plants' zone;
    # the model's symbols only in tooltips.
    headers = page.locator("#comparison thead").inner_text()
    assert "kCNY" in headers
    assert "tCO\u2082e" in headers
    assert "thousand CNY (kCNY)" in page.locator("#conventions").inner_text()
    assert "Asia/Shanghai" in page.locator("#conventions").inner_text()
    assert "Asia/Shanghai" in page.locator("#ledger thead").inner_text()
    expect(page.locator("#settlement")).to_contain_text("core split", timeout=WAIT_MS)
    expect(page.locator("#government")).to_contain_text("Public money paid so far")
    expect(page.locator("#government")).to_contain_text("kCNY")
    visible = page.locator("main").inner_text()
    for symbol in ("E_M", "E_P", "theta", "\u03c3", "\u03b8", "sees 15"):
        assert symbol not in visible, symbol
    assert page.locator("#directives thead th").nth(2).get_attribute("title") == "E_M in the model"
    page.screenshot(path=artifacts / "dashboard-coordination.png", full_page=True)


def test_before_the_first_period_the_page_says_what_will_come(
    tmp_path: Path,
    topic_prefix: str,
    mosquitto_private: MosquittoServer,
    page: Page,
    artifacts: Path,
) -> None:
    """An hour-long period: for the first 12 wall seconds nothing has been evaluated.
    The page shows why instead of empty charts with made-up axes."""
    settings = two_plants(tmp_path, topic_prefix, mosquitto_private)
    shadows = [load_policy(REPO_CONFIG / "policies" / "stage3.yaml")]
    policy = load_policy(REPO_CONFIG / "policies" / "stage2.yaml")
    status = dict.fromkeys(settings.plants, "online")
    with LiveDashboard(
        settings, mosquitto_private.url, tmp_path, status, coordination=(policy, shadows),
        coordination_period_s=3600.0,
    ) as dashboard:  # fmt: skip
        page.goto(f"{dashboard.url}/dashboard/coordination")
        expect(page.locator("#stage")).to_have_text("stage 2: intermediate dependence",
                                                    timeout=WAIT_MS)  # fmt: skip
        expect(page.locator("#comparison-empty")).to_contain_text("No period has been evaluated")
        expect(page.locator("#transfers-empty")).to_contain_text("No money has moved yet")
        expect(page.locator("#ledger-empty")).to_be_visible()
        assert page.locator("#chart-policies").is_hidden()
        assert page.locator("#chart-transfers").is_hidden()
        expect(page.locator("#settlement")).to_contain_text("If stage 3 were in force")
        page.screenshot(path=artifacts / "dashboard-coordination-empty.png", full_page=True)
        # Once the first period is in, the comparison replaces the empty state.
        expect(page.locator("#chart-policies")).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("#comparison-empty")).to_be_hidden()
        expect(page.locator("#comparison tbody tr")).to_have_count(2)


def test_page_says_so_when_no_coordinator_runs(live: LiveDashboard, page: Page) -> None:
    page.goto(f"{live.url}/dashboard/coordination")
    notice = page.locator("#notice")
    expect(notice).to_be_visible(timeout=WAIT_MS)
    expect(notice).to_contain_text("Coordination is not available")
