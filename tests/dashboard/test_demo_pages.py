"""Every dashboard page of a real ``carbonlink demo`` in headless Chromium, as a newcomer
opens them: no console error or failed request, one colour per source, figures that do
not wrap at a phone's or a laptop's width, the coordination page after a stage switch
made through the API; then, the demo stopped with Ctrl-C, the fleet page over its kept
store (served by ``carbonlink api``) showing the same totals as ``/api/v1/totals``.

The tests share one demo run (module scope) and run in file order: the last one stops it.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from carbonlink.config import load_config
from carbonlink.platform import open_store
from tests.dashboard.demo_process import REPO, DemoProcess
from tests.servers import HOST, free_port
from tests.waiting import exited, wait_for

pytestmark = pytest.mark.slow

WAIT_MS: Final = 60_000  # two shared cores: generous deadlines
# No duration: the demo replays the last day and runs until the last test stops it with
# Ctrl-C, with the config's coordinator period (15 min, 6 s here). A duration would cut
# the run into twelve periods of its length. The switch the coordination test makes
# does not wait for the demo's own story.
DEMO_OPTIONS: Final = ("--speed", "150", "--refresh", "3", "--seed", "5")
TOKEN: Final = secrets.token_hex(16)  # the API's state-changing endpoints need one
API_START_S: Final = 60.0
NARROW: Final = {"width": 390, "height": 844}
WIDE: Final = {"width": 1440, "height": 900}
STAGE_LINE: Final = re.compile(r"coordination: .*?stage (\d) \(")
TERMINAL_DROP: Final = re.compile(
    r"emission drop since the switch: measured (-?[\d,.]+) tCO2e/h, "
    r"the model predicted (-?[\d,.]+) tCO2e/h"
)
PAGE_DROP: Final = re.compile(
    r"measured (-?[\d,.]+) tCO\u2082e/h, the model predicted (-?[\d,.]+) tCO\u2082e/h"
)
CARDS: Final = ("/", "/dashboard/fleet")  # the pages with cards of figures
PLANTS: Final = ("cement-01", "chemicals-01")  # fuel, process, electricity; fuel, electricity, heat
# What each page shows once its data is in.
READY: Final = {
    "/": "(t => t.length > 0 && t.every(e => e.textContent !== '\u2013'))"
    "([...document.querySelectorAll('[data-field=\"today\"]')])",
    "/dashboard/fleet": "document.querySelectorAll('#ranking svg.spark polyline').length > 0",
    "/dashboard/plants/cement-01": "document.querySelector('#chart-energy')"
    ".data?.[0]?.x.length > 0",
    "/dashboard/coordination": "document.querySelector('.live.on') !== null"
    " && document.querySelector('#stage').textContent !== ''",
}
# Every card figure: how many lines it takes, its height against its font size, and
# whether it stays inside its card.
FIGURES: Final = """() => [...document.querySelectorAll('.card .figure')].map(f => {
  const box = f.getBoundingClientRect();
  const card = f.closest('.card').getBoundingClientRect();
  const size = parseFloat(getComputedStyle(f.querySelector('.value')).fontSize);
  return { text: f.textContent, lines: f.getClientRects().length, height: box.height,
           size, inside: box.left >= card.left && box.right <= card.right };
})"""
TRACE_COLOURS: Final = """() => Object.fromEntries(
  ['#chart-source', '#chart-scope', '#chart-energy'].map(id => [id,
    Object.fromEntries(document.querySelector(id).data.map(t => [t.name, t.line.color]))]))"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProcess]:
    keep = tmp_path_factory.mktemp("demo") / "run"
    with DemoProcess(keep, *DEMO_OPTIONS, env={"CARBONLINK_API_TOKEN": TOKEN}) as process:
        yield process


class PageWatch:
    """What went wrong while a page was open: console errors, failed or refused requests."""

    def __init__(self, page: Page) -> None:
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("response", self._response)
        page.on("requestfailed", self._failed)

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.problems.append(f"console: {message.text}")

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            self.problems.append(f"{response.status} {response.url}")

    def _failed(self, request: Any) -> None:
        self.problems.append(f"failed {request.url}: {request.failure}")


def _open(browser: Browser, url: str, viewport: dict[str, int]) -> tuple[Page, PageWatch]:
    page = browser.new_context(viewport=viewport).new_page()  # type: ignore[arg-type]
    watch = PageWatch(page)
    page.goto(url)
    return page, watch


