"""The dashboard in real headless Chromium, on a live pipeline: values move, charts grow."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from playwright.sync_api import Page, expect

from carbonlink.emissions import FactorLibrary
from tests.dashboard.live import LiveDashboard

WAIT_MS: Final = 20_000
ENERGY_KINDS: Final = ("fuel", "electricity", "heat")
# Counts how charts change: redraws (newPlot/react) versus appends (extendTraces).
COUNT_PLOTLY_CALLS: Final = """() => {
  window.__calls = { newPlot: 0, react: 0, extendTraces: 0 };
  for (const name of Object.keys(window.__calls)) {
    const original = Plotly[name];
    Plotly[name] = (...args) => { window.__calls[name] += 1; return original(...args); };
  }
  window.__chart = document.querySelector('#chart-source');
  window.__svg = window.__chart.querySelector('.main-svg');
}"""


def _plant_ids(live: LiveDashboard) -> list[str]:
    return sorted(live.settings.plants)


def test_overview_lists_plants_and_live_values_change(
    live: LiveDashboard, page: Page, artifacts: Path
) -> None:
    cement, steel = _plant_ids(live)
    page.goto(f"{live.url}/")
    cards = page.locator("article.card")
    cards.first.wait_for()
    assert cards.count() == 2
    status = '[data-plant="{}"] [data-field="status"]'
    expect(page.locator(status.format(cement))).to_have_text("online", timeout=WAIT_MS)
    expect(page.locator(status.format(steel))).to_have_text("offline")
    today = f'[data-plant="{cement}"] [data-field="today"]'
    page.wait_for_function(
        f"document.querySelector('{today}').textContent !== '\u2013'", timeout=WAIT_MS
    )
    first = page.locator(today).inner_text()
    page.wait_for_function(
        f"document.querySelector('{today}').textContent !== {first!r}", timeout=WAIT_MS
    )
    assert float(page.locator(today).inner_text().replace(",", "")) > float(first.replace(",", ""))
    rate = page.locator(f'[data-plant="{cement}"] [data-field="rate"]').inner_text()
    assert float(rate.replace(",", "")) > 0
    assert "readings stored" in page.locator("#quality").inner_text()
    # The navigation leads to coordination too.
    assert page.locator("nav a", has_text="Coordination").inner_text() == "Coordination"
    page.screenshot(path=artifacts / "dashboard-overview.png", full_page=True)


def test_plant_page_appends_points_without_redrawing(
    live: LiveDashboard, page: Page, artifacts: Path
) -> None:
    cement, _ = _plant_ids(live)
    page.goto(f"{live.url}/dashboard/plants/{cement}?")
    page.wait_for_function(
        "document.querySelector('#chart-source').data?.[0]?.x.length > 0", timeout=WAIT_MS
    )
    names = page.evaluate(
        "['#chart-source', '#chart-scope', '#chart-energy'].map("
        "id => document.querySelector(id).data.map(t => t.name))"
    )
    library = FactorLibrary.builtin()
    carriers = [
        m.activity.replace("_", " ")
        for m in live.settings.plants[cement].meters
        if m.activity is not None and library.kind_of(m.activity) in ENERGY_KINDS
    ]
    assert names == [["fuel", "process", "electricity"], ["Scope 1", "Scope 2"], carriers]
    page.evaluate(COUNT_PLOTLY_CALLS)
    before = page.evaluate("document.querySelector('#chart-source').data[0].x.length")
    page.wait_for_function(
        f"document.querySelector('#chart-source').data[0].x.length > {before} + 2",
        timeout=WAIT_MS,
    )
    calls = page.evaluate("window.__calls")
    assert calls["extendTraces"] > 0
    assert calls["newPlot"] == calls["react"] == 0, "a live update redrew a chart"
    assert page.evaluate(
        "window.__chart === document.querySelector('#chart-source')"
        " && window.__svg === window.__chart.querySelector('.main-svg')"
    ), "the chart element was replaced"
    lengths = page.evaluate(
        "['#chart-source', '#chart-scope', '#chart-energy'].flatMap("
        "id => document.querySelector(id).data.map(t => t.x.length))"
    )
    assert len(set(lengths)) == 1, f"traces out of step: {lengths}"
    axis = page.evaluate("document.querySelector('#chart-source').layout.yaxis.title.text")
    assert axis == "t CO\u2082e/h"
    assert "Asia/Shanghai" in page.locator("#subtitle").inner_text()
    assert page.locator("#kpis").inner_text().count("t CO\u2082e") >= 3
    page.screenshot(path=artifacts / "dashboard-plant.png", full_page=True)


def test_window_selector_reloads_history_into_the_same_charts(
    live: LiveDashboard, page: Page
) -> None:
    cement, _ = _plant_ids(live)
    page.goto(f"{live.url}/dashboard/plants/{cement}")
    page.wait_for_function(
        "document.querySelector('#chart-source').data?.[0]?.x.length > 0", timeout=WAIT_MS
    )
    page.evaluate(COUNT_PLOTLY_CALLS)
    page.select_option("#window", "15m")
    page.select_option("#range", "1h")
    # One history per stream, one react() per chart: only a user's choice redraws.
    page.wait_for_function("window.__calls.react >= 3", timeout=WAIT_MS)
    assert page.evaluate("window.__chart === document.querySelector('#chart-source')")
    assert page.evaluate("window.__calls.newPlot") == 0
