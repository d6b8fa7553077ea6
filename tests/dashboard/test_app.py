"""The dashboard's routes and its window stream, without a browser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from fastapi.testclient import TestClient

from carbonlink.config import Settings, load_config
from carbonlink.storage import Emission, SqliteStore, StoredReading
from carbonlink.web.api import create_app
from carbonlink.web.dashboard import mount_dashboard
from carbonlink.web.dashboard._layout import plant_layouts
from carbonlink.web.dashboard._live import (
    BrowserFeed,
    PlantView,
    overview_row,
    start_of_local_day,
)
from tests.configs import write_config

PLANT: Final = "cement-x"
START_MS: Final = 1_795_420_800_000  # 2026-11-23T08:00:00Z, 16:00 in Asia/Shanghai
MINUTE_MS: Final = 60_000
COAL_KG: Final = 100.0  # CO2e per coal reading
POWER_KG: Final = 10.0  # CO2e per electricity reading


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_config(write_config(tmp_path / "config", plants={PLANT: "cement-01"}))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "store.sqlite")
    yield store
    store.close()


def _readings(settings: Settings, minutes: range) -> list[StoredReading]:
    """One coal (scope 1) and one electricity (scope 2) reading per minute."""
    factor_set = settings.factor_set(PLANT)

    def emission(
        activity: str, source: str, scope: int, amount: float, unit: str, kg: float
    ) -> Emission:
        factor = 0.05 * kg if source == "fuel" else 0.0  # coal's factor range; none for grid
        return Emission(
            activity, source, scope, "x", factor_set.name, factor_set.version, "AR5",
            amount, unit, kg, 0.0, 0.0, kg, 0.0, factor, factor, 0.01 * kg,
        )  # fmt: skip

    readings = []
    for minute in minutes:
        ts = START_MS + (minute + 1) * MINUTE_MS  # interval end: minute m ends at m + 1
        coal = emission("other_bituminous_coal", "fuel", 1, 0.001, "TJ", COAL_KG)
        power = emission("electricity", "electricity", 2, 20.0, "kWh", POWER_KG)
        readings.append(
            StoredReading(PLANT, "kiln-coal", ts, 0.04, "t", MINUTE_MS, "measured", coal)
        )
        readings.append(
            StoredReading(PLANT, "grid-main", ts, 20.0, "kWh", MINUTE_MS, "estimated", power)
        )
    return readings


def _view(settings: Settings) -> PlantView:
    layout = plant_layouts(settings)[PLANT]
    return PlantView(settings.plants[PLANT], layout, settings.factor_set(PLANT))


def test_pages_static_files_and_plotly_are_served(settings: Settings, store: SqliteStore) -> None:
    app = create_app(store, settings)
    mount_dashboard(app, store, settings)
    client = TestClient(app)
    for path in ("/", "/dashboard", f"/dashboard/plants/{PLANT}", "/dashboard/coordination"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
    assert client.get("/dashboard/plants/nope").status_code == 404
    plotly_js = client.get("/dashboard/static/plotly.min.js")
    assert plotly_js.status_code == 200
    assert len(plotly_js.content) > 1_000_000  # the real library, from the plotly package
    for name in ("style.css", "common.js", "overview.js", "plant.js"):
        assert client.get(f"/dashboard/static/{name}").status_code == 200, name
    (plant,) = client.get("/dashboard/layout").json()["plants"]
    assert plant["timezone"] == "Asia/Shanghai"
    assert plant["sources"] == ["fuel", "process", "electricity"]
    assert plant["scopes"] == [1, 2]
    # The API is untouched.
    assert client.get("/api/v1/plants").status_code == 200


def test_stream_sends_each_complete_window_once(settings: Settings, store: SqliteStore) -> None:
    now = [START_MS + 10 * MINUTE_MS]
    stream = BrowserFeed(store, _view(settings), "1m", "1h", lambda: now[0])
    store.write(_readings(settings, range(10)))
    history = stream.history()
    windows = history["windows"]
    assert isinstance(windows, dict)
    # Newest data ends at minute 10; a 2-period grace leaves minutes 0-7 complete.
    assert windows["start_ms"] == [START_MS + m * MINUTE_MS for m in range(8)]
    assert windows["x"][0] == "2026-11-23 16:00:00"  # plant-local wall time
    assert windows["source"]["fuel"][0] == pytest.approx(COAL_KG / 1000 * 60)  # t/h
    assert windows["scope"]["2"][0] == pytest.approx(POWER_KG / 1000 * 60)
    assert windows["source"]["process"] == [0.0] * 8
    assert stream.poll() == []  # nothing new, nothing sent

    store.write(_readings(settings, range(10, 13)))
    now[0] += 3 * MINUTE_MS
    events = dict(stream.poll())
    appended = events["append"]["windows"]
    assert isinstance(appended, dict)
    assert appended["start_ms"] == [START_MS + m * MINUTE_MS for m in range(8, 11)]
    kpis = events["current"]["kpis"]
    assert isinstance(kpis, dict)
    assert kpis["total_tco2e"] == pytest.approx(13 * (COAL_KG + POWER_KG) / 1000)


def test_overview_row_rate_today_and_quality(settings: Settings, store: SqliteStore) -> None:
    store.write(_readings(settings, range(30)))
    row = overview_row(store, _view(settings), START_MS + 30 * MINUTE_MS, {PLANT: "online"}, None)
    assert row["status"] == "online"
    assert row["today_tco2e"] == pytest.approx(30 * (COAL_KG + POWER_KG) / 1000)
    # The newest 15 minutes: 15 readings of each meter, as a rate per hour.
    assert row["rate_tco2e_h"] == pytest.approx(15 * (COAL_KG + POWER_KG) / 1000 * 4)
    assert (row["readings_today"], row["estimated_today"]) == (60, 30)
    assert row["rejected"] is None


def test_the_overview_and_the_api_give_the_same_interval(
    settings: Settings, store: SqliteStore
) -> None:
    store.write(_readings(settings, range(30)))
    view = _view(settings)
    now = START_MS + 30 * MINUTE_MS
    row = overview_row(store, view, now, {}, None)
    assert row["factor_version"] == f"{view.factor_set.name} {view.factor_set.version}"
    # 30 coal readings: one factor, one meter, so linear sums (150 kg and 30 kg); 30 grid
    # readings: their meter (3 kg). Independent terms in quadrature.
    total = 30 * (COAL_KG + POWER_KG) / 1000
    half = (150.0**2 + 30.0**2 + 3.0**2) ** 0.5 / 1000
    assert row["today_tco2e_interval"] == pytest.approx([total - half, total + half])
    client = TestClient(create_app(store, settings))
    day_start = start_of_local_day(now, view.config.timezone)
    (api,) = client.get("/api/v1/totals", params={"by": "plant", "start": str(day_start)}).json()
    assert [api["co2e_t_lower95"], api["co2e_t_upper95"]] == pytest.approx(
        row["today_tco2e_interval"]
    )