@pytest.mark.parametrize("path", list(READY))
def test_page_loads_without_console_errors_or_failed_requests(
    demo: DemoProcess, browser: Browser, path: str
) -> None:
    page, watch = _open(browser, f"{demo.url}{path}", WIDE)
    page.wait_for_function(READY[path], timeout=WAIT_MS)
    icon = page.locator('link[rel="icon"]').get_attribute("href")
    assert icon is not None
    for url in (f"{demo.url}{icon}", f"{demo.url}/favicon.ico"):
        answer = page.request.get(url)
        assert answer.ok, url
        assert answer.headers["content-type"].startswith("image/svg+xml")
    if path in CARDS:
        _assert_figures_fit(page)
    assert watch.problems == [], watch.problems
    page.context.close()


def _assert_figures_fit(page: Page) -> None:
    figures = page.evaluate(FIGURES)
    assert len(figures) >= 4, figures
    for figure in figures:
        assert figure["lines"] == 1, figure
        assert figure["height"] < 2 * figure["size"], figure  # one line is ~1.2 font sizes
        assert figure["inside"], figure
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow} px"


def test_each_source_has_one_colour_on_every_chart_and_plant(
    demo: DemoProcess, browser: Browser
) -> None:
    colours: dict[str, dict[str, dict[str, str]]] = {}
    for plant in PLANTS:
        page, watch = _open(browser, f"{demo.url}/dashboard/plants/{plant}", WIDE)
        page.wait_for_function(READY["/dashboard/plants/cement-01"], timeout=WAIT_MS)
        colours[plant] = page.evaluate(TRACE_COLOURS)
        assert watch.problems == []
        page.context.close()
    cement, chemicals = (colours[p] for p in PLANTS)
    source = cement["#chart-source"] | chemicals["#chart-source"]
    assert set(source) == {"fuel", "process", "electricity", "heat"}
    assert len(set(source.values())) == 4, source  # four sources, four colours
    for plant in colours.values():
        for name, colour in plant["#chart-source"].items():
            assert colour == source[name], name  # the same on every plant
        # The energy mix colours electricity and heat like the CO2e chart does...
        assert plant["#chart-energy"]["electricity"] == source["electricity"]
    assert chemicals["#chart-energy"]["purchased heat"] == source["heat"]
    # ...and the fuels in colours of their own, none of electricity's or heat's.
    cement_fuels = {n: c for n, c in cement["#chart-energy"].items() if n != "electricity"}
    assert len(set(cement_fuels.values())) == len(cement_fuels) == 3, cement_fuels
    assert not set(cement_fuels.values()) & {source["electricity"], source["heat"]}


@pytest.mark.parametrize("path", CARDS)
def test_card_figures_stay_on_one_line_inside_their_card_on_a_phone(
    demo: DemoProcess, browser: Browser, artifacts: Path, path: str
) -> None:
    """At a laptop's width the page test above checks the same."""
    page, watch = _open(browser, f"{demo.url}{path}", NARROW)
    page.wait_for_function(READY[path], timeout=WAIT_MS)
    _assert_figures_fit(page)
    name = "overview" if path == "/" else "fleet"
    page.screenshot(path=artifacts / f"dashboard-{name}-{NARROW['width']}.png", full_page=True)
    assert watch.problems == []
    page.context.close()


def test_coordination_page_shows_a_stage_switch_made_through_the_api(
    demo: DemoProcess, browser: Browser, artifacts: Path
) -> None:
    """Stage 2, which the demo's own policy (1, then 3) never reaches: what the page and
    the demo's terminal show can only come from the switch."""
    page, watch = _open(browser, f"{demo.url}/dashboard/coordination", {**WIDE, "height": 1000})
    expect(page.locator("#directives tbody tr")).to_have_count(5, timeout=WAIT_MS)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    queued = httpx.post(f"{demo.url}/api/v1/coordination/stage", json={"stage": 2}, headers=auth)
    assert queued.status_code == 202, queued.text
    expect(page.locator("#stage")).to_have_text("stage 2: intermediate dependence",
                                                timeout=WAIT_MS)  # fmt: skip
    expect(page.locator("#stage-meaning")).to_contain_text("In force: stage 2")
    expect(page.locator("#directives tbody tr td:nth-child(2)")).to_have_text(
        ["2"] * 5, timeout=WAIT_MS
    )
    # What the demo's terminal says: the same stage, after the one it had before. (Its
    # coordination lines name the stage as "stage N (name..." wherever they put it.)
    demo.wait_for(re.compile(r"coordination: .*stage 2 \(intermediate_dependence"),
                  WAIT_MS / 1000)  # fmt: skip
    printed = [m[1] for line in demo.lines if (m := STAGE_LINE.search(line))]
    assert printed[0] != "2", printed
    assert printed[-1] == "2", printed
    # The emission drop since the switch: the figures the terminal printed.
    expect(page.locator("#drop")).to_be_visible(timeout=WAIT_MS)

    def page_figures_printed() -> bool:
        shown = PAGE_DROP.search(page.locator("#drop-line").text_content() or "")
        printed = {m.groups() for line in demo.lines if (m := TERMINAL_DROP.search(line))}
        return shown is not None and shown.groups() in printed

    wait_for(page_figures_printed, "the page's drop figures in the terminal", WAIT_MS / 1000)
    commands = httpx.get(f"{demo.url}/api/v1/coordination/commands").json()
    assert len(commands) == 1, commands
    assert commands[0]["applied_ms"] is not None, commands
    page.screenshot(path=artifacts / "dashboard-coordination-demo.png", full_page=True)
    assert watch.problems == []
    page.context.close()


def _day_start_ms(now_ms: int, timezone: str) -> int:
    now = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(timezone))
    return int(now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)


def _number(text: str) -> float:
    return float(text.replace(",", "").rstrip("%"))


def test_fleet_page_shows_the_apis_totals_over_the_kept_store(
    demo: DemoProcess, browser: Browser, artifacts: Path
) -> None:
    """After Ctrl-C: nothing moves any more, so every figure can be compared exactly."""
    demo.wait_for(re.compile(r"^live at simulated"), WAIT_MS / 1000)
    assert demo.stop() == 0, "\n".join(demo.lines[-20:])
    # The run's own "today": the day of its newest reading (its clock ran on a backfill).
    store = open_store(f"sqlite:///{demo.keep / 'demo.sqlite'}")
    try:
        as_of = int(store.emissions()["time"].max().value // 1_000_000)
    finally:
        store.close()
    port = free_port()
    url = f"http://{HOST}:{port}"
    api = subprocess.Popen(  # our own argv, no shell
        [sys.executable, "-m", "carbonlink", "api", "--http", f"{HOST}:{port}",
         "--store", f"sqlite:///{demo.keep / 'demo.sqlite'}", "--as-of", str(as_of)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_until_up(f"{url}/api/v1/health", api)
        plants = load_config(REPO / "config" / "carbonlink.yaml").plants.values()
        zones = {p.timezone for p in plants}
        api_today: dict[str, float] = {}
        for zone in zones:
            rows = httpx.get(
                f"{url}/api/v1/totals",
                params={"by": "plant", "start": _day_start_ms(as_of, zone)},
            ).json()
            api_today |= {r["plant"]: r["co2e_t"] for r in rows}
        assert len(api_today) == len(plants), api_today
        assert all(v > 0 for v in api_today.values()), api_today
        page, watch = _open(browser, f"{url}/dashboard/fleet", WIDE)
        page.wait_for_function(READY["/dashboard/fleet"], timeout=WAIT_MS)
        fleet_today = page.locator('[data-field="today"]').first.inner_text()
        assert fleet_today == f"{sum(api_today.values()):,.1f}"
        ranked = page.locator("#ranking tbody tr")
        expect(ranked).to_have_count(5)
        shown = {
            row.get_attribute("data-plant"): row.locator('[data-field="today"]').inner_text()
            for row in ranked.all()
        }
        assert shown == {p: f"{v:,.1f}" for p, v in api_today.items()}
        order = [row.get_attribute("data-plant") for row in ranked.all()]
        assert order == sorted(api_today, key=lambda p: -api_today[p])
        shares = [_number(row.locator('[data-field="share"]').inner_text()) for row in ranked.all()]
        assert abs(sum(shares) - 100) <= 0.05 * len(shares)
        rates = [_number(row.locator('[data-field="rate"]').inner_text()) for row in ranked.all()]
        fleet_rate = _number(page.locator('[data-field="rate"]').first.inner_text())
        assert fleet_rate == pytest.approx(sum(rates), abs=0.05 * len(rates))
        page.screenshot(path=artifacts / "dashboard-fleet-kept.png", full_page=True)
        assert watch.problems == []
        page.context.close()
    finally:
        api.terminate()
        api.wait(API_START_S)


def _wait_until_up(health: str, process: subprocess.Popen[str]) -> None:
    wait_for(
        lambda: httpx.get(health, timeout=2).is_success,
        f"carbonlink api to answer {health}",
        API_START_S,
        ignoring=(httpx.TransportError,),
        abort_if=exited(process),
    )
